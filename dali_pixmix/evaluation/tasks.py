"""The evaluation tasks: each turns datasets on disk into tidy result rows (report.Row).

Values are in percent. Calibration rows: `rms` = RMS calibration error with adaptive bins of
`bin_size` examples and the published protocol's last-bin drop; `rms_all_bins` = the same over
every bin; `ece` = 15-bin equal-width ECE. A set smaller than `bin_size` gets no RMS rows (and
a message says so) rather than a number computed on too few examples.
"""
from __future__ import annotations

from functools import partial
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from dali_pixmix.evaluation import datasets
from dali_pixmix.evaluation.report import FULL_COUNTS, Row, row
from dali_pixmix.evaluation.runner import Evaluator, Predictions
from dali_pixmix.evaluation.synthetic_ood import SYNTHETIC_SETS, synthetic_batch
from dali_pixmix.metrics import calibration, corruption, ood
from dali_pixmix.models import class_index_mask

PROTOCOLS = ("pixmix", "unresized")


def note_count(ev: Evaluator, task: str, count: int) -> None:
    """Say so when a set is smaller or larger than the published benchmark."""
    full = FULL_COUNTS[task]
    if count != full:
        unit = "per cell " if task in ("imagenet_c", "imagenet_cbar") else ""
        ev.log(f"note: {task} holds {count} images {unit}(the full benchmark has {full}); "
               "results are not comparable to published numbers")


def preprocessing(ev: Evaluator, protocol: str = "resize") -> str:
    """Protocol label of the rows: how images were resized/cropped before the model."""
    if protocol == "unresized":
        return f"unresized:centercrop{ev.crop}"
    prefix = "pixmix:" if protocol == "pixmix" else ""
    return f"{prefix}resize{ev.resize}-crop{ev.crop}"


def classification_metrics(preds: Predictions, bin_size: int) -> Dict[str, Optional[float]]:
    """Percent: top1_error, top5_error, rms (published protocol: last adaptive bin dropped),
    rms_all_bins, ece (15 equal-width bins). RMS is None for sets smaller than `bin_size`.

    The one computation behind both the evaluation rows and validation during training.
    """
    enough = len(preds) >= bin_size
    rms = {metric: (100 * calibration.rms_calibration_error(
        preds.confidence, preds.correct, bin_size, drop_last_bin=drop) if enough else None)
        for metric, drop in (("rms", True), ("rms_all_bins", False))}
    return {"top1_error": 100 * (1 - preds.correct.mean()),
            "top5_error": 100 * (1 - preds.top5_correct.mean()), **rms,
            "ece": 100 * calibration.expected_calibration_error(preds.confidence, preds.correct)}


def classification_rows(ev: Evaluator, preds: Predictions, base: dict, bin_size: int,
                        top5: bool = False) -> List[Row]:
    """Top-1 (and top-5) error, RMS (both bin conventions) and ECE of one set of predictions."""
    n, values = len(preds), classification_metrics(preds, bin_size)
    names = ["top1_error", "top5_error"] if top5 else ["top1_error"]
    rows = [row(metric=m if top5 else "error", value=values[m], n=n, **base) for m in names]
    if values["rms"] is not None:
        rows += [row(metric=m, value=values[m], n=n, **base) for m in ("rms", "rms_all_bins")]
    else:
        ev.log(f"note: {base.get('dataset')} {base.get('variant', '')} {base.get('severity') or ''}"
               f" has {n} images < bin size {bin_size}: no RMS calibration row")
    rows.append(row(metric="ece", value=values["ece"], n=n, **base))
    return rows


def clean_predictions(ev: Evaluator, root: str) -> Predictions:
    images = datasets.class_tree(root, name="ImageNet val")
    return ev.predict(images.files, images.labels(ev.classes), task="clean", cell="val")


def run_clean(ev: Evaluator, root: str, bin_size: int = 100) -> List[Row]:
    """Top-1/5 error, RMS and ECE on ImageNet val (Resize + CenterCrop)."""
    preds = clean_predictions(ev, root)
    note_count(ev, "clean", len(preds))
    base = dict(task="clean", dataset="imagenet_val", protocol=preprocessing(ev))
    rows = classification_rows(ev, preds, base, bin_size, top5=True)
    if ev.dist.is_main:
        from dali_pixmix.evaluation.report import plot_reliability
        plot_reliability(calibration.reliability_bins(preds.confidence, preds.correct),
                         ev.out / "plots" / "reliability_clean.png",
                         title="Reliability diagram, ImageNet val", protocol=base["protocol"])
    return rows


def _cell_rows(ev: Evaluator, task: str, cells, protocol: str, bin_size: int):
    """Per-cell rows and {corruption: [error per severity]} for corruption datasets."""
    label = preprocessing(ev, protocol)
    rows, errors = [], {}
    for cell in ev.progress_over(cells, desc=task):
        preds = ev.predict(cell.images.files, cell.images.labels(ev.classes), task=task,
                           cell=cell.key, no_resize=protocol == "unresized")
        base = dict(task=task, dataset=task, variant=cell.corruption, severity=cell.severity,
                    protocol=label)
        rows += classification_rows(ev, preds, base, bin_size)
        errors.setdefault(cell.corruption, [None] * 5)[cell.severity - 1] = \
            1 - preds.correct.mean()
    return rows, errors


def mean_rms(rows: Sequence[Row], corruptions: Sequence[str]) -> Optional[float]:
    """The mean of the rows' RMS calibration errors over `corruptions` (None without any)."""
    values = [r.value for r in rows if r.metric == "rms" and r.variant in corruptions]
    return float(np.mean(values)) if values else None


def run_imagenet_c(ev: Evaluator, root: str, protocol: str = "pixmix",
                   only: Optional[Sequence[str]] = None, bin_size: int = 100,
                   clean_error: Optional[float] = None) -> List[Row]:
    """mCE over the 15, mean error, per-corruption CE, RMS per cell and mean; extras apart."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown ImageNet-C protocol '{protocol}': use one of {PROTOCOLS}")
    cells = datasets.imagenet_c_cells(root, only)
    note_count(ev, "imagenet_c", len(cells[0].images.files))
    rows, errors = _cell_rows(ev, "imagenet_c", cells, protocol, bin_size)
    label, n_cell = preprocessing(ev, protocol), len(cells[0].images.files)
    for name, ce in corruption.corruption_errors(errors).items():
        rows.append(row("imagenet_c", "imagenet_c", "ce", ce, 5 * n_cell, label, variant=name))
    tests = [c for c in corruption.TEST_CORRUPTIONS if c in errors]
    if not tests:
        return rows
    full = len(tests) == len(corruption.TEST_CORRUPTIONS)
    variant = "mean" if full else f"partial: {len(tests)} of 15 corruptions"
    n = 5 * n_cell * len(tests)
    summary = {"mce" if full else "mce_partial": corruption.mce(errors, tests),
               "mean_error": corruption.mean_error(errors, tests),
               "rms": mean_rms(rows, tests)}
    if clean_error is not None and full:
        summary["relative_mce"] = corruption.relative_mce(errors, clean_error)
    rows += [row("imagenet_c", "imagenet_c", m, v, n, label, variant=variant)
             for m, v in summary.items() if v is not None]
    return rows


def run_imagenet_cbar(ev: Evaluator, root: str, protocol: str = "pixmix",
                      only: Optional[Sequence[str]] = None, bin_size: int = 100) -> List[Row]:
    """Plain mean error and mean RMS over the (corruption, severity) cells (50 when complete)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown ImageNet-C-bar protocol '{protocol}': use one of {PROTOCOLS}")
    cells = datasets.imagenet_cbar_cells(root, only)
    note_count(ev, "imagenet_cbar", len(cells[0].images.files))
    numeric = sorted({(c.severity, c.folder) for c in cells if c.folder != str(c.severity)})
    if numeric:
        ev.log("C-bar severity folders sorted numerically -> 1..5: " +
               ", ".join(f"{c.corruption}/{c.folder}->{c.severity}" for c in cells
                         if c.folder != str(c.severity)))
    rows, errors = _cell_rows(ev, "imagenet_cbar", cells, protocol, bin_size)
    label = preprocessing(ev, protocol)
    if numeric:
        label += ";severity-folders-sorted-numerically"
    rows = [Row(**{**r.__dict__, "protocol": label}) for r in rows]
    found = [c for c in datasets.CBAR_CORRUPTIONS if c in errors]
    full = len(found) == len(datasets.CBAR_CORRUPTIONS)
    variant = "mean" if full else f"partial: {len(found)} of 10 corruptions"
    n = sum(len(c.images.files) for c in cells)
    mean_err = 100 * float(np.mean([e for c in found for e in errors[c]]))
    rows.append(row("imagenet_cbar", "imagenet_cbar", "mean_error", mean_err, n, label,
                    variant=variant))
    rms = mean_rms(rows, found)
    if rms is not None:
        rows.append(row("imagenet_cbar", "imagenet_cbar", "rms", rms, n, label, variant=variant))
    return rows


def run_imagenet_r(ev: Evaluator, root: str, bin_size: int = 100) -> List[Row]:
    """Error and calibration on the model's logits restricted to the folder classes."""
    images = datasets.class_tree(root, name="ImageNet-R")
    note_count(ev, "imagenet_r", len(images.files))
    subset = images.classes
    mask = class_index_mask(ev.classes, subset)
    labels = images.labels(subset)  # positions in the mask
    preds = ev.predict(images.files, labels, task="imagenet_r", cell="r", mask=mask)
    base = dict(task="imagenet_r", dataset="imagenet_r",
                protocol=preprocessing(ev) + f";logits-masked-to-{len(subset)}-classes")
    return classification_rows(ev, preds, base, bin_size, top5=True)


def run_ood(ev: Evaluator, in_root: str, ood_sets: Mapping[str, str],
            synthetic: bool = True, synthetic_count: Optional[int] = None,
            seed: int = 0) -> List[Row]:
    """AUROC/AUPR/FPR95 per OOD set and their mean, for MSP, MaxLogit and Energy scores."""
    if synthetic_count is not None and synthetic_count < 1:
        raise ValueError(f"--synthetic-count must be at least 1, got {synthetic_count} (use "
                         "--no-synthetic to leave the synthetic sets out)")
    if synthetic and set(ood_sets) & set(SYNTHETIC_SETS):
        raise ValueError(f"OOD set names {sorted(set(ood_sets) & set(SYNTHETIC_SETS))} clash with "
                         "the generated synthetic sets; rename them")
    files = {name: datasets.image_set(path) for name, path in ood_sets.items()}  # before any
    if not files and not synthetic:  # inference: a bad set fails in seconds
        raise ValueError("no OOD sets: pass --ood NAME=PATH or keep the synthetic sets")
    inside = clean_predictions(ev, in_root)
    rows = []
    for name, paths in ev.progress_over(list(files.items()), desc="ood"):
        preds = ev.predict(paths, np.zeros(len(paths), dtype=np.int64), task="ood", cell=name)
        rows += ood_rows(inside, preds, name)
    if synthetic:
        rows += synthetic_ood_rows(ev, inside, ev.crop, seed, synthetic_count)
    return rows + ood_mean_rows(rows)


def synthetic_ood_rows(ev: Evaluator, inside: Predictions, size: int, seed: int,
                       count: Optional[int] = None, task: str = "ood") -> List[Row]:
    """`ood_rows` of the generated anomaly sets (`SYNTHETIC_SETS`) at `size` px, `count`
    pictures each (default: 1/5 of the in-distribution count, as the reference)."""
    count = count or max(1, len(inside) // 5)
    rows = []
    for kind in ev.progress_over(SYNTHETIC_SETS, desc=f"synthetic {task}"):
        make = partial(synthetic_batch, kind, size=size, seed=seed)
        preds = ev.predict_generated(make, count, task=task, cell=kind,
                                     key=("synthetic", kind, size, seed))
        rows += ood_rows(inside, preds, kind, task=task)
    return rows


def ood_rows(inside: Predictions, outside: Predictions, name: str, task: str = "ood",
             protocol: str = ood.OOD_PROTOCOL) -> List[Row]:
    """AUROC, AUPR and FPR95 (percent) of one anomaly set `name` against the in-distribution
    predictions, for every score (MSP, MaxLogit, Energy)."""
    rows = []
    for score in ood.SCORES:
        metrics = ood.ood_metrics(getattr(inside, score), getattr(outside, score))
        rows += [row(task, name, m, 100 * v, len(outside), protocol, variant=score)
                 for m, v in metrics.items()]
    return rows


def ood_mean_rows(rows: Sequence[Row], task: str = "ood",
                  protocol: str = ood.OOD_PROTOCOL) -> List[Row]:
    """Dataset "mean": each score's AUROC, AUPR and FPR95 averaged over the sets of `rows`."""
    means = []
    for score in ood.SCORES:
        for metric in ("auroc", "aupr", "fpr95"):
            hits = [r for r in rows if r.variant == score and r.metric == metric]
            if hits:
                means.append(row(task, "mean", metric, float(np.mean([r.value for r in hits])),
                                 sum(r.n for r in hits), protocol, variant=score))
    return means
