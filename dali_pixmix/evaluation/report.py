"""Evaluation results as tidy rows, the paper's Table 9, and plots.

A row is `(task, dataset, variant, severity, metric, value, n, protocol, software)`:
  task      clean | imagenet_c | imagenet_cbar | imagenet_r | imagenet_p | ood
  dataset   the evaluated set ("imagenet_val", "imagenet_c", an OOD set name, or "mean")
  variant   corruption / perturbation / score name; "mean" for a summary over them; "" if none
  severity  1..5 for a single cell, None otherwise
  metric    e.g. top1_error, top5_error, rms (published protocol: last adaptive bin dropped),
            rms_all_bins, ece, error, ce, mce, mce_partial, mean_error, auroc, aupr, fpr95,
            mfr, mt5d
  value     PERCENT for every metric (errors, calibration, AUROC/AUPR/FPR95, mFR/mT5D)
  n         number of images behind the value
  protocol  the preprocessing / convention that produced it (e.g. "pixmix:resize256-crop224")
  software  the code and library versions that wrote it (`provenance.software_string`),
            stamped by `write_rows`; "" in files written before it existed
  checkpoint, weights  the evaluated checkpoint file and its weights' identity (the first 16
            hex digits of `checkpoint.checkpoint_identity`), stamped by `write_rows`;
            one output folder holds the rows of ONE model's weights (`check_one_model`)
Plots use matplotlib's Agg backend and are written as PNG.
"""
from __future__ import annotations

import csv
import json
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from dali_pixmix.oserrors import names_file

FIELDS = ("task", "dataset", "variant", "severity", "metric", "value", "n", "protocol",
          "software", "checkpoint", "weights")

TABLE9_COLUMNS = ("clean err", "C mCE", "C-bar err", "R err", "P mFR", "P mT5D", "RMS clean",
                  "RMS C", "RMS C-bar", "RMS R", "AUROC", "AUPR")
# (task, metric) each column reads from a summary row (severity None, variant "" or "mean").
TABLE9_SOURCES = {
    "clean err": ("clean", "top1_error"), "C mCE": ("imagenet_c", "mce"),
    "C-bar err": ("imagenet_cbar", "mean_error"), "R err": ("imagenet_r", "top1_error"),
    "P mFR": ("imagenet_p", "mfr"), "P mT5D": ("imagenet_p", "mt5d"),
    "RMS clean": ("clean", "rms"), "RMS C": ("imagenet_c", "rms"),
    "RMS C-bar": ("imagenet_cbar", "rms"), "RMS R": ("imagenet_r", "rms"),
    "AUROC": ("ood", "auroc"), "AUPR": ("ood", "aupr"),
}
# PixMix paper, Table 9 (ImageNet, ResNet-50).
PAPER_TABLE9 = {
    "Baseline": (23.9, 78.2, 61.0, 63.8, 58.0, 78.4, 5.6, 12.0, 20.7, 19.7, 79.7, 48.6),
    "AugMix": (22.8, 71.0, 56.5, 61.7, 52.7, 70.9, 4.5, 9.2, 15.0, 13.2, 84.2, 61.1),
    "PixMix": (22.6, 65.8, 44.3, 60.1, 51.1, 69.1, 3.6, 6.3, 5.8, 11.0, 85.7, 64.1),
}


@dataclass(frozen=True)
class Row:
    task: str
    dataset: str
    variant: str
    severity: Optional[int]
    metric: str
    value: float
    n: int
    protocol: str
    software: str = ""
    checkpoint: str = ""
    weights: str = ""


def row(task: str, dataset: str, metric: str, value: float, n: int, protocol: str,
        variant: str = "", severity: Optional[int] = None) -> Row:
    """A result row; `value` must already be in percent."""
    return Row(task, dataset, variant, None if severity is None else int(severity), metric,
               float(value), int(n), protocol)


def write_rows(rows: Sequence[Row], out_dir: str | Path, stem: str,
               model: Optional[Dict[str, str]] = None) -> List[Path]:
    """Write `<stem>.json` (a list of row objects) and `<stem>.csv`; returns both paths.

    Rows without a `software` entry are stamped with this process's `software_string()`, rows
    without `weights` with `model` ({"checkpoint", "weights"}, `Evaluator.model_fields`).
    """
    from dali_pixmix.provenance import software_string

    rows = [r if r.software else replace(r, software=software_string()) for r in rows]
    rows = [r if r.weights or not model else replace(r, **model) for r in rows]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    with names_file(json_path):
        json_path.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    with names_file(csv_path), csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    return [json_path, csv_path]


def read_rows(path: str | Path) -> List[Row]:
    """Rows from a JSON file written by `write_rows` (or any list of row objects; fields with a
    default, such as `software`, may be absent, as in files written by older versions)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        data = json.loads(path.read_text())
        return [Row(**{f.name: item[f.name] for f in fields(Row)
                       if f.name in item or f.default is MISSING}) for item in data]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a list of result rows with fields {FIELDS}: {err}")


def check_one_model(rows: Sequence[Row], where: str | Path,
                    weights: Optional[str] = None, checkpoint: str = "") -> None:
    """Refuse rows of several models' weights in one place (a table would mix them), and,
    with `weights`, rows of any other model than that one: one line naming them."""
    held = {r.weights: r.checkpoint for r in rows}
    if weights is not None and any(w != weights for w in held):
        other = next(w for w in held if w != weights)
        made = (f"of {held[other]} (weights {other})" if other else
                "that do not record their checkpoint (written by an older version)")
        raise ValueError(f"--out {where} holds the results {made}; the results of "
                         f"{checkpoint or 'this checkpoint'} (weights {weights}) would mix with "
                         "them in one table: pass another --out, or delete "
                         f"{Path(where) / 'results'} to replace them")
    if len(held) > 1:
        listed = ", ".join(f"{c or 'unrecorded'} (weights {w or '?'})" for w, c in held.items())
        raise ValueError(f"{where} holds the results of {len(held)} checkpoints ({listed}), "
                         "which one table would mix: keep one model's results per folder")


def summary_value(rows: Iterable[Row], task: str, metric: str) -> Optional[Row]:
    """The last summary row of a metric: no severity, variant '' or 'mean'.

    OOD summaries are the 'mean' dataset under the paper's MSP score; ImageNet-P summaries
    may carry severity 1 (difficulty 1, the only AlexNet-normalised one).
    """
    variants = ("msp",) if task == "ood" else ("", "mean")
    severities = (None, 1) if task == "imagenet_p" else (None,)
    hits = [r for r in rows if r.task == task and r.metric == metric and r.variant in variants
            and r.severity in severities and (task != "ood" or r.dataset == "mean")]
    return hits[-1] if hits else None


# Corruption columns that a summary over part of the corruptions fills when the full-set one is
# missing (its variant says "partial: k of N corruptions"); such cells are starred.
PARTIAL_SOURCES = {"C mCE": ("imagenet_c", "mce_partial"), "RMS C": ("imagenet_c", "rms"),
                   "C-bar err": ("imagenet_cbar", "mean_error"),
                   "RMS C-bar": ("imagenet_cbar", "rms")}


def partial_value(rows: Iterable[Row], task: str, metric: str) -> Optional[Row]:
    """The last summary row of a metric over a partial corruption set ("partial: k of N")."""
    hits = [r for r in rows if r.task == task and r.metric == metric and r.severity is None
            and r.variant.startswith("partial")]
    return hits[-1] if hits else None


def partial_summary(rows: Sequence[Row], column: str) -> Optional[Row]:
    """The summary over a partial corruption set behind `column`, when there is no full one."""
    if column not in PARTIAL_SOURCES or summary_value(rows, *TABLE9_SOURCES[column]):
        return None
    return partial_value(rows, *PARTIAL_SOURCES[column])


def partial_columns(rows: Sequence[Row]) -> Dict[str, str]:
    """Column -> the partial set's description, for the cells filled by partial summaries."""
    return {c: hit.variant for c in PARTIAL_SOURCES if (hit := partial_summary(rows, c))}


def partial_note(rows: Sequence[Row], name: str) -> str:
    """'* <name>: C mCE, RMS C on partial: 5 of 15 corruptions; not comparable ...' or ''."""
    by_set: Dict[str, List[str]] = {}
    for column, variant in partial_columns(rows).items():
        by_set.setdefault(variant, []).append(column)
    if not by_set:
        return ""
    parts = "; ".join(f"{', '.join(cols)} over {variant.replace('partial: ', '')}"
                      for variant, cols in by_set.items())
    return f"* {name}: {parts} (a partial set), not comparable to the paper."


def table9_numbers(rows: Sequence[Row]) -> Dict[str, Optional[float]]:
    """The evaluated model's Table 9 cells by column (percent; None where not evaluated); a
    corruption column holds its partial-set summary when that is all there is."""
    cells = {}
    for column in TABLE9_COLUMNS:
        hit = summary_value(rows, *TABLE9_SOURCES[column]) or partial_summary(rows, column)
        cells[column] = None if hit is None else hit.value
    return cells


def table9_values(rows: Sequence[Row]) -> List[str]:
    """The evaluated model's cells in Table 9 order; '-' where not evaluated, '*' after a
    partial-set summary."""
    numbers, partial = table9_numbers(rows), partial_columns(rows)
    return ["-" if numbers[c] is None else f"{numbers[c]:.1f}" + ("*" if c in partial else "")
            for c in TABLE9_COLUMNS]


TABLE9_CONVENTIONS = ("Lower is better except AUROC/AUPR (anomaly score -MSP, anomalies "
                      "positive). RMS uses the published protocol (last adaptive bin dropped).")


def table9_lines(models: Sequence[tuple]) -> List[str]:
    """Table 9 in markdown: the paper's Baseline/AugMix/PixMix rows, then one row per
    `(name, rows)` of `models`."""
    return paper_table_lines(TABLE9_COLUMNS, PAPER_TABLE9,
                             [(name, table9_values(rows)) for name, rows in models])


def paper_table_lines(columns: Sequence[str], paper_rows: Dict[str, Sequence[float]],
                      model_cells: Sequence[Tuple[str, Sequence[str]]]) -> List[str]:
    """A markdown table of `columns`: the paper's rows ('<method> (paper)', one decimal), then
    one row of already formatted cells per `(name, cells)`."""
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for method, values in paper_rows.items():
        lines.append(f"| {method} (paper) | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    for name, cells in model_cells:
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def protocols_note(protocols: Iterable[str]) -> str:
    """'Protocols: a; b; c', each ';'-separated part of the rows' protocols named once."""
    parts = sorted({part for protocol in protocols for part in protocol.split(";") if part})
    return "Protocols: " + "; ".join(parts) if parts else ""


def table9_markdown(rows: Sequence[Row], name: str = "this model",
                    num_classes: Optional[int] = None) -> str:
    """Markdown table in the form of the paper's Table 9, with its Baseline/AugMix/PixMix rows,
    and notes: conventions, how many images (and classes) this model's cells rest on, the
    protocols."""
    lines = table9_lines([(name, rows)])
    notes = [TABLE9_CONVENTIONS]
    notes.append(partial_note(rows, name))
    notes.append(anomaly_note(rows, name))
    notes.append(evaluated_on(rows, name, num_classes))
    notes.append(protocols_note(r.protocol for r in rows))
    return "\n".join(lines) + "\n\n" + "\n".join(n for n in notes if n) + "\n"


# Images per set (per cell for C / C-bar) in the published benchmarks, and the paper's classes.
FULL_COUNTS = {"clean": 50000, "imagenet_c": 50000, "imagenet_cbar": 50000, "imagenet_r": 30000}
FULL_CLASSES = 1000
_SET_NAMES = {"clean": "ImageNet val images", "imagenet_c": "images per ImageNet-C cell",
              "imagenet_cbar": "images per ImageNet-C-bar cell",
              "imagenet_r": "ImageNet-R images"}


def evaluated_counts(rows: Sequence[Row]) -> Dict[str, int]:
    """Images behind each task's cells: clean/R sets, C/C-bar per (corruption, severity)."""
    counts = {}
    for task in FULL_COUNTS:
        metric = "top1_error" if task in ("clean", "imagenet_r") else "error"
        hits = [r.n for r in rows if r.task == task and r.metric == metric]
        if hits:
            counts[task] = hits[-1]
    return counts


def evaluated_on(rows: Sequence[Row], name: str, num_classes: Optional[int]) -> str:
    """'<name>: 30 ImageNet val images, ..., a 10-class model; the paper's rows use ...'.
    Comparable to the paper's rows only with its full sets and its anomaly sets."""
    counts, sets = evaluated_counts(rows), anomaly_sets(rows)
    if not counts and num_classes is None and not sets:
        return ""
    parts = [f"{n:,} {_SET_NAMES[task]}" for task, n in counts.items()]
    if num_classes is not None:
        parts.append(f"a {num_classes:,}-class model")
    if sets:
        parts.append(f"{len(sets)} anomaly set(s)")
    reasons = []
    if not (all(n == FULL_COUNTS[t] for t, n in counts.items())
            and num_classes in (None, FULL_CLASSES)):
        reasons.append("the paper's rows use the full sets (50,000 val images per set or C "
                       "cell, 30,000 ImageNet-R images, 1,000 classes)")
    if sets and not are_paper_anomaly_sets(sets):
        reasons.append("its AUROC/AUPR average over other anomaly sets than the paper's")
    verdict = ("; ".join(reasons) + ": not comparable" if reasons else
               "the published sets, as the paper's rows")
    return f"{name} was evaluated on " + ", ".join(parts) + f"; {verdict}."


# The anomaly sets behind the paper's AUROC/AUPR (a mean over them), and the names under which
# they may be given (`--ood NAME=PATH`; the generated three are named by the suite).
PAPER_ANOMALY_SETS = ("gaussian", "rademacher", "blobs", "textures", "svhn", "lsun", "places69")
ANOMALY_SET_ALIASES = {"dtd": "textures", "places": "places69", "places365": "places69"}


def anomaly_sets(rows: Sequence[Row]) -> List[str]:
    """The anomaly sets behind the AUROC/AUPR mean (the MSP rows), in row order."""
    return list(dict.fromkeys(r.dataset for r in rows if r.task == "ood" and r.metric == "auroc"
                              and r.variant == "msp" and r.dataset != "mean"))


def paper_set_names(names: Sequence[str]) -> List[str]:
    """`names` as the paper names its anomaly sets (case and aliases resolved)."""
    return [ANOMALY_SET_ALIASES.get(n.lower(), n.lower()) for n in names]


def are_paper_anomaly_sets(names: Sequence[str]) -> bool:
    """Exactly the paper's seven sets (a mean over fewer or more is another number)."""
    return sorted(paper_set_names(names)) == sorted(PAPER_ANOMALY_SETS)


def anomaly_note(rows: Sequence[Row], name: str) -> str:
    """'<name>: AUROC/AUPR are the mean over gaussian, rademacher, blobs; the paper's ...' or ''."""
    sets = anomaly_sets(rows)
    if not sets:
        return ""
    note = f"{name}: AUROC/AUPR are the mean over {len(sets)} anomaly sets ({', '.join(sets)})"
    if are_paper_anomaly_sets(sets):
        return note + ", the paper's sets."
    missing = [s for s in PAPER_ANOMALY_SETS if s not in paper_set_names(sets)]
    return (note + "; the paper's are Gaussian, Rademacher, Blobs, Textures, SVHN, LSUN and "
            f"Places69 (missing here: {', '.join(missing) or 'none'}): not comparable to its "
            "AUROC/AUPR.")


CE_SHORT_NAMES = (
    ("gaussian_noise", "Gauss"), ("shot_noise", "Shot"), ("impulse_noise", "Impulse"),
    ("defocus_blur", "Defocus"), ("glass_blur", "Glass"), ("motion_blur", "Motion"),
    ("zoom_blur", "Zoom"), ("snow", "Snow"), ("frost", "Frost"), ("fog", "Fog"),
    ("brightness", "Bright"), ("contrast", "Contrast"), ("elastic_transform", "Elastic"),
    ("pixelate", "Pixel"), ("jpeg_compression", "JPEG"))


def ce_table_markdown(rows: Sequence[Row], name: str = "this model") -> str:
    """Per-corruption CE in the form of the paper's Table 15 (clean error, mCE, 15 CEs), %."""
    ce = {r.variant: r.value for r in rows if r.task == "imagenet_c" and r.metric == "ce"}
    clean = summary_value(rows, "clean", "top1_error")
    mce = summary_value(rows, "imagenet_c", "mce")
    cells = ["-" if clean is None else f"{clean.value:.1f}",
             "-" if mce is None else f"{mce.value:.0f}"]
    cells += [f"{ce[c]:.0f}" if c in ce else "-" for c, _ in CE_SHORT_NAMES]
    header = ["method", "Clean", "mCE"] + [short for _, short in CE_SHORT_NAMES]
    return ("| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|\n" +
            f"| {name} | " + " | ".join(cells) + " |\n")


def pyplot():
    """matplotlib.pyplot on the Agg backend (figures are written to files, never shown)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _legend_below(ax) -> None:
    """The legend under the axes, where it cannot cover the data."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=8,
              frameon=False)


def _caption(fig, rows: Sequence[Row]) -> None:
    """Name the protocol(s) and the images behind the plotted rows, at the figure's foot."""
    protocols = sorted({r.protocol for r in rows if r.protocol})
    sizes = sorted({r.n for r in rows})
    text = "protocol: " + (", ".join(protocols) or "-")
    if sizes:
        text += f"; {sizes[0]:,}" + (f"-{sizes[-1]:,}" if len(sizes) > 1 else "") + \
            " images per value"
    fig.text(0.01, 0.005, text, fontsize=6, color="dimgray", ha="left", va="bottom")


def calibration_severity_figure(rows: Sequence[Row]):
    """Mean RMS calibration error per severity on ImageNet-C (its test corruptions evaluated,
    as Table 9's "RMS C"; the extras are left out) and ImageNet-C-bar; None without such rows.
    The legend counts the corruptions behind each curve."""
    from dali_pixmix.metrics.corruption import TEST_CORRUPTIONS

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.8))
    plotted = []
    for task, name in (("imagenet_c", "ImageNet-C"), ("imagenet_cbar", "ImageNet-C-bar")):
        cells = [r for r in rows if r.task == task and r.metric == "rms" and r.severity
                 and (task != "imagenet_c" or r.variant in TEST_CORRUPTIONS)]
        if not cells:
            continue
        sev = sorted({r.severity for r in cells})
        count = len({r.variant for r in cells})  # the corruptions evaluated, not the full set's
        ax.plot(sev, [np.mean([r.value for r in cells if r.severity == s]) for s in sev],
                marker="o", label=f"{name} ({count} corruption{'s' * (count != 1)})")
        plotted += cells
    if not plotted:
        plt.close(fig)
        return None
    ax.set(xlabel="severity", ylabel="RMS calibration error (%)", xticks=[1, 2, 3, 4, 5],
           title="Calibration under corruption")
    _legend_below(ax)
    _caption(fig, plotted)
    return fig


def plot_calibration_vs_severity(rows: Sequence[Row], path: str | Path) -> Optional[Path]:
    """`calibration_severity_figure` as a PNG (paper Figure 5); None when there is nothing."""
    fig = calibration_severity_figure(rows)
    return None if fig is None else save_figure(fig, pyplot(), path)


def corruption_errors_figure(rows: Sequence[Row]):
    """Bar chart of per-corruption CE (ImageNet-C, percent; 100 = AlexNet); extras in grey."""
    ce = [r for r in rows if r.task == "imagenet_c" and r.metric == "ce" and r.severity is None]
    if not ce:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(ce) + 1), 3.8))
    from dali_pixmix.metrics.corruption import EXTRA_CORRUPTIONS
    extra = [r.variant in EXTRA_CORRUPTIONS for r in ce]
    ax.bar(range(len(ce)), [r.value for r in ce],
           color=["tab:gray" if e else "tab:blue" for e in extra])
    if any(extra):  # extras are not part of mCE
        from matplotlib.patches import Patch
        ax.legend(handles=[Patch(color="tab:gray", label="extra (not in mCE)")],
                  loc="lower left", bbox_to_anchor=(1.01, 0), fontsize=8, frameon=False)
    ax.axhline(100, color="gray", lw=0.8, ls="--")
    ax.set_xticks(range(len(ce)), [r.variant for r in ce], rotation=60, ha="right", fontsize=8)
    ax.set(ylabel="CE (%) (AlexNet = 100)", title="Corruption error per corruption")
    _caption(fig, ce)
    return fig


def plot_corruption_errors(rows: Sequence[Row], path: str | Path) -> Optional[Path]:
    """`corruption_errors_figure` as a PNG; None without ImageNet-C CE rows."""
    fig = corruption_errors_figure(rows)
    return None if fig is None else save_figure(fig, pyplot(), path)


def reliability_figure(bins: Dict[str, np.ndarray], title: str = "Reliability diagram",
                       protocol: str = ""):
    """Accuracy vs confidence per equal-width bin (from metrics.calibration.reliability_bins)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 4.6))
    full = bins["count"] > 0
    width = bins["upper"] - bins["lower"]
    ax.bar(bins["lower"][full], bins["accuracy"][full], width=width[full], align="edge",
           edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], ls="--", color="gray", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=title)
    _legend_below(ax)
    count = int(bins["count"].sum())
    fig.text(0.01, 0.005, f"protocol: {protocol or '-'}; {count:,} images", fontsize=6,
             color="dimgray", ha="left", va="bottom")
    return fig


def plot_reliability(bins: Dict[str, np.ndarray], path: str | Path,
                     title: str = "Reliability diagram", protocol: str = "") -> Path:
    """`reliability_figure` as a PNG."""
    return save_figure(reliability_figure(bins, title, protocol), pyplot(), path)


def bar_charts(results: Dict[str, Dict[str, Optional[float]]], columns: Sequence[str],
               path: str | Path, title: str) -> Path:
    """One bar chart per column, a bar per model (`results`: model -> column -> value);
    missing values are left as gaps, never drawn as 0."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(columns), figsize=(max(4.0, 0.35 * len(results) + 2.5)
                                                       * len(columns), 4), squeeze=False)
    names = list(results)
    for ax, column in zip(axes[0], columns):
        for i, name in enumerate(names):
            value = results[name].get(column)
            if value is not None:
                ax.bar_label(ax.bar(i, value, color="tab:blue"), fmt="%.1f", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=70 if len(names) > 3 else 0,
                      ha="right" if len(names) > 3 else "center", fontsize=7)
        ax.set_title(column + (" (higher is better)" if column.startswith("AU") else ""),
                     fontsize=9)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, plt, path)


def save_figure(fig, plt, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG (parents created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # legends below or beside the axes
    plt.close(fig)
    return path


def read_results(out_dir: str | Path) -> List[Row]:
    """Every row of `<out_dir>/results/*.json` (what the evaluation tasks wrote there)."""
    rows: List[Row] = []
    for path in sorted((Path(out_dir) / "results").glob("*.json")):
        rows += read_rows(path)
    return rows


def write_numbers_csv(path: Path, head: Sequence[str], columns: Sequence[str],
                      lines: Iterable[tuple]) -> Path:
    """A CSV of `head` + `columns`; each of `lines` is (leading fields, {column: value or
    None}); values in percent with 4 decimals, blank where not evaluated."""
    with names_file(path), path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*head, *columns])
        for fields_, cells in lines:
            writer.writerow([*fields_, *("" if cells[c] is None else f"{cells[c]:.4f}"
                                         for c in columns)])
    return path


def write_report(out_dir: str | Path, name: str = "this model",
                 num_classes: Optional[int] = None) -> Path:
    """Collect `<out>/results/*.json`; write `<out>/table9.md`, `<out>/imagenet_c_ce.md` (Table 15
    form, when ImageNet-C was evaluated) and the plots; returns the table9.md path.

    Every task (including ones added later, e.g. ImageNet-P) contributes by writing its rows
    with `write_rows(rows, <out>/results, <task>)`.
    """
    out_dir = Path(out_dir)
    rows = read_results(out_dir)
    check_one_model(rows, out_dir)
    table = out_dir / "table9.md"
    with names_file(table):
        table.write_text(table9_markdown(rows, name, num_classes))
    if any(r.task == "imagenet_c" and r.metric == "ce" for r in rows):
        (out_dir / "imagenet_c_ce.md").write_text(ce_table_markdown(rows, name))
    plot_calibration_vs_severity(rows, out_dir / "plots" / "calibration_vs_severity.png")
    plot_corruption_errors(rows, out_dir / "plots" / "ce_per_corruption.png")
    return table
