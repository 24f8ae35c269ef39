"""Several evaluated models in one Table 9: the rows each evaluation wrote (`<out>/results/*.json`
of `eval/run_all.py` or a single-task script) read back and set side by side.

`compare_evaluations(folders, names, out)` writes `<out>/table9.md` (the paper's Baseline, AugMix
and PixMix rows, then one row per model, with notes on what each row rests on and on what makes
two rows incomparable), `<out>/table9.csv` (numbers, one line per model) and
`<out>/table9.png` (a bar chart per evaluated column). Nothing is evaluated again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from dali_pixmix.evaluation.report import (
    TABLE9_COLUMNS,
    TABLE9_CONVENTIONS,
    Row,
    anomaly_note,
    bar_charts,
    check_one_model,
    evaluated_counts,
    evaluated_on,
    partial_note,
    read_results,
    table9_lines,
    table9_numbers,
    write_numbers_csv,
)
from dali_pixmix.oserrors import names_file

TASK_NAMES = {"clean": "clean", "imagenet_c": "ImageNet-C", "imagenet_cbar": "ImageNet-C-bar",
              "imagenet_r": "ImageNet-R", "imagenet_p": "ImageNet-P", "ood": "anomaly detection"}


@dataclass(frozen=True)
class Evaluated:
    """One model's evaluation: its name in the table, the folder, the rows read from it and
    its Table 9 cells (computed once)."""
    name: str
    folder: Path
    rows: List[Row]
    numbers: Dict[str, Optional[float]]


def default_name(folder: str | Path) -> str:
    """The folder's name, or its parent's for the conventional `<run>/eval` or `.../results`."""
    path = Path(folder).resolve()
    return path.parent.name if path.name in ("eval", "results") else path.name


def load_evaluated(folder: str | Path, name: Optional[str] = None) -> Evaluated:
    """The rows of every `<folder>/results/*.json`; a clear error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (give the --out folder of "
                                "eval/run_all.py or of an eval/ script)")
    rows = read_results(folder)
    if not rows:
        raise FileNotFoundError(f"{folder}: no results/*.json in it; evaluate the model first "
                                f"(python eval/run_all.py --checkpoint CKPT --out {folder} ...)")
    check_one_model(rows, folder)  # a row of the table is one model
    return Evaluated(name or default_name(folder), folder, rows, table9_numbers(rows))


def comparability_notes(models: Sequence[Evaluated]) -> List[str]:
    """What makes two models' cells of one task incomparable: other image counts (a subset, a
    partial ImageNet-C) or other protocols (preprocessing, ImageNet-C normalisation)."""
    counts = {m.name: evaluated_counts(m.rows) for m in models}
    protocols = {m.name: {} for m in models}  # name -> task -> its protocols
    for m in models:
        for r in m.rows:
            protocols[m.name].setdefault(r.task, set()).add(r.protocol)
    notes = []
    for task, label in TASK_NAMES.items():
        n_images = {name: c[task] for name, c in counts.items() if task in c}
        if len(set(n_images.values())) > 1:
            listed = ", ".join(f"{name} {n:,}" for name, n in n_images.items())
            notes.append(f"{label}: the models rest on different numbers of images ({listed}); "
                         "their cells are not comparable.")
        used = {name: ", ".join(sorted(p[task])) for name, p in protocols.items() if task in p}
        if len(set(used.values())) > 1:
            listed = "; ".join(f"{name}: {p}" for name, p in used.items())
            notes.append(f"{label}: the models were evaluated under different protocols "
                         f"({listed}); their cells are not comparable.")
    return notes


def comparison_markdown(models: Sequence[Evaluated]) -> str:
    """Table 9 with the paper's rows and one row per model, then the notes."""
    lines = table9_lines([(m.name, m.rows) for m in models])
    notes = [TABLE9_CONVENTIONS + " '-': not evaluated."]
    notes += [line for m in models if (line := partial_note(m.rows, m.name))]
    notes += [line for m in models if (line := anomaly_note(m.rows, m.name))]
    notes += comparability_notes(models)
    notes += [line for m in models if (line := evaluated_on(m.rows, m.name, None))]
    notes += [f"{m.name}: {m.folder}; protocols: " +
              ", ".join(sorted({r.protocol for r in m.rows})) for m in models]
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


def write_csv(models: Sequence[Evaluated], path: Path) -> Path:
    """One line per model: its name, folder and every Table 9 column (blank: not evaluated)."""
    return write_numbers_csv(path, ["model", "folder"], TABLE9_COLUMNS,
                             (([m.name, str(m.folder)], m.numbers) for m in models))


def evaluated_columns(models: Sequence[Evaluated]) -> List[str]:
    """The Table 9 columns at least one model has a value for, in table order."""
    return [c for c in TABLE9_COLUMNS if any(m.numbers[c] is not None for m in models)]


def check_names(models: Sequence[Evaluated]) -> None:
    names = [m.name for m in models]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"two models are named {', '.join(twice)}; tell them apart with --names")


def compare_evaluations(folders: Sequence[str | Path], names: Optional[Sequence[str]],
                        out: str | Path) -> List[Path]:
    """Read every folder's rows and write the comparison; returns the markdown, CSV and chart
    paths (no chart when no column holds a value)."""
    if names is not None and len(names) != len(folders):
        raise ValueError(f"--names gives {len(names)} name(s) for {len(folders)} folder(s)")
    if list((Path(out) / "results").glob("*.json")):
        raise ValueError(f"--out {out} holds an evaluation (results/*.json), whose table9.md the "
                         "comparison would overwrite: pass another --out, e.g. "
                         f"{Path(out).parent / 'comparison'}")
    models = [load_evaluated(f, None if names is None else names[i])
              for i, f in enumerate(folders)]
    check_names(models)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "table9.md"
    with names_file(table):
        table.write_text("# Evaluated models in the paper's Table 9 layout\n\n" +
                         comparison_markdown(models))
    paths = [table, write_csv(models, out / "table9.csv")]
    columns = evaluated_columns(models)
    if columns:
        paths.append(bar_charts({m.name: m.numbers for m in models}, columns,
                                out / "table9.png", "Table 9 columns evaluated (percent)"))
    return paths
