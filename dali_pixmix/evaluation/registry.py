"""Task registry of eval/run_all.py: task name -> function(evaluator, config) -> rows.

`config` is a plain dict: dataset roots under the task names ("clean" is the ImageNet val
folder), "ood" a {name: folder or file list} mapping, plus "protocol", "calibration_bin_size",
"synthetic_ood", "synthetic_count", "seed". A task runs when its dataset is configured. To add a
task (e.g. ImageNet-A), add one entry to TASKS (and HEADLINES) and its folder names to
DATA_ROOT_NAMES; a configured root under the task's name then runs it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List

from dali_pixmix.data.images import subfolders
from dali_pixmix.evaluation import (  # the tasks load torch and DALI at their first call
    datasets,
    run_clean,
    run_imagenet_c,
    run_imagenet_cbar,
    run_imagenet_r,
    run_ood,
)
from dali_pixmix.evaluation.report import Row

if TYPE_CHECKING:
    from dali_pixmix.evaluation.runner import Evaluator

TaskFn = Callable[["Evaluator", dict], List[Row]]


def _clean(ev: Evaluator, cfg: dict) -> List[Row]:
    return run_clean(ev, cfg["clean"], cfg["calibration_bin_size"])


def _imagenet_c(ev: Evaluator, cfg: dict) -> List[Row]:
    from dali_pixmix.evaluation.cli import clean_error_from
    return run_imagenet_c(ev, cfg["imagenet_c"], cfg["protocol"],
                          bin_size=cfg["calibration_bin_size"],
                          clean_error=clean_error_from(ev.out))


def _imagenet_cbar(ev: Evaluator, cfg: dict) -> List[Row]:
    return run_imagenet_cbar(ev, cfg["imagenet_cbar"], cfg["protocol"],
                             bin_size=cfg["calibration_bin_size"])


def _imagenet_r(ev: Evaluator, cfg: dict) -> List[Row]:
    return run_imagenet_r(ev, cfg["imagenet_r"], cfg["calibration_bin_size"])


def _imagenet_p(ev: Evaluator, cfg: dict) -> List[Row]:
    from dali_pixmix.evaluation.imagenet_p import run_imagenet_p_task
    return run_imagenet_p_task(ev, cfg["imagenet_p"])


def _ood(ev: Evaluator, cfg: dict) -> List[Row]:
    if not cfg.get("clean"):
        raise ValueError("the OOD task needs the in-distribution ImageNet val folder (--val)")
    return run_ood(ev, cfg["clean"], cfg.get("ood") or {}, cfg["synthetic_ood"],
                   cfg.get("synthetic_count"), cfg.get("seed", 0))


# Run in this order: clean first, so ImageNet-C can report the relative mCE.
TASKS: Dict[str, TaskFn] = {"clean": _clean, "imagenet_c": _imagenet_c,
                            "imagenet_cbar": _imagenet_cbar, "imagenet_r": _imagenet_r,
                            "imagenet_p": _imagenet_p, "ood": _ood}

# Folder-tree checks run for every configured task before any inference starts.
VALIDATORS: Dict[str, Callable[[dict], object]] = {
    "clean": lambda cfg: datasets.class_tree(cfg["clean"], name="ImageNet val"),
    "imagenet_c": lambda cfg: datasets.imagenet_c_cells(cfg["imagenet_c"]),
    "imagenet_cbar": lambda cfg: datasets.imagenet_cbar_cells(cfg["imagenet_cbar"]),
    "imagenet_r": lambda cfg: datasets.class_tree(cfg["imagenet_r"], name="ImageNet-R"),
    "ood": lambda cfg: [datasets.image_set(p) for p in (cfg.get("ood") or {}).values()],
}


def validate(cfg: dict, tasks: List[str]) -> None:
    """Check every configured dataset's folders up front, so a bad one fails in seconds."""
    for task in tasks:
        if task in VALIDATORS:
            VALIDATORS[task](cfg)


# Metrics printed in each task's one-line summary.
HEADLINES: Dict[str, tuple] = {
    "clean": ("top1_error", "rms"), "imagenet_c": ("mce", "mce_partial", "rms"),
    "imagenet_cbar": ("mean_error", "rms"), "imagenet_r": ("top1_error", "rms"),
    "imagenet_p": ("mfr", "mt5d"), "ood": ("auroc", "aupr")}

# Sub-folders of --data-root that are picked up automatically, per task.
DATA_ROOT_NAMES: Dict[str, tuple] = {
    "clean": ("imagenet/val", "val"), "imagenet_c": ("imagenet-c", "ImageNet-C"),
    "imagenet_cbar": ("imagenet-c-bar", "ImageNet-C-bar"),
    "imagenet_r": ("imagenet-r", "ImageNet-R"), "imagenet_p": ("imagenet-p", "ImageNet-P"),
}


def discover(data_root: str | Path) -> dict:
    """Dataset roots found under `data_root` by their conventional names; OOD sets in ood/*."""
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise FileNotFoundError(f"--data-root {data_root} is not a folder")
    found = {}
    for task, names in DATA_ROOT_NAMES.items():
        hit = next((data_root / n for n in names if (data_root / n).is_dir()), None)
        if hit is not None:
            found[task] = str(hit)
    ood_dir = data_root / "ood"
    if ood_dir.is_dir():
        found["ood"] = {p.name: str(p) for p in subfolders(ood_dir)}
    return found


def configured_tasks(cfg: dict) -> List[str]:
    """Registered tasks whose dataset is configured, in registry order."""
    tasks = [t for t in TASKS if t != "ood" and cfg.get(t)]
    if cfg.get("clean") and (cfg.get("ood") or cfg.get("synthetic_ood")):
        tasks.append("ood")
    return tasks
