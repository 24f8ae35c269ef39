"""Where a run starts: fresh in a folder of its own, or from a checkpoint of the same recipe.

`starting_state(cfg, dist, classes, resume, previous, resume_changed)` decides on rank 0 and
tells the other ranks, so every rank raises the same error or loads the same checkpoint:
- `--resume auto` continues from the newest valid checkpoint of `train.output_dir` (or starts
  fresh in an unused folder); `--resume none` starts fresh; `--resume PATH` continues from PATH.
- A fresh start, or a checkpoint from outside the folder's own newest, in a folder that holds
  an earlier run is refused unless `previous` is "archive" or "overwrite" (`training.outputs`).
- A checkpoint whose recipe (any key outside `RESUMABLE`) differs from the config is refused
  unless `resume_changed`; the differences are printed either way, and with `resume_changed`
  the previous config.yaml is kept as `config_before_step<step>.yaml`. A change of what the
  run is (`IDENTITY`: method, model, generated data; or other classes) is always refused, and
  the error suggests another train.output_dir first.
"""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from dali_pixmix import checkpoint as ckpt_io
from dali_pixmix.config import Config
from dali_pixmix.distributed import DistInfo, broadcast_object
from dali_pixmix.training import outputs

# Keys that may differ between a checkpoint and the run resuming it: where things are, how fast
# and how verbosely the run goes, and what it validates how often. Every other key is the recipe.
RESUMABLE = frozenset({
    "data.train", "data.val", "data.root", "data.num_threads", "data.check_headers",
    "data.hw_decoder_load",
    "pixmix.mixing_set", "pixmix.bank_cache", "pixmix.bank_on_host", "pixmix.strategy",
    "pixmix.cuda_graph",
    "model.pretrained", "model.compile", "model.channels_last",
    "train.output_dir", "train.log_every", "train.checkpoint_minutes", "train.keep_checkpoints",
    "train.max_steps", "train.deterministic", "train.debug_log", "train.tensorboard",
    "eval.batch_size", "eval.every_epochs", "dist.device", "dist.timeout_minutes", "demo.root",
})
# Keys that say what a run IS (its method, model and generated data): changing one makes
# another run, never a resumable change, even with --resume-changed (a PixMix checkpoint
# continued as CutMix would be a PixMix model labelled CutMix). The training classes are
# checked too (`check_compatible`).
IDENTITY = ("data.dataset", "augment.method", "model.arch", "demo.num_classes",
            "demo.train_per_class", "demo.val_per_class", "demo.fractals", "demo.min_size",
            "demo.max_size")
Change = Tuple[str, Any, Any]  # (dotted key, checkpoint's value, config's value)


def flatten(config: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    return {f"{section}.{key}": value for section, values in config.items()
            if isinstance(values, dict) for key, value in values.items()}


def saved_settings(saved: Dict) -> Dict[str, Any]:
    """A checkpoint's config, flattened, with `pixmix.enabled` (written before
    `augment.method` existed) read as the method it meant."""
    old = flatten(saved)
    if "pixmix.enabled" in old and "augment.method" not in old:
        old["augment.method"] = "pixmix" if old.pop("pixmix.enabled") else "baseline"
    return old


def config_changes(saved: Dict, current: Dict) -> Tuple[List[Change], List[Change]]:
    """(recipe changes, other changes) from the checkpoint's config to the current one.

    Keys the checkpoint does not know (written by an older version) are not changes."""
    old, new = saved_settings(saved), flatten(current)
    changes = [(key, old[key], new[key]) for key in new if key in old and old[key] != new[key]]
    recipe = [c for c in changes if c[0] not in RESUMABLE]
    return recipe, [c for c in changes if c[0] in RESUMABLE]


def format_changes(changes: List[Change]) -> str:
    return ", ".join(f"{key} {old!r} -> {new!r}" for key, old, new in changes)


def check_recipe(state: Dict, cfg: Config, resume_changed: bool) -> List[Change]:
    """Refuse a changed recipe unless `resume_changed`; print what changed; returns the recipe
    changes (accepted)."""
    recipe, other = config_changes(state.get("config") or {}, cfg.to_dict())
    where = f"checkpoint {state.get('path')} (step {state.get('step')})"
    identity = [c for c in recipe if c[0] in IDENTITY]
    if identity:
        instead = another_run(cfg, folder_suffix(identity[0]))
        raise ValueError(f"{where} is another run: {format_changes(identity)} changes what the "
                         f"run is, which no resume can ({instead})")
    if recipe and not resume_changed:
        raise ValueError(f"the config differs from the recipe of {where}: "
                         f"{format_changes(recipe)}; resume with the same settings, pass "
                         "--resume-changed to continue with the new ones, or start a new run "
                         "(--resume none --archive)")
    if recipe:
        print(f"warning: resuming {where} with a changed recipe (--resume-changed): "
              f"{format_changes(recipe)}", flush=True)
    if other:
        print(f"note: settings changed since {where} (not part of the recipe): "
              f"{format_changes(other)}", flush=True)
    return recipe


def another_run(cfg: Config, suffix: str) -> str:
    """What to do instead of resuming another run: a folder of its own first."""
    out = Path(cfg.train.output_dir)
    return (f"train it in a folder of its own, e.g. --set train.output_dir="
            f"{out.parent / (out.name + '_' + suffix)}; or resume with the checkpoint's "
            f"settings; or replace the run in {out} with --resume none --archive")


def folder_suffix(change: Change) -> str:
    """'cutmix' for a new augment.method, the architecture for a new model.arch, else 'new'."""
    key, _, value = change
    return str(value) if key in ("data.dataset", "augment.method", "model.arch") else "new"


def check_compatible(state: Dict, cfg: Config, classes: Optional[Sequence[str]]) -> None:
    """The checkpoint's classes (when `classes` is given) and architecture must be the run's."""
    if classes is not None and list(state["classes"]) != list(classes):
        raise ValueError(f"checkpoint {state.get('path')} was trained on {len(state['classes'])} "
                         f"classes but the training data has {len(classes)} (or other names): "
                         f"another run ({another_run(cfg, 'new')})")
    if state.get("arch", cfg.model.arch) != cfg.model.arch:
        raise ValueError(f"checkpoint {state.get('path')} holds a {state['arch']} but "
                         f"model.arch is {cfg.model.arch}: another run "
                         f"({another_run(cfg, cfg.model.arch)})")


def is_folders_newest(path: str | Path, out_dir: Path) -> bool:
    """True when `path` is the newest step checkpoint of `out_dir` (resuming it continues the
    folder's own run)."""
    newest = ckpt_io.list_checkpoints(out_dir)
    return bool(newest) and Path(path).resolve() == newest[-1].resolve()


def claim_folder(out_dir: Path, previous: str, continuing: bool) -> None:
    """Refuse, archive or overwrite an earlier run in `out_dir` before a new run starts."""
    earlier = outputs.describe_run(out_dir) if not continuing else None
    if earlier is None:
        return
    if previous == "refuse":
        raise ValueError(f"train.output_dir {out_dir} already holds a run ({earlier}); a new "
                         "run there would mix with it (--resume auto could pick its newer "
                         "checkpoints). Pass --archive to move it to "
                         f"{out_dir / outputs.ARCHIVE}/<time>/, --overwrite to delete it, or set "
                         "another train.output_dir")
    moved = outputs.clear_previous_run(out_dir, previous)
    print(f"{'archived the earlier run to ' + str(moved) if moved else 'deleted the earlier run'}"
          f" in {out_dir}", flush=True)


def choose_start(cfg: Config, resume: str, previous: str = "refuse",
                 resume_changed: bool = False,
                 classes: Optional[Sequence[str]] = None,
                 held: Optional[ExitStack] = None) -> Optional[Dict[str, Any]]:
    """Rank 0's decision: the checkpoint state to start from (with "path"), or None. A
    checkpoint must hold the training `classes` (None: not checked) and `model.arch`. With
    `held`, the output folder's lock (`outputs.folder_lock`) is taken into it first: a second
    run in the folder is refused before it touches anything (e.g. the first one's partial
    checkpoint files)."""
    if previous not in outputs.PREVIOUS_RUN:
        raise ValueError(f"previous must be one of {outputs.PREVIOUS_RUN}, got {previous!r}")
    if previous != "refuse" and resume == "auto":
        raise ValueError("--archive/--overwrite start a new run: give them with --resume none "
                         "(or a checkpoint path), never with --resume auto, which continues")
    out_dir = Path(cfg.train.output_dir)
    outputs.check_writable(out_dir)
    if held is not None:
        held.enter_context(outputs.folder_lock(out_dir))
    state = ckpt_io.resolve_resume(resume, out_dir)
    continuing = state is not None and (resume == "auto" or is_folders_newest(resume, out_dir))
    recipe = []
    if state is not None:  # refuse an unfit checkpoint before touching any file
        check_compatible(state, cfg, classes)
        recipe = check_recipe(state, cfg, resume_changed)
    claim_folder(out_dir, previous, continuing)
    if state is not None and recipe and (out_dir / "config.yaml").is_file():
        (out_dir / "config.yaml").replace(out_dir / f"config_before_step{state['step']}.yaml")
    stale = ckpt_io.remove_stale_temporaries(out_dir)
    if stale:
        print(f"removed {len(stale)} partial checkpoint file(s) of an interrupted save in "
              f"{out_dir}", flush=True)
    return state


def starting_state(cfg: Config, dist: DistInfo, classes: Sequence[str], resume: str,
                   previous: str = "refuse", resume_changed: bool = False,
                   held: Optional[ExitStack] = None) -> Optional[Dict[str, Any]]:
    """`choose_start` on rank 0 for the training `classes` (taking the folder's lock into
    `held`); the other ranks raise its error or load its checkpoint."""
    state, decision = None, ("start", None)
    if dist.is_main:
        try:
            state = choose_start(cfg, resume, previous, resume_changed, classes, held)
            decision = ("start", state.get("path") if state else None)
        except (ValueError, FileNotFoundError) as err:
            decision = (type(err).__name__, str(err))
            if not dist.is_distributed:
                raise
    kind, value = broadcast_object(decision)
    if kind != "start":
        raise (FileNotFoundError if kind == "FileNotFoundError" else ValueError)(value)
    if not dist.is_main and value is not None:
        state = ckpt_io.load_checkpoint(value)
        state["path"] = value
    return state
