"""PGD adversarial error as an evaluation task: the PixMix paper's "Adversaries" column (CIFAR),
and the same attack on ImageNet val (the paper leaves it out there: the error goes to ~100%).

The attack is `metrics.adversarial.pgd_linf` (untargeted l-inf, summed cross-entropy, random
uniform start, projection after every step) on the evaluator's model behind `PixelSpaceModel`
with the evaluator's normalisation, so it works in [0, 1] pixel space. It runs in float32 with
no autocast (a half-precision input gradient can lose the sign of small entries), and so does
the classification of the adversaries. The start noise is drawn PER IMAGE: image i's U[-eps,
eps] values come from numpy's generator seeded with (seed, i), so a result depends neither on
the batch size nor on the number of ranks (the reference draws one tensor per batch). Pixels:
CIFAR arrays as they are (/ 255); ImageNet val images from the evaluation loader (Resize +
CenterCrop), turned back into [0, 1] pixels from its normalised output (in float16 on a GPU:
within 0.06 / 255 of the 8-bit values).

Rows: task "pgd", dataset e.g. "cifar10_test" or "imagenet_val", metric "error" (top-1 error on
the adversaries, percent), protocol `PgdSettings.protocol` (epsilon, steps, step, ball, seed,
the subset when `count` is set) + the preprocessing. Predictions are cached like every cell
(`Evaluator.predict_with`), so a rerun costs nothing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from dali_pixmix.data.normalise import IMAGENET_MEAN, IMAGENET_STD, imagenet_mean_std
from dali_pixmix.distributed import all_gather_objects
from dali_pixmix.evaluation import cache
from dali_pixmix.evaluation.report import Row, row
from dali_pixmix.evaluation.runner import (
    TABLE_COLUMNS,
    Evaluator,
    InFlight,
    Predictions,
    batch_tensors,
    to_predictions,
)
from dali_pixmix.metrics.adversarial import (
    BALLS,
    PGD_EPSILON,
    PGD_STEP_SIZE,
    PGD_STEPS,
    PixelSpaceModel,
    pgd_linf,
    pgd_protocol,
)

__all__ = ["TASK", "PgdSettings", "parse_fraction", "start_noise", "subset_indices",
           "run_pgd_arrays", "run_pgd_imagenet"]

TASK = "pgd"
Batch = Tuple[torch.Tensor, torch.Tensor, np.ndarray]  # pixels [B,3,H,W] in [0,1], labels, indices


def parse_fraction(text: str, flag: str) -> float:
    """'2/255' or '0.0078' -> a float in [0, 1] pixel units; a one-line error naming `flag`."""
    try:
        numerator, _, denominator = str(text).strip().partition("/")
        value = float(numerator) / float(denominator or 1)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{flag} expects a number or a fraction such as 2/255, got '{text}'"
                         ) from None
    if not 0 <= value <= 1:
        raise ValueError(f"{flag} is in [0, 1] pixel units (e.g. 2/255), got {text}")
    return value


@dataclass(frozen=True)
class PgdSettings:
    """One PGD setting (the paper's by default) and the images it attacks."""
    epsilon: float = PGD_EPSILON
    steps: int = PGD_STEPS
    step_size: float = PGD_STEP_SIZE
    ball: str = "clean"            # "reference": the reference code's projection (see metrics)
    seed: int = 0                  # of the per-image start noise
    count: Optional[int] = None    # attack this many evenly spaced images (None: all)

    def __post_init__(self):
        if self.ball not in BALLS:
            raise ValueError(f"--pgd-ball must be one of {BALLS}, got '{self.ball}'")
        if self.steps < 1 or self.epsilon < 0 or self.step_size < 0:
            raise ValueError(f"--pgd-steps must be >= 1 and --pgd-epsilon, --pgd-step-size >= 0, "
                             f"got {self.steps}, {self.epsilon}, {self.step_size}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"--pgd-count must be >= 1, got {self.count}")

    def protocol(self, total: int) -> str:
        """The rows' label, e.g. 'pgd-linf:eps=2/255,...,seed=0,start-noise-per-image,fp32'."""
        label = (pgd_protocol(self.epsilon, self.steps, self.step_size, self.ball) +
                 f",seed={self.seed},start-noise-per-image,fp32")
        if self.count is not None and self.count < total:
            label += f",subset={self.count}-of-{total}-evenly-spaced"
        return label


def subset_indices(total: int, count: Optional[int]) -> np.ndarray:
    """All indices, or `count` evenly spaced ones (first and last included)."""
    if count is None or count >= total:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, count).round().astype(np.int64))


def start_noise(indices: Sequence[int], shape: Tuple[int, ...], epsilon: float,
                seed: int) -> torch.Tensor:
    """float32 [len(indices), *shape] U[-epsilon, epsilon]: image i's from numpy's generator
    seeded with (seed, i), whatever batch or rank it falls in."""
    return torch.from_numpy(np.stack([
        np.random.default_rng([seed, int(i)]).uniform(-epsilon, epsilon, shape)
        for i in indices]).astype(np.float32)) if len(indices) else torch.zeros(0, *shape)


def _attack(ev: Evaluator, batches: Iterator[Batch], settings: PgdSettings,
            desc: str) -> Predictions:
    """This rank's predictions on the adversaries of its `batches` (model in eval mode, float32,
    its previous mode restored)."""
    mean, std = ev.normalisation
    tables, seen = [torch.zeros(0, TABLE_COLUMNS, device=ev.dist.device)], []
    with ev.eval_mode():  # the wrapper takes the model's (eval) mode, which pgd_linf restores
        pixel_model = PixelSpaceModel(ev.model, mean, std).to(ev.dist.device)
        for pixels, labels, indices in tqdm(batches, desc=desc, leave=False, unit="batch",
                                            disable=not ev.progress):
            noise = start_noise(indices, tuple(pixels.shape[1:]), settings.epsilon,
                                settings.seed).to(pixels.device)
            adversaries = pgd_linf(pixel_model, pixels, labels, epsilon=settings.epsilon,
                                   steps=settings.steps, step_size=settings.step_size,
                                   start_noise=noise, ball=settings.ball)
            with torch.no_grad():
                tables.append(batch_tensors(pixel_model(adversaries), labels))
            seen.append(labels.cpu())
    labels = torch.cat(seen) if seen else torch.zeros(0, dtype=torch.long)
    return to_predictions(torch.cat(tables), labels)


def _array_batches(ev: Evaluator, images: np.ndarray, labels: np.ndarray,
                   indices: np.ndarray) -> Iterator[Batch]:
    """This rank's images of `indices` (its contiguous share) as [0, 1] pixel batches."""
    dev, step = ev.dist.device, ev.rank_batch_size
    for start in range(0, len(indices), step):
        chosen = indices[start:start + step]
        pixels = torch.from_numpy(np.array(images[chosen], dtype=np.uint8)).to(dev)
        pixels = pixels.permute(0, 3, 1, 2).float() / 255
        if ev.gpu:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        yield pixels, torch.from_numpy(labels[chosen]).to(dev), chosen


def _gathered(local: Predictions) -> Predictions:
    return Predictions.concat(all_gather_objects(local))


def run_pgd_arrays(ev: Evaluator, images: np.ndarray, labels, dataset: str,
                   settings: PgdSettings, preprocessing: str = "as-is") -> List[Row]:
    """PGD error on uint8 pictures `images` [N, H, W, 3] (an array or a memory map, e.g. the
    CIFAR test split) with `labels` [N]."""
    labels = np.array(labels, dtype=np.int64).reshape(-1)
    chosen = subset_indices(len(labels), settings.count)
    start, stop = ev.rank_range(len(chosen))
    key = (asdict(settings), cache.array_identity(images), cache.array_identity(labels))
    preds = ev.predict_with(
        lambda: _gathered(_attack(ev, _array_batches(ev, images, labels, chosen[start:stop]),
                                  settings, f"pgd {dataset}")),
        labels[chosen], task=TASK, cell=dataset, key=key)
    return pgd_rows(preds, dataset, settings, len(labels), preprocessing)


def _loader_batches(ev: Evaluator, loader, first: int, chosen: np.ndarray) -> Iterator[Batch]:
    """The evaluation loader's normalised batches as [0, 1] pixels (ImageNet mean/std undone);
    `chosen[first + k]` is the original index of the k-th image this rank reads."""
    dev = ev.dist.device
    mean, std = imagenet_mean_std(dev, torch.float32, 1.0)
    in_flight, position = InFlight(dev), first  # DALI's batches outlive the work queued on them
    for images, labels in loader:
        pixels = (images.float() * std + mean).clamp_(0, 1)
        labels = labels.to(torch.long, copy=True)
        in_flight.hold(images)
        yield pixels, labels, chosen[position:position + len(labels)]
        position += len(labels)


def run_pgd_imagenet(ev: Evaluator, val_root: str, settings: PgdSettings) -> List[Row]:
    """PGD error on the ImageNet val images under `val_root` (<wnid>/<image>), Resize +
    CenterCrop as the clean task."""
    from dali_pixmix.evaluation import datasets
    from dali_pixmix.evaluation.tasks import preprocessing

    if ev.normalisation != (IMAGENET_MEAN, IMAGENET_STD):
        raise ValueError("ImageNet PGD reads the evaluation loader, which normalises with "
                         f"ImageNet's mean/std, but this evaluator uses {ev.normalisation}")
    images = datasets.class_tree(val_root, name="ImageNet val")
    labels = np.asarray(images.labels(ev.classes), dtype=np.int64)
    chosen = subset_indices(len(labels), settings.count)
    files = [images.files[i] for i in chosen]
    ev.screen(files, "validation image")
    first, _ = ev.rank_range(len(chosen))

    def compute() -> Predictions:
        loader = ev.loader(files, labels[chosen], what="validation image")
        return _gathered(_attack(ev, _loader_batches(ev, loader, first, chosen), settings,
                                 "pgd imagenet_val"))

    key = (asdict(settings), ev.resize, ev.crop, files, labels[chosen].tolist())
    preds = ev.predict_with(compute, labels[chosen], task=TASK, cell="imagenet_val", key=key)
    return pgd_rows(preds, "imagenet_val", settings, len(labels), preprocessing(ev))


def pgd_rows(preds: Predictions, dataset: str, settings: PgdSettings, total: int,
             preprocessing: str) -> List[Row]:
    """The adversarial top-1 error row."""
    return [row(TASK, dataset, "error", 100 * (1 - preds.correct.mean()), len(preds),
                f"{settings.protocol(total)};{preprocessing}")]
