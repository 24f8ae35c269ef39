"""The CIFAR safety suite (PixMix paper, Tables 7 and 8) on the ImageNet suite's runner, cache
and result rows.

Every picture goes through `Evaluator.predict_arrays` at 32 px as it is, with the reference's
CIFAR normalisation (mean = std = 0.5), sharded over ranks and cached per cell under
`<out>/cache/<task>/`. Tasks (`<out>/results/<task>.json|csv`, values in percent unless the
metric says otherwise; protocol fields say how each was computed):
  cifar_clean  dataset <ds>_test: top1_error, top5_error, rms (adaptive bins, the published
               last-bin drop), rms_all_bins, ece; plots/reliability_clean.png
  cifar_c      dataset <ds>_c: per (corruption, severity) error / rms / rms_all_bins / ece;
               per corruption (severity None) error; per severity (variant "mean") error;
               summary (variant "mean", or "partial: k of 15 corruptions") mean_error = the
               paper's "C" column (plain mean over corruptions x 5 severities, NO AlexNet
               normalisation) and rms (mean over the cells). Extra corruptions (speckle_noise,
               gaussian_blur, spatter, saturate) get their own rows, never the means.
  cifar_cbar   the same over the 10 CIFAR-C-bar corruptions.
  cifar_p      dataset <ds>_p: per perturbation (severity = difficulty) flip_prob (percent) and
               ut5d_ranks; summary mfr (percent) and mt5d_ranks (rank units), unnormalised, over
               the 10 test perturbations (`metrics.cifar.CIFAR_P_PERTURBATIONS`: spatter in
               place of snow, as Hendrycks' CIFAR-P script), partial when fewer.
  pgd          dataset <ds>_test: error on the PGD adversaries (`evaluation.pgd`).
  cifar_ood    per anomaly set (variant = score msp | maxlogit | energy) auroc, aupr, fpr95;
               dataset "mean": the means over the far sets (generated Gaussian, Rademacher and
               Blobs at 32 px, 1/5 of the test count each, and the user's folders, resized to
               32); the other CIFAR's test split, when under the data root, is near-OOD: its own
               rows (protocol "...;near-ood"), not in the mean.
`run_cifar_suite` runs what is configured and writes the Table 7 / 8 report
(`evaluation.cifar_report`); `cifar_evaluator` builds the evaluator of a CIFAR checkpoint.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from dali_pixmix.data.cifar import (
    CIFAR_MEAN,
    CIFAR_STD,
    DATASETS,
    LAYOUTS,
    CifarDataError,
    CifarSplit,
    read_cifar,
)
from dali_pixmix.data.cifar_c import (
    CorruptionArrays,
    PerturbationArrays,
    open_cifar_c,
    open_cifar_cbar,
    open_cifar_p,
    perturbation_file,
    suite_folder_names,
)
from dali_pixmix.data.images import subfolders
from dali_pixmix.evaluation import datasets
from dali_pixmix.evaluation.pgd import PgdSettings, run_pgd_arrays
from dali_pixmix.evaluation.report import Row, row
from dali_pixmix.evaluation.runner import FIELDS, Evaluator, Predictions
from dali_pixmix.evaluation.synthetic_ood import SYNTHETIC_SETS
from dali_pixmix.evaluation.tasks import (
    classification_rows,
    mean_rms,
    ood_mean_rows,
    ood_rows,
    synthetic_ood_rows,
)
from dali_pixmix.metrics import cifar as cm
from dali_pixmix.metrics import perturbation as pm
from dali_pixmix.metrics.ood import OOD_PROTOCOL

__all__ = ["TASKS", "SIZE", "CifarSuite", "OpenedSuite", "CifarResult", "checkpoint_dataset",
           "cifar_evaluator", "open_suite", "discover_sets", "read_pictures", "preprocessing",
           "run_cifar_clean", "run_corruption_set", "run_cifar_p", "run_cifar_ood",
           "run_cifar_suite", "evaluate_cifar_checkpoint"]

TASKS = ("cifar_clean", "cifar_c", "cifar_cbar", "cifar_p", "pgd", "cifar_ood")
SIZE = 32
NEAR_OOD = ";near-ood,not-in-the-mean"


@dataclass
class CifarSuite:
    """What to evaluate: the folders given (None: that task is left out) and the settings."""
    root: str                                  # holds cifar-10-batches-py/ (or -bin/, cifar-100-*)
    c: Optional[str] = None                    # CIFAR-10-C / CIFAR-100-C folder
    cbar: Optional[str] = None                 # CIFAR-10-C-bar / CIFAR-100-C-bar folder
    p: Optional[str] = None                    # CIFAR-10-P / CIFAR-100-P folder
    ood: Mapping[str, str] = field(default_factory=dict)  # name -> folder or file list
    synthetic_ood: bool = True                 # Gaussian, Rademacher, Blobs
    near_ood: bool = True                      # the other CIFAR's test split, when under root
    synthetic_count: Optional[int] = None      # per synthetic set (default 1/5 of the test set)
    pgd: Optional[PgdSettings] = None          # None: no PGD task
    p_difficulty: int = 1
    bin_size: int = 100                        # examples per adaptive calibration bin
    seed: int = 0                              # of the synthetic anomaly sets


@dataclass
class OpenedSuite:
    """The suite's data, every file opened and checked (pixels of C/C-bar/P stay on disk)."""
    dataset: str
    test: CifarSplit
    c: Optional[CorruptionArrays] = None
    cbar: Optional[CorruptionArrays] = None
    p: Optional[PerturbationArrays] = None
    ood_files: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    near: Optional[Tuple[str, CifarSplit]] = None  # (the other dataset, its test split)


@dataclass
class CifarResult:
    """What `run_cifar_suite` made: every row, the Table 7/8 markdown and the files written."""
    rows: List[Row]
    markdown: str
    table: Optional[Path] = None


# --------------------------------------------------------------------------- the checkpoint
def checkpoint_dataset(checkpoint: str | Path, dataset: Optional[str] = None,
                       ckpt: Optional[dict] = None) -> str:
    """The CIFAR dataset a checkpoint was trained on (its saved config's data.dataset); a given
    `dataset` must agree with it, and is needed when the file records no config. `ckpt`: the
    file already read (`read_checkpoint`), else it is read here."""
    from dali_pixmix.checkpoint import read_checkpoint

    config = (read_checkpoint(checkpoint) if ckpt is None else ckpt).get("config")
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {DATASETS}, got '{dataset}'")
    if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
        if dataset is None:
            raise ValueError(f"{checkpoint} records no training config (data.dataset): pass "
                             "--dataset cifar10 or cifar100")
        return dataset
    saved = config["data"].get("dataset", "imagenet")
    if saved not in DATASETS:
        raise ValueError(f"{checkpoint} was trained on {saved} (its data.dataset), not CIFAR: "
                         "evaluate it with eval/run_all.py")
    if dataset is not None and dataset != saved:
        raise ValueError(f"--dataset {dataset} disagrees with {checkpoint}, trained on {saved}")
    return saved


def cifar_evaluator(checkpoint: str | Path, out: str | Path, *, dataset: Optional[str] = None,
                    arch: Optional[str] = None, ckpt: Optional[dict] = None,
                    **settings) -> Tuple[Evaluator, str]:
    """(evaluator of the checkpoint with CIFAR's normalisation, its dataset); `settings` go to
    `Evaluator` (batch_size, device, dist, num_threads, progress, ...); `ckpt`: the file
    already read, else it is read here, once. Checked before any inference: a writable `out`
    whose results, if any, are this checkpoint's."""
    from dali_pixmix.checkpoint import read_checkpoint
    from dali_pixmix.evaluation.report import check_one_model, read_results
    from dali_pixmix.oserrors import check_writable

    ckpt = read_checkpoint(checkpoint) if ckpt is None else ckpt
    dataset = checkpoint_dataset(checkpoint, dataset, ckpt)
    check_writable(out, "--out")
    ev = Evaluator.from_checkpoint(checkpoint, out, arch=arch, resizes=False,  # 32 px as is
                                   normalisation=(CIFAR_MEAN, CIFAR_STD), ckpt=ckpt, **settings)
    check_one_model(read_results(out), out, ev.weights, ev.checkpoint)
    return ev, dataset


# --------------------------------------------------------------------------- the data
def discover_sets(root: str | Path, dataset: str) -> Dict[str, object]:
    """The C / C-bar / P folders under `root` by the reference's names (CIFAR-10-C,
    CIFAR-10-C-Bar or -C-bar, CIFAR-10-P; CIFAR-100-...) as "c", "cbar", "p", and "ood": the
    folders under root/ood/ by name."""
    root = Path(root)
    found: Dict[str, object] = {}
    for key, options in suite_folder_names(dataset).items():
        hit = next((root / n for n in options if (root / n).is_dir()), None)
        if hit is not None:
            found[key] = str(hit)
    if (root / "ood").is_dir():
        found["ood"] = {p.name: str(p) for p in subfolders(root / "ood")}
    return found


def open_suite(dataset: str, classes: Sequence[str], suite: CifarSuite) -> OpenedSuite:
    """Read the test split and open every configured set, checking all of them (layouts,
    lengths, labels against the model's classes) before any inference."""
    test = read_cifar(suite.root, dataset, "test")
    if len(test.classes) != len(classes):  # (read_cifar refuses labels beyond its classes)
        raise CifarDataError(f"{test.folder / test.layout.meta} names {len(test.classes)} classes "
                             f"but the checkpoint's model has {len(classes)}: evaluate a "
                             f"{len(test.classes)}-class {dataset} model on this data")
    opened = OpenedSuite(dataset, test)
    if suite.c:
        opened.c = open_cifar_c(suite.c, num_classes=len(classes), extras=True)
    if suite.cbar:
        opened.cbar = open_cifar_cbar(suite.cbar, num_classes=len(classes))
    if suite.p:
        opened.p = open_cifar_p(suite.p, cm.CIFAR_P_PERTURBATIONS + cm.CIFAR_P_EXTRAS,
                                suite.p_difficulty)
    clash = sorted(set(suite.ood) & set(SYNTHETIC_SETS)) if suite.synthetic_ood else []
    if clash:
        raise ValueError(f"OOD set names {clash} clash with the generated sets; rename them")
    opened.ood_files = {name: datasets.image_set(path) for name, path in suite.ood.items()}
    other = next(d for d in DATASETS if d != dataset)
    if suite.near_ood and any((Path(suite.root) / lay.folder).is_dir() for lay in LAYOUTS
                              if lay.dataset == other):
        opened.near = (other, read_cifar(suite.root, other, "test"))
    return opened


def _read_picture(path: str, size: int) -> np.ndarray:
    """torchvision's Resize(size) (shorter side, bilinear) + CenterCrop(size) of a picture."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: cannot read it as a picture ({err}); remove it from the OOD "
                         "set") from None
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    scaled = int(size * long / short)
    img = img.resize((size, scaled) if w <= h else (scaled, size), Image.BILINEAR)
    w, h = img.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def read_pictures(files: Sequence[str], size: int = SIZE, threads: int = 2,
                  progress: bool = True, desc: str = "pictures") -> np.ndarray:
    """uint8 [N, size, size, 3]: each file resized (shorter side) and centre-cropped to `size`,
    as the reference's OOD loaders (torchvision Resize + CenterCrop)."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        pictures = list(tqdm(pool.map(partial(_read_picture, size=size), files), total=len(files),
                             desc=desc, unit="img", leave=False, disable=not progress))
    return np.stack(pictures) if pictures else np.zeros((0, size, size, 3), np.uint8)


def preprocessing(ev: Evaluator) -> str:
    """The rows' preprocessing label: pictures fed at 32 px as they are, and the normalisation."""
    mean, std = (",".join(f"{v:g}" for v in part) for part in ev.normalisation)
    return f"cifar:32px-as-is,mean={mean},std={std}"


# --------------------------------------------------------------------------- tasks
def _part(preds: Predictions, cut: slice) -> Predictions:
    return Predictions(**{f: getattr(preds, f)[cut] for f in FIELDS})


def run_cifar_clean(ev: Evaluator, opened: OpenedSuite,
                    bin_size: int = 100) -> Tuple[List[Row], Predictions]:
    """(rows, predictions) of the clean test split; the reliability diagram on rank 0."""
    preds = ev.predict_arrays(opened.test.images, opened.test.labels, task="cifar_clean",
                              cell="test", desc=f"{opened.dataset} test")
    base = dict(task="cifar_clean", dataset=f"{opened.dataset}_test", protocol=preprocessing(ev))
    rows = classification_rows(ev, preds, base, bin_size, top5=True)
    if ev.dist.is_main and ev.out is not None:
        from dali_pixmix.evaluation.report import plot_reliability
        from dali_pixmix.metrics.calibration import reliability_bins

        plot_reliability(reliability_bins(preds.confidence, preds.correct),
                         ev.out / "plots" / "reliability_clean.png",
                         title=f"Reliability diagram, {opened.dataset} test",
                         protocol=base["protocol"])
    return rows, preds


def run_corruption_set(ev: Evaluator, arrays: CorruptionArrays, dataset: str, task: str,
                       names: Sequence[str], bin_size: int = 100) -> List[Row]:
    """Rows of a CIFAR-C (`names` = the 15) or C-bar (the 10) folder; see the module doc."""
    label, ds = f"{cm.C_PROTOCOL};{preprocessing(ev)}", f"{dataset}_{task.split('_')[1]}"
    n, rows, errors = arrays.per_severity, [], {}
    for corruption in ev.progress_over(arrays.files, desc=task):
        preds = ev.predict_arrays(arrays.images(corruption), arrays.labels, task=task,
                                  cell=corruption)
        for s in range(1, cm.SEVERITIES + 1):
            base = dict(task=task, dataset=ds, variant=corruption, severity=s, protocol=label)
            rows += classification_rows(ev, _part(preds, slice((s - 1) * n, s * n)), base,
                                        bin_size)
        errors[corruption] = cm.severity_errors(preds.correct)
        rows.append(row(task, ds, "error", 100 * errors[corruption].mean(), len(preds), label,
                        variant=corruption))
    found = [c for c in names if c in errors]
    if not found:
        return rows
    variant = "mean" if len(found) == len(names) else \
        f"partial: {len(found)} of {len(names)} corruptions"
    for s in range(1, cm.SEVERITIES + 1):
        rows.append(row(task, ds, "error", 100 * np.mean([errors[c][s - 1] for c in found]),
                        n * len(found), label, variant=variant, severity=s))
    rms = mean_rms(rows, found)
    rows.append(row(task, ds, "mean_error", cm.cifar_c_error(errors, found), 5 * n * len(found),
                    label, variant=variant))
    if rms is not None:
        rows.append(row(task, ds, "rms", rms, 5 * n * len(found), label, variant=variant))
    return rows


def run_cifar_p(ev: Evaluator, arrays: PerturbationArrays, dataset: str) -> List[Row]:
    """Flip probability and top-5 distance per perturbation, mFR and mT5D (unnormalised)."""
    d, ds = arrays.difficulty, f"{dataset}_p"
    label = f"{cm.P_PROTOCOL},difficulty={d};{preprocessing(ev)}"
    fps, t5ds, rows = {}, {}, []
    for name in ev.progress_over(arrays.files, desc="cifar_p"):
        videos = arrays.videos(name)
        count, frames = videos.shape[:2]
        preds = ev.predict_arrays(videos.reshape(count * frames, *videos.shape[2:]),
                                  np.zeros(count * frames, np.int64), task="cifar_p",
                                  cell=perturbation_file(name, d))
        top5 = preds.top5.reshape(count, frames, -1)
        fps[name] = pm.flip_probability(top5[..., 0], pm.is_noise(name), d)
        t5ds[name] = pm.top5_distance(top5, pm.is_noise(name), d)
        rows += [row("cifar_p", ds, "flip_prob", 100 * fps[name], count, label, name, d),
                 row("cifar_p", ds, "ut5d_ranks", t5ds[name], count, label, name, d)]
    found = [p for p in cm.CIFAR_P_PERTURBATIONS if p in fps]
    if found:
        total = len(cm.CIFAR_P_PERTURBATIONS)
        variant = "mean" if len(found) == total else \
            f"partial: {len(found)} of {total} perturbations"
        videos = sum(r.n for r in rows if r.metric == "flip_prob" and r.variant in found)
        rows += [row("cifar_p", ds, "mfr", cm.cifar_p_mfr(fps, found), videos, label, variant),
                 row("cifar_p", ds, "mt5d_ranks", cm.cifar_p_mt5d(t5ds, found), videos, label,
                     variant)]
    return rows


def run_cifar_ood(ev: Evaluator, opened: OpenedSuite, inside: Predictions,
                  suite: CifarSuite) -> List[Row]:
    """Anomaly detection against the clean test predictions; see the module doc."""
    far: List[Row] = []
    for name, files in ev.progress_over(list(opened.ood_files.items()), desc="cifar ood"):
        pictures = read_pictures(files, SIZE, ev.num_threads, ev.progress, desc=name)
        preds = ev.predict_arrays(pictures, np.zeros(len(pictures), np.int64), task="cifar_ood",
                                  cell=name)
        far += ood_rows(inside, preds, name, task="cifar_ood")
    if suite.synthetic_ood:
        far += synthetic_ood_rows(ev, inside, SIZE, suite.seed, suite.synthetic_count,
                                  task="cifar_ood")
    rows = far + ood_mean_rows(far, task="cifar_ood")
    if opened.near is not None:
        other, split = opened.near
        preds = ev.predict_arrays(split.images, np.zeros(len(split), np.int64), task="cifar_ood",
                                  cell=f"near_{other}", desc=f"{other} test")
        rows += ood_rows(inside, preds, other, task="cifar_ood", protocol=OOD_PROTOCOL + NEAR_OOD)
    return rows


# --------------------------------------------------------------------------- the suite
def _finish(ev: Evaluator, dataset: str, task: str, rows: Sequence[Row], name: str) -> None:
    """Rank 0: write the task's rows, refresh the report, print a one-line summary."""
    from dali_pixmix.evaluation.cifar_report import summary_line, write_cifar_report
    from dali_pixmix.evaluation.report import write_rows

    if not ev.dist.is_main or ev.out is None:
        return
    paths = write_rows(list(rows), ev.out / "results", task, ev.model_fields())
    table = write_cifar_report(ev.out, dataset, name, num_classes=len(ev.classes))
    print(f"{task}: {summary_line(rows)} -> {paths[0]}, {table}", flush=True)


def run_cifar_suite(ev: Evaluator, dataset: str, suite: CifarSuite,
                    name: str = "this model") -> CifarResult:
    """Every configured task of the suite on `ev`'s model (all ranks call it); rank 0 writes
    `<out>/results/<task>.json|csv`, the Table 7 (CIFAR-100) / Table 8 (CIFAR-10) report and
    the plots. Returns the rows and the table's markdown (on every rank)."""
    from dali_pixmix.evaluation.cifar_report import cifar_table_markdown, report_path

    opened = open_suite(dataset, ev.classes, suite)  # every input checked before inference
    rows, inside = run_cifar_clean(ev, opened, suite.bin_size)
    _finish(ev, dataset, "cifar_clean", rows, name)
    tasks = {
        "cifar_c": lambda: run_corruption_set(ev, opened.c, dataset, "cifar_c",
                                              cm.CIFAR_C_CORRUPTIONS, suite.bin_size),
        "cifar_cbar": lambda: run_corruption_set(ev, opened.cbar, dataset, "cifar_cbar",
                                                 cm.CIFAR_CBAR_CORRUPTIONS, suite.bin_size),
        "cifar_p": lambda: run_cifar_p(ev, opened.p, dataset),
        "pgd": lambda: run_pgd_arrays(ev, opened.test.images, opened.test.labels,
                                      f"{dataset}_test", suite.pgd, preprocessing(ev)),
        "cifar_ood": lambda: run_cifar_ood(ev, opened, inside, suite)}
    wanted = {"cifar_c": opened.c, "cifar_cbar": opened.cbar, "cifar_p": opened.p,
              "pgd": suite.pgd, "cifar_ood": opened.ood_files or suite.synthetic_ood or
              opened.near}
    for task, run in tasks.items():
        if wanted[task]:
            ev.log(f"== {task}")
            task_rows = run()
            _finish(ev, dataset, task, task_rows, name)
            rows += task_rows
    table = report_path(ev.out, dataset) if ev.out is not None else None
    return CifarResult(rows, cifar_table_markdown(rows, dataset, name, len(ev.classes)), table)


def evaluate_cifar_checkpoint(checkpoint: str | Path, out: str | Path, suite: CifarSuite, *,
                              name: str = "this model", dataset: Optional[str] = None,
                              arch: Optional[str] = None, **settings) -> CifarResult:
    """`run_cifar_suite` on a checkpoint file (e.g. a training run's final.pt)."""
    ev, dataset = cifar_evaluator(checkpoint, out, dataset=dataset, arch=arch, **settings)
    return run_cifar_suite(ev, dataset, suite, name)
