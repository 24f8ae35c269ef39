"""Compare augmentation methods like for like: the CPU demo trained once per method (same
recipe, same seed, same data), each evaluated by the evaluation suite, in one table.

For every method: `train` with `augment.method` set (skipped when `<out>/<method>/final.pt`
exists, so an interrupted comparison resumes), then the evaluation tasks on the final weights:
clean accuracy and calibration (`tasks.run_clean`), a generated corruption set in the ImageNet-C
layout (`synthetic_corruptions`, `tasks.run_imagenet_c`) and the generated anomaly sets
(`tasks.run_ood`). Each method's rows and its own table9.md go to `<out>/<method>/eval/`; the
comparison is `<out>/comparison.md` / `.csv` (the paper's Table 9 columns, under the note on
what the numbers are and at what scale) and `<out>/comparison.png`. SIGTERM/SIGUSR1 stop a
comparison: during training at the next step with a checkpoint, elsewhere at once
(`ComparisonStopped`); what is done stays, and the same call resumes.
"""
from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from dali_pixmix.augment.methods import METHOD_NAMES, METHODS, TABLE9_METHODS
from dali_pixmix.config import Config, load_config
from dali_pixmix.evaluation.report import (
    TABLE9_COLUMNS,
    Row,
    bar_charts,
    partial_value,
    summary_value,
    write_numbers_csv,
    write_report,
    write_rows,
)
from dali_pixmix.training.state import StopFlag

C_COLUMN = "C err (generated)"
COLUMNS = tuple(C_COLUMN if c == "C mCE" else c for c in TABLE9_COLUMNS)
# (task, metric) of each column; None: not evaluated on the demo data.
SOURCES = {"clean err": ("clean", "top1_error"), C_COLUMN: ("imagenet_c", "mean_error"),
           "RMS clean": ("clean", "rms"), "RMS C": ("imagenet_c", "rms"),
           "AUROC": ("ood", "auroc"), "AUPR": ("ood", "aupr")}
CHART_COLUMNS = ("clean err", C_COLUMN, "RMS clean", "AUROC")


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class ComparisonStopped(BaseException):
    """SIGTERM/SIGUSR1 during a comparison. A BaseException, like KeyboardInterrupt, so no
    `except Exception` (or DALI error translation) on its way up takes it for a failure."""


def stopped(signal_name: Optional[str]) -> ComparisonStopped:
    return ComparisonStopped(f"stopped by {signal_name}: the methods trained and evaluated so "
                             "far and the cached predictions are kept; run the same command "
                             "again to resume")


@contextmanager
def stopping_at_once(stop: StopFlag):
    """Outside training (evaluation has no step to finish first) SIGTERM/SIGUSR1 stop the
    comparison at once; a signal that came while training (flagged in `stop`, the run then
    checkpointed or was already finishing) stops it on entry."""
    def handler(signum, _frame):
        raise stopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        if stop.requested:
            raise stopped(stop.signal_name)
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def method_config(recipe: str | Path, method: str, out: str | Path,
                  overrides: Sequence[str] = ()) -> Config:
    """The recipe with `augment.method=method`, writing into `<out>/<method>`."""
    return load_config(recipe, [*overrides, f"augment.method={method}",
                                f"train.output_dir={Path(out) / method}"])


def train_method(cfg: Config, stop: StopFlag) -> Path:
    """`final.pt` of this method's run: trained (or resumed) unless it exists; a signal
    checkpoints the run at its next step (`stop`)."""
    final = Path(cfg.train.output_dir) / "final.pt"
    if not final.is_file():
        from dali_pixmix.training.loop import train

        result = train(cfg, resume="auto", stop=stop)
        if result["status"] != "finished":
            raise RuntimeError(f"{cfg.augment.method}: training stopped at step "
                               f"{result['step']}; run the comparison again to resume it")
    return final


def evaluate_method(cfg: Config, final: Path, corruptions: Path) -> List[Row]:
    """The evaluation suite's rows for `final`, also written to `<run>/eval/results/*.json`."""
    from dali_pixmix.evaluation.runner import Evaluator
    from dali_pixmix.evaluation.tasks import run_clean, run_imagenet_c, run_ood

    out = Path(cfg.train.output_dir) / "eval"
    ev = Evaluator.from_checkpoint(final, out, arch=cfg.model.arch, device=cfg.dist.device,
                                   batch_size=cfg.eval.batch_size, resize=cfg.data.val_resize,
                                   crop=cfg.data.val_crop, num_threads=cfg.data.num_threads,
                                   progress=False)
    bins = cfg.eval.calibration_bin_size
    rows = {"clean": run_clean(ev, cfg.data.val, bins),
            "imagenet_c": run_imagenet_c(ev, str(corruptions), "pixmix", None, bins),
            "ood": run_ood(ev, cfg.data.val, {}, synthetic=True, seed=cfg.train.seed)}
    for task, task_rows in rows.items():
        write_rows(task_rows, out / "results", task, ev.model_fields())
    write_report(out, METHODS[cfg.augment.method].title)
    return [r for task_rows in rows.values() for r in task_rows]


def table_cells(rows: Sequence[Row]) -> Dict[str, Optional[float]]:
    """The comparison columns of one method (None where not evaluated)."""
    cells = {}
    for column in COLUMNS:
        task, metric = SOURCES.get(column, (None, None))
        # the generated corruption set is a partial ImageNet-C ("partial: 5 of 15")
        hit = (summary_value(rows, task, metric) or partial_value(rows, task, metric)) \
            if task else None
        cells[column] = None if hit is None else hit.value
    return cells


def settings_note(cfg: Config) -> str:
    """What the numbers are: demo data at a small scale, the training and evaluation settings."""
    return (f"DEMO DATA, not ImageNet: a generated {cfg.demo.num_classes}-class set "
            f"({cfg.demo.train_per_class} training / {cfg.demo.val_per_class} validation "
            f"pictures per class), {cfg.model.arch} from scratch, {cfg.train.epochs} epochs, "
            f"batch {cfg.train.batch_size}, crop {cfg.data.crop}, seed {cfg.train.seed}, the same "
            "for every method. SCALE: a small model trained briefly on little data; the "
            "ranking of the methods can change with more data and epochs (at 30 pictures per "
            "class and 4 epochs PixMix came out worst) and says nothing about ImageNet's. "
            "C err: mean top-1 error over a generated corruption set (5 "
            "corruptions x 5 severities of the validation pictures, ImageNet-C layout), not "
            "ImageNet-C's AlexNet-normalised mCE. AUROC/AUPR: mean over the generated "
            "anomaly sets (Gaussian, Rademacher, Blobs), MSP score. RMS: adaptive bins of "
            f"{cfg.eval.calibration_bin_size}. C-bar, R and P are not evaluated on demo data. "
            "Lower is better except AUROC/AUPR; values in percent.")


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def comparison_markdown(results: Dict[str, Dict[str, Optional[float]]], note: str) -> str:
    """The note (what the numbers are, and at what scale) first, then the table."""
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, cells in results.items():
        lines.append(f"| {METHODS[name].title} | " +
                     " | ".join(_fmt(cells[c]) for c in COLUMNS) + " |")
    return note + "\n\n" + "\n".join(lines) + "\n"


def write_csv(results: Dict[str, Dict[str, Optional[float]]], path: Path) -> Path:
    return write_numbers_csv(path, ["method", "title"], COLUMNS,
                             (([name, METHODS[name].title], cells)
                              for name, cells in results.items()))


def plot_comparison(results: Dict[str, Dict[str, Optional[float]]], path: Path,
                    title: str) -> Path:
    """One bar chart per headline column, a bar per method."""
    titled = {METHODS[name].title: cells for name, cells in results.items()}
    return bar_charts(titled, CHART_COLUMNS, path, title)


def compare(recipe: str | Path, out: str | Path, methods: Sequence[str] = TABLE9_METHODS,
            overrides: Sequence[str] = ()) -> List[Path]:
    """Train and evaluate every method; returns the comparison's markdown, CSV and chart.
    SIGTERM/SIGUSR1 raise `ComparisonStopped` (training first saves its checkpoint)."""
    from dali_pixmix.distributed import init_distributed
    from dali_pixmix.evaluation.synthetic_corruptions import write_corruption_set
    from dali_pixmix.training.demo import prepare_demo_data

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHOD_NAMES)}")
    out, stop = Path(out), StopFlag()
    configs = {method: method_config(recipe, method, out, overrides) for method in methods}
    print(settings_note(configs[methods[0]]) + "\n", flush=True)  # every bad recipe first
    results = {}
    for method, cfg in configs.items():
        with stopping_at_once(stop):
            prepare_demo_data(cfg, init_distributed(cfg.dist.device))  # paths of the demo data
            corruptions = write_corruption_set(cfg.data.val, out / "corruptions",
                                               resize=cfg.data.val_resize,
                                               crop=cfg.data.val_crop, seed=cfg.train.seed)
        final = train_method(cfg, stop)
        with stopping_at_once(stop):
            print(f"== {method}: evaluating {final}", flush=True)
            results[method] = table_cells(evaluate_method(cfg, final, corruptions))
    table = out / "comparison.md"
    table.write_text("# Augmentation methods compared (demo data)\n\n" +
                     comparison_markdown(results, settings_note(configs[methods[-1]])))
    return [table, write_csv(results, out / "comparison.csv"),
            plot_comparison(results, out / "comparison.png",
                            "Demo data (generated classes, not ImageNet)")]

