"""Training curves from `metrics.jsonl`: one run (written by training after every epoch as
`curves.png`) or several overlaid (`tools/plot_training.py`).

Four panels by epoch: the training loss (solid) with the validation loss (dashed), validation
top-1 (solid) and top-5 (dashed) accuracy with the chance level, calibration (RMS solid, 15-bin
ECE dashed) and the learning rate at the epoch's end. Epochs without validation leave gaps.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from dali_pixmix.evaluation.report import pyplot, save_figure

CURVES = "curves.png"


def _series(lines: Sequence[Dict], key: str, in_val: bool = False):
    """(epochs, values) of `key` (in each line's "val" when `in_val`), skipping absent ones."""
    points = [(line["epoch"], (line.get("val") or {}).get(key) if in_val else line.get(key))
              for line in lines]
    points = [(e, v) for e, v in points if v is not None]
    return [e for e, _ in points], [v for _, v in points]


def _chance(runs: Dict[str, Sequence[Dict]]) -> Optional[float]:
    values = {line["val"]["chance_top1"] for lines in runs.values() for line in lines
              if (line.get("val") or {}).get("chance_top1") is not None}
    return values.pop() if len(values) == 1 else None


def curves_figure(runs: Dict[str, Sequence[Dict]], title: str):
    """The figure of `runs` (name -> metrics.jsonl lines); one colour per run."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    panels = [("loss", [("loss", False, "-", "train"), ("loss", True, "--", "val")]),
              ("validation accuracy (%)", [("top1", True, "-", "top-1"),
                                           ("top5", True, "--", "top-5")]),
              ("calibration error (%)", [("rms", True, "-", "RMS"), ("ece15", True, "--", "ECE")]),
              ("learning rate", [("lr", False, "-", "lr")])]
    for (ylabel, curves), ax in zip(panels, axes):
        for i, (name, lines) in enumerate(runs.items()):
            for key, in_val, style, label in curves:
                epochs, values = _series(lines, key, in_val)
                if epochs:
                    ax.plot(epochs, values, style, color=f"C{i}", marker=".",
                            label=f"{name}: {label}" if len(runs) > 1 else label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if ax.lines:
            ax.legend(fontsize=7)
    chance = _chance(runs)
    if chance is not None:
        axes[1].axhline(chance, color="grey", linewidth=0.8, linestyle=":")
        axes[1].annotate("chance", (0.01, chance), xycoords=("axes fraction", "data"),
                         fontsize=7, color="grey", va="bottom")
    fig.suptitle(title, fontsize=9)
    return fig, plt


def write_curves(runs: Dict[str, Sequence[Dict]], path: str | Path, title: str) -> Path:
    fig, plt = curves_figure(runs, title)
    return save_figure(fig, plt, path)


def read_metrics(run_dir: str | Path) -> List[Dict]:
    """The epoch lines of `<run_dir>/metrics.jsonl`; a clear error when there are none."""
    from dali_pixmix.training.outputs import METRICS, metrics_lines

    run_dir = Path(run_dir)
    if not (run_dir / METRICS).is_file():
        raise FileNotFoundError(f"{run_dir / METRICS}: not found; give a training output folder "
                                "(train.output_dir) that finished at least one epoch")
    lines = metrics_lines(run_dir)
    if not lines:
        raise ValueError(f"{run_dir / METRICS} holds no epoch yet")
    return lines
