"""The CIFAR report: the PixMix paper's Table 7 (CIFAR-100) / Table 8 (CIFAR-10) layout with
the paper's rows beside this model's, and plots, from the rows of `evaluation.cifar`.

Files (rank 0, refreshed after every task): `<out>/table8.md` and `table8.csv` for CIFAR-10
(`table7.*` for CIFAR-100), `<out>/plots/cifar_corruption_errors.png` (error per corruption,
C and C-bar) and `<out>/plots/cifar_severity.png` (error and RMS calibration error against the
severity); the clean task draws `plots/reliability_clean.png`. A column is filled from its
summary row over the full list (variant "mean"), else from one over part of it ("partial: k of
N ..."), then starred and named under the table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dali_pixmix.data.cifar import DISPLAY_NAMES, NUM_CLASSES
from dali_pixmix.evaluation.report import (
    Row,
    paper_table_lines,
    protocols_note,
    pyplot,
    read_results,
    save_figure,
    write_numbers_csv,
)
from dali_pixmix.oserrors import names_file

__all__ = ["COLUMNS", "SOURCES", "PAPER_ROWS", "TABLE_NUMBER", "report_path", "cell",
           "table_numbers", "cifar_table_lines", "cifar_table_markdown", "summary_line",
           "corruption_errors_figure", "severity_figure", "write_cifar_report"]

COLUMNS = ("clean", "C mCE", "C-bar", "P mFR", "P mT5D", "PGD", "RMS clean", "RMS C",
           "RMS C-bar", "AUROC", "AUPR")
# (task, metric) behind each column.
SOURCES = {
    "clean": ("cifar_clean", "top1_error"), "C mCE": ("cifar_c", "mean_error"),
    "C-bar": ("cifar_cbar", "mean_error"), "P mFR": ("cifar_p", "mfr"),
    "P mT5D": ("cifar_p", "mt5d_ranks"), "PGD": ("pgd", "error"),
    "RMS clean": ("cifar_clean", "rms"), "RMS C": ("cifar_c", "rms"),
    "RMS C-bar": ("cifar_cbar", "rms"), "AUROC": ("cifar_ood", "auroc"),
    "AUPR": ("cifar_ood", "aupr"),
}
# PixMix paper, WRN-40-4: Table 7 (CIFAR-100) and Table 8 (CIFAR-10), in COLUMNS order. Only
# these three of the tables' methods are transcribed (Cutout, Mixup, CutMix, AutoAugment and
# OE are in the paper's appendix).
PAPER_ROWS = {
    "cifar100": {
        "Baseline": (21.3, 50.0, 52.0, 10.7, 2.7, 96.8, 14.6, 31.2, 30.9, 77.7, 35.4),
        "AugMix": (20.6, 35.4, 41.2, 6.5, 1.9, 95.6, 12.5, 18.8, 22.5, 84.9, 53.8),
        "PixMix": (20.3, 30.5, 36.7, 5.7, 1.6, 92.9, 7.0, 8.1, 8.9, 89.3, 70.9)},
    "cifar10": {
        "Baseline": (4.4, 26.4, 26.4, 3.4, 1.7, 91.3, 6.4, 22.7, 22.4, 91.9, 70.9),
        "AugMix": (4.3, 12.4, 16.4, 1.7, 1.2, 86.8, 5.1, 9.4, 12.6, 89.2, 61.5),
        "PixMix": (4.2, 9.5, 13.6, 1.7, 1.0, 82.1, 2.6, 3.7, 5.3, 97.0, 88.4)},
}
TABLE_NUMBER = {"cifar10": 8, "cifar100": 7}
PAPER_ANOMALY_SETS = "Gaussian, Rademacher, Blobs, Textures, SVHN, LSUN, Places69"
FULL_TEST = 10000  # test images, and images per C / C-bar (corruption, severity) cell
CONVENTIONS = (
    "Lower is better except AUROC/AUPR. clean, C, C-bar, PGD: top-1 error (%); \"C mCE\" is the "
    "paper's name for the PLAIN mean error over the 15 corruptions x 5 severities (no AlexNet "
    "normalisation), C-bar the same over its 10; P mFR (%) and mT5D (rank units) are "
    "unnormalised means over the 10 CIFAR-P perturbations (Hendrycks' list: spatter in place "
    "of snow); RMS: calibration error (%), adaptive bins, the published last-bin drop; "
    "AUROC/AUPR (%): anomaly score -MSP, anomalies positive.")


def report_path(out: str | Path, dataset: str) -> Path:
    """`<out>/table8.md` (CIFAR-10) or `<out>/table7.md` (CIFAR-100)."""
    return Path(out) / f"table{TABLE_NUMBER[dataset]}.md"


def _is_summary(r: Row, task: str, metric: str, dataset: str) -> bool:
    if r.task != task or r.metric != metric or r.severity is not None:
        return False
    if task == "cifar_ood":
        return r.dataset == "mean" and r.variant == "msp"
    if task == "pgd":
        return r.dataset == f"{dataset}_test"
    return r.variant in ("", "mean") or r.variant.startswith("partial")


def cell(rows: Sequence[Row], column: str, dataset: str) -> Optional[Row]:
    """The row behind a column: the last full summary, else the last partial one."""
    hits = [r for r in rows if _is_summary(r, *SOURCES[column], dataset)]
    full = [r for r in hits if not r.variant.startswith("partial")]
    return (full or hits or [None])[-1]


def table_numbers(rows: Sequence[Row], dataset: str) -> Dict[str, Optional[Row]]:
    """Column -> the row that fills it (None where not evaluated)."""
    return {c: cell(rows, c, dataset) for c in COLUMNS}


def _shown(hit: Optional[Row]) -> str:
    if hit is None:
        return "-"
    return f"{hit.value:.1f}" + ("*" if hit.variant.startswith("partial") else "")


def cifar_table_lines(dataset: str, models: Sequence[Tuple[str, Sequence[Row]]]) -> List[str]:
    """The table in markdown: the paper's rows of `dataset`, then one row per (name, rows)."""
    cells = [(name, [_shown(hit) for hit in table_numbers(rows, dataset).values()])
             for name, rows in models]
    return paper_table_lines(COLUMNS, PAPER_ROWS[dataset], cells)


def _partial_note(numbers: Dict[str, Optional[Row]], name: str) -> str:
    by_set: Dict[str, List[str]] = {}
    for column, hit in numbers.items():
        if hit is not None and hit.variant.startswith("partial"):
            by_set.setdefault(hit.variant.replace("partial: ", ""), []).append(column)
    if not by_set:
        return ""
    parts = "; ".join(f"{', '.join(cols)} over {what}" for what, cols in by_set.items())
    return f"* {name}: {parts} (partial sets), not comparable to the paper."


def _anomaly_note(rows: Sequence[Row], name: str) -> str:
    sets = [(r.dataset, r.n) for r in rows if r.task == "cifar_ood" and r.variant == "msp" and
            r.metric == "auroc" and r.dataset != "mean" and "near-ood" not in r.protocol]
    near = [r for r in rows if r.task == "cifar_ood" and r.variant == "msp" and
            "near-ood" in r.protocol and r.metric in ("auroc", "aupr")]
    if not sets and not near:
        return ""
    text = (f"Anomaly sets behind {name}'s AUROC/AUPR: " +
            ", ".join(f"{s} ({n:,})" for s, n in sets) if sets else
            f"{name} has no far anomaly set")
    text += f" (the paper's: {PAPER_ANOMALY_SETS})."
    for other in dict.fromkeys(r.dataset for r in near):
        values = {r.metric: r.value for r in near if r.dataset == other}
        text += (f" Near-OOD {other} (not in the mean): AUROC {values.get('auroc', 0):.1f}, "
                 f"AUPR {values.get('aupr', 0):.1f}.")
    return text


def _pgd_note(numbers: Dict[str, Optional[Row]]) -> str:
    hit = numbers["PGD"]
    note = ("The paper's PGD rows were made by the reference code, which projects onto the "
            "ball around its random start (--pgd-ball reference).")
    return note if hit is None else f"PGD: {hit.protocol.split(';')[0]}. {note}"


def _evaluated_on(rows: Sequence[Row], name: str, num_classes: Optional[int],
                  dataset: str) -> str:
    parts, full = [], True
    clean = [r.n for r in rows if r.task == "cifar_clean" and r.metric == "top1_error"]
    cells = [r.n for r in rows if r.task in ("cifar_c", "cifar_cbar") and r.metric == "error"
             and r.severity is not None and not r.variant.startswith(("mean", "partial"))]
    videos = [r.n for r in rows if r.task == "cifar_p" and r.metric == "flip_prob"]
    if clean:
        parts.append(f"{clean[-1]:,} test images")
        full &= clean[-1] == FULL_TEST
    if cells:
        parts.append(f"{min(cells):,} images per C / C-bar cell")
        full &= min(cells) == FULL_TEST
    if videos:
        parts.append(f"{min(videos):,} CIFAR-P videos per perturbation")
    if num_classes is not None:
        parts.append(f"a {num_classes}-class model")
        full &= num_classes == NUM_CLASSES[dataset]
    if not parts:
        return ""
    verdict = ("the released sets, as the paper's rows" if full else "the paper's rows use the "
               f"released sets ({FULL_TEST:,} test images and {FULL_TEST:,} per C / C-bar "
               "cell): not comparable")
    return f"{name} was evaluated on " + ", ".join(parts) + f"; {verdict}."


def cifar_table_markdown(rows: Sequence[Row], dataset: str, name: str = "this model",
                         num_classes: Optional[int] = None) -> str:
    """Table 7 / 8 with the paper's rows and this model's, and the notes that go with it."""
    shown = DISPLAY_NAMES[dataset]
    title = (f"Table {TABLE_NUMBER[dataset]} layout of the PixMix paper ({shown}; WRN-40-4 in "
             "the paper's rows: its Baseline, AugMix and PixMix rows are transcribed, the "
             "others are in its appendix).")
    numbers = table_numbers(rows, dataset)
    notes = [CONVENTIONS, _partial_note(numbers, name), _anomaly_note(rows, name),
             _pgd_note(numbers), _evaluated_on(rows, name, num_classes, dataset)]
    tasks = {t for t, _ in SOURCES.values()}
    notes.append(protocols_note(r.protocol for r in rows if r.task in tasks))
    return (title + "\n\n" + "\n".join(cifar_table_lines(dataset, [(name, rows)])) + "\n\n" +
            "\n".join(n for n in notes if n) + "\n")


HEADLINE = ("top1_error", "rms", "mean_error", "mfr", "mt5d_ranks", "error", "auroc", "aupr")


def summary_line(rows: Sequence[Row]) -> str:
    """A task's headline numbers on one line, e.g. 'cifar10_c/mean mean_error=12.30; ...'."""
    shown = [f"{r.dataset}/{r.variant or '-'} {r.metric}={r.value:.2f}" for r in rows
             if r.metric in HEADLINE and r.severity is None and
             (r.task != "cifar_ood" or (r.dataset == "mean" and r.variant == "msp")) and
             (r.task not in ("cifar_c", "cifar_cbar") or r.metric != "error")]
    ranks = any(r.metric == "mt5d_ranks" for r in rows)
    return "; ".join(shown) + (" (percent; mT5D in ranks)" if ranks else " (percent)")


# --------------------------------------------------------------------------- plots
_SETS = (("cifar_c", "CIFAR-C", "tab:blue"), ("cifar_cbar", "CIFAR-C-bar", "tab:orange"))


def corruption_errors_figure(rows: Sequence[Row]):
    """Bars of the error per corruption (mean over the severities), CIFAR-C then C-bar; the
    corruptions outside the means in grey. None without such rows."""
    from dali_pixmix.metrics.cifar import CIFAR_C_CORRUPTIONS, CIFAR_CBAR_CORRUPTIONS

    listed = {"cifar_c": CIFAR_C_CORRUPTIONS, "cifar_cbar": CIFAR_CBAR_CORRUPTIONS}
    bars = [(r, colour if r.variant in listed[task] else "tab:gray")
            for task, _, colour in _SETS for r in rows
            if r.task == task and r.metric == "error" and r.severity is None
            and not r.variant.startswith(("mean", "partial"))]
    if not bars:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 0.4 * len(bars) + 1.5), 3.8))
    ax.bar(range(len(bars)), [r.value for r, _ in bars], color=[c for _, c in bars])
    ax.set_xticks(range(len(bars)), [r.variant for r, _ in bars], rotation=60, ha="right",
                  fontsize=7)
    ax.set(ylabel="top-1 error (%)", title="Error per corruption (mean over severities)")
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color=c, label=label) for _, label, c in _SETS] +
              [Patch(color="tab:gray", label="extra (not in the mean)")], fontsize=7,
              frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.text(0.01, 0.005, f"{min(r.n for r, _ in bars):,}+ images per bar; "
             "no AlexNet normalisation", fontsize=6, color="dimgray")
    return fig


def severity_figure(rows: Sequence[Row]):
    """Error and RMS calibration error against the severity, mean over the listed corruptions
    of CIFAR-C and C-bar. None without such rows."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    drawn = False
    for task, label, colour in _SETS:
        means = [r for r in rows if r.task == task and r.metric == "error" and r.severity
                 and r.variant.startswith(("mean", "partial"))]
        if not means:
            continue
        found = means[-1].variant
        per = {s: [r.value for r in rows if r.task == task and r.metric == "rms" and
                   r.severity == s and not r.variant.startswith(("mean", "partial"))]
               for s in range(1, 6)}
        axes[0].plot([r.severity for r in means], [r.value for r in means], marker="o",
                     color=colour, label=f"{label} ({found})")
        sev = [s for s in per if per[s]]
        axes[1].plot(sev, [np.mean(per[s]) for s in sev], marker="o", color=colour, label=label)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    axes[0].set(xlabel="severity", ylabel="top-1 error (%)", xticks=range(1, 6),
                title="Error under corruption")
    axes[1].set(xlabel="severity", ylabel="RMS calibration error (%)", xticks=range(1, 6),
                title="Calibration under corruption")
    for ax in axes:
        ax.legend(fontsize=7, frameon=False)
    return fig


def write_cifar_report(out: str | Path, dataset: str, name: str = "this model",
                       num_classes: Optional[int] = None) -> Path:
    """Collect `<out>/results/*.json`; write the table (.md and .csv) and the plots; returns
    the .md path."""
    out = Path(out)
    rows = read_results(out)
    path = report_path(out, dataset)
    with names_file(path):
        path.write_text(cifar_table_markdown(rows, dataset, name, num_classes))
    numbers = table_numbers(rows, dataset)
    lines = [((f"{m} (paper)",), dict(zip(COLUMNS, v))) for m, v in PAPER_ROWS[dataset].items()]
    lines.append(((name,), {c: None if h is None else h.value for c, h in numbers.items()}))
    write_numbers_csv(path.with_suffix(".csv"), ["method"], COLUMNS, lines)
    plt = pyplot()
    for figure, file in ((corruption_errors_figure(rows), "cifar_corruption_errors.png"),
                         (severity_figure(rows), "cifar_severity.png")):
        if figure is not None:
            save_figure(figure, plt, out / "plots" / file)
    return path
