"""Evaluation runner (sharded, cached inference) and the safety tasks built on it.

`Evaluator`/`Predictions` (`runner`) and the `run_*` tasks (`tasks`) are loaded on first use,
so the eval scripts, which import them at the top, answer `--help` and argument errors before
torch and DALI are imported.
"""
import importlib

_RUNNER_NAMES = ("Evaluator", "Predictions")
_TASK_NAMES = ("run_clean", "run_imagenet_c", "run_imagenet_cbar", "run_imagenet_r", "run_ood")


def __getattr__(name: str):
    """`Evaluator` and `Predictions`, imported from `runner` when first asked for."""
    if name in _RUNNER_NAMES:
        return getattr(importlib.import_module("dali_pixmix.evaluation.runner"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _task(name: str):
    """`tasks.<name>`, imported at its first call."""
    def run(*args, **kwargs):
        from dali_pixmix.evaluation import tasks

        return getattr(tasks, name)(*args, **kwargs)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"`dali_pixmix.evaluation.tasks.{name}` (imported at the first call)."
    return run


run_clean, run_imagenet_c, run_imagenet_cbar, run_imagenet_r, run_ood = map(_task, _TASK_NAMES)
