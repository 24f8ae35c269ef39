"""Small generated CIFAR data: train/test in both official formats and CIFAR-C, C-bar and P sets.

For tests and the CPU demo, without downloads. `make_synthetic_cifar_suite(root, "cifar10")`
writes, under `root`:
  cifar-10-batches-py/, cifar-10-batches-bin/   the same pictures in both official formats
                                                (`data.cifar.write_cifar`)
  CIFAR-10-C/        <corruption>.npy + labels.npy, 5 severities of the test split
  CIFAR-10-C-Bar/    the same layout, C-bar corruptions
  CIFAR-10-P/        <perturbation>.npy [test images, frames, 32, 32, 3]
(CIFAR-100: cifar-100-python/, cifar-100-binary/, CIFAR-100-C/, ...: the reference's names).

Pictures: `data.synthetic.synthetic_object_image` at 32 px: the class fixes a shape, a texture
and a hue band, so a small network learns it in minutes (distinct classes up to 24; more share
shapes and textures and have close hues). Picture i of class k in split s (0 train, 1 test) is
drawn from `numpy.random.default_rng([seed, s, k, i])`; the splits list the pictures i-major
(0 of every class, then 1, ...), so every prefix is balanced.

The corrupted sets are stand-ins, NOT the released ones (their numbers mean nothing beside the
paper's), made from the test split:
  C      the project's generated corruptions (`synthetic_corruptions.corrupt`: gaussian_noise,
         defocus_blur, contrast, pixelate, jpeg_compression), 5 of the 15: a partial set
  C-bar  two of the reference's corruptions re-implemented simply:
           checkerboard_cutout  black q x q squares on a checkerboard of 8 px cells (random
                                offset), q = 2 3 4 5 6
           lines                `severity` black lines of 1 px between random border points
  P      gaussian_noise  frame 0 clean, then fresh severity-1 gaussian noise on every frame
         brightness      + 0.3 * t / (frames - 1) on every value (clipped)
         translate       frame t shifted t px to the right, the left edge repeated
Noise is drawn from `default_rng([seed, set, index of the corruption, severity or frame, i])`.
Each folder gets a marker `.complete.json` with its settings, written last: a second call with
the same settings costs nothing, and a folder holding other data is never overwritten.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from dali_pixmix.data.cifar import (
    FORMATS,
    NUM_CLASSES,
    CifarDataError,
    layout,
    write_cifar,
)
from dali_pixmix.data.cifar_c import suite_folder_names
from dali_pixmix.data.synthetic import (
    MARKER_NAME,
    read_marker,
    synthetic_object_image,
    write_marker,
)
from dali_pixmix.evaluation.synthetic_corruptions import CORRUPTIONS, corrupt
from dali_pixmix.metrics.cifar import SEVERITIES

__all__ = ["CIFAR10_CLASSES", "CBAR_STANDINS", "P_STANDINS", "MARKER_NAME", "suite_folders",
           "synthetic_class_names", "synthetic_split", "make_synthetic_cifar",
           "make_synthetic_cifar_c", "make_synthetic_cifar_cbar", "make_synthetic_cifar_p",
           "make_synthetic_cifar_suite", "checkerboard_cutout", "lines", "perturbation_frames"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
CBAR_STANDINS = ("checkerboard_cutout", "lines")
P_STANDINS = ("gaussian_noise", "brightness", "translate")
_CUTOUT_CELL = 8
_CUTOUT_SIZE = (2, 3, 4, 5, 6)
_SETS = {"c": 1, "cbar": 2, "p": 3}  # the `set` of the noise seeds


def suite_folders(dataset: str) -> Dict[str, str]:
    """The reference's folder names of the corrupted sets: {"c", "cbar", "p"} -> name."""
    return {key: names[0] for key, names in suite_folder_names(dataset).items()}


def synthetic_class_names(num_classes: int) -> List[str]:
    """CIFAR-10's names for 10 classes, else class_000, class_001, ..."""
    if num_classes == len(CIFAR10_CLASSES):
        return list(CIFAR10_CLASSES)
    return [f"class_{k:03d}" for k in range(num_classes)]


def synthetic_split(num_classes: int, per_class: int, seed: int,
                    split: str) -> Tuple[np.ndarray, np.ndarray]:
    """(uint8 [per_class * num_classes, 32, 32, 3], int64 labels), i-major."""
    split_id = {"train": 0, "test": 1}[split]
    pairs = [(k, i) for i in range(per_class) for k in range(num_classes)]
    images = np.stack([synthetic_object_image(k, np.random.default_rng([seed, split_id, k, i]),
                                              32, 32) for k, i in pairs]) if pairs else \
        np.zeros((0, 32, 32, 3), np.uint8)
    return images, np.array([k for k, _ in pairs], dtype=np.int64)


# --------------------------------------------------------------------------- markers
def _done(folder: Path, params: dict) -> bool:
    """True when `folder` was made with `params`; refuses a folder holding anything else."""
    old = read_marker(folder)
    if old == params:
        return True
    if folder.is_dir() and any(folder.iterdir()):
        made = "generated with other settings" if old is not None else "not generated here"
        raise CifarDataError(f"{folder} already holds data ({made}); delete it or choose "
                             "another root (it is never overwritten)")
    return False


# --------------------------------------------------------------------------- train / test
def make_synthetic_cifar(root: str | Path, dataset: str = "cifar10",
                         formats: Sequence[str] = FORMATS, num_classes: Optional[int] = None,
                         train_per_class: int = 50, test_per_class: int = 10, seed: int = 0,
                         progress: bool = True) -> Path:
    """Write the train and test splits of a generated `dataset` (layout cifar10 | cifar100) in
    each of `formats` under `root`; returns `root`. `num_classes` defaults to 10 / 100."""
    num_classes = num_classes or NUM_CLASSES[dataset]
    if not 2 <= num_classes <= 256 or train_per_class < 1 or test_per_class < 1:
        raise CifarDataError(f"need 2..256 classes and >= 1 picture per class and split, got "
                             f"{num_classes}, {train_per_class}, {test_per_class}")
    root = Path(root)
    params = {"dataset": dataset, "num_classes": num_classes, "train_per_class": train_per_class,
              "test_per_class": test_per_class, "seed": seed}
    todo = [fmt for fmt in formats if not _done(root / layout(dataset, fmt).folder,
                                                  {**params, "format": fmt})]
    if todo:
        splits = {}
        for split, count in tqdm((("train", train_per_class), ("test", test_per_class)),
                                 desc=f"synthetic {dataset}", disable=not progress):
            splits[split] = synthetic_split(num_classes, count, seed, split)
        for fmt in todo:
            folder = write_cifar(root, dataset, fmt, splits, synthetic_class_names(num_classes))
            write_marker(folder, {**params, "format": fmt})
    return root


# --------------------------------------------------------------------------- C-bar stand-ins
def checkerboard_cutout(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Black q x q squares (q = 2..6 by severity) on every other cell of an 8 px checkerboard."""
    out = image.copy()
    size = _CUTOUT_SIZE[severity - 1]
    oy, ox = rng.integers(0, _CUTOUT_CELL, size=2)
    h, w = image.shape[:2]
    for cy, y in enumerate(range(int(oy) - _CUTOUT_CELL, h, _CUTOUT_CELL)):
        for cx, x in enumerate(range(int(ox) - _CUTOUT_CELL, w, _CUTOUT_CELL)):
            if (cy + cx) % 2 == 0:
                out[max(y, 0):max(y + size, 0), max(x, 0):max(x + size, 0)] = 0
    return out


def lines(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """`severity` black 1 px lines between random points on the left and right borders."""
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    h, w = image.shape[:2]
    for _ in range(severity):
        y0, y1 = rng.uniform(0, h - 1, size=2)
        draw.line([(0, float(y0)), (w - 1, float(y1))], fill=(0, 0, 0), width=1)
    return np.asarray(pil)


_CBAR = {"checkerboard_cutout": checkerboard_cutout, "lines": lines}


# --------------------------------------------------------------------------- C and C-bar sets
def _write_corrupted(images: np.ndarray, labels: np.ndarray, out: Path, names: Sequence[str],
                     apply, set_name: str, seed: int, progress: bool) -> Path:
    params = {"set": set_name, "names": list(names), "images": len(images), "seed": seed,
              "labels_sum": int(labels.sum())}
    if _done(out, params):
        return out
    out.mkdir(parents=True, exist_ok=True)
    for c, name in enumerate(tqdm(names, desc=f"synthetic {set_name}", disable=not progress)):
        cells = [apply(image, name, s, np.random.default_rng([seed, _SETS[set_name], c, s, i]))
                 for s in range(1, SEVERITIES + 1) for i, image in enumerate(images)]
        np.save(out / f"{name}.npy", np.stack(cells))
    np.save(out / "labels.npy", np.tile(labels.astype(np.int64), SEVERITIES))
    write_marker(out, params)
    return out


def make_synthetic_cifar_c(images: np.ndarray, labels: np.ndarray, out: str | Path,
                           seed: int = 0, progress: bool = True) -> Path:
    """CIFAR-C layout in `out` from test `images`/`labels`: the project's 5 corruptions."""
    return _write_corrupted(images, labels, Path(out), CORRUPTIONS, corrupt, "c", seed,
                            progress)


def make_synthetic_cifar_cbar(images: np.ndarray, labels: np.ndarray, out: str | Path,
                              seed: int = 0, progress: bool = True) -> Path:
    """CIFAR-C-bar layout in `out`: the stand-ins checkerboard_cutout and lines."""
    return _write_corrupted(images, labels, Path(out), CBAR_STANDINS,
                            lambda x, name, s, rng: _CBAR[name](x, s, rng), "cbar", seed,
                            progress)


# --------------------------------------------------------------------------- P set
def perturbation_frames(image: np.ndarray, perturbation: str, frames: int, seed: int,
                        index: int) -> np.ndarray:
    """uint8 [frames, 32, 32, 3]: the sequence of one stand-in perturbation of `image`."""
    if perturbation == "gaussian_noise":
        noisy = [corrupt(image, "gaussian_noise", 1, np.random.default_rng(
            [seed, _SETS["p"], P_STANDINS.index(perturbation), t, index]))
            for t in range(1, frames)]
        return np.stack([image] + noisy)
    if perturbation == "brightness":
        x = image.astype(np.float64) / 255.0
        steps = [np.clip(x + 0.3 * t / max(frames - 1, 1), 0, 1) for t in range(frames)]
        return np.stack([np.round(s * 255.0).astype(np.uint8) for s in steps])
    if perturbation == "translate":
        padded = np.pad(image, ((0, 0), (frames, 0), (0, 0)), mode="edge")
        width = image.shape[1]
        return np.stack([padded[:, frames - t:frames - t + width] for t in range(frames)])
    raise ValueError(f"no stand-in for perturbation '{perturbation}': choose from {P_STANDINS}")


def make_synthetic_cifar_p(images: np.ndarray, out: str | Path, frames: int = 8, seed: int = 0,
                           progress: bool = True) -> Path:
    """CIFAR-P layout in `out` from test `images`: the stand-in perturbations, `frames` each."""
    if frames < 2:
        raise CifarDataError(f"CIFAR-P sequences need >= 2 frames, got {frames}")
    out = Path(out)
    params = {"set": "p", "names": list(P_STANDINS), "images": len(images), "frames": frames,
              "seed": seed}
    if _done(out, params):
        return out
    out.mkdir(parents=True, exist_ok=True)
    for name in tqdm(P_STANDINS, desc="synthetic p", disable=not progress):
        np.save(out / f"{name}.npy", np.stack([perturbation_frames(x, name, frames, seed, i)
                                               for i, x in enumerate(images)]))
    write_marker(out, params)
    return out


# --------------------------------------------------------------------------- everything
def make_synthetic_cifar_suite(root: str | Path, dataset: str = "cifar10",
                               num_classes: Optional[int] = None, train_per_class: int = 50,
                               test_per_class: int = 10, seed: int = 0, frames: int = 8,
                               corrupted: bool = True, progress: bool = True) -> Dict[str, Path]:
    """Train/test in both formats and (if `corrupted`) the C, C-bar and P stand-ins under
    `root`; returns {"root", "c", "cbar", "p"} -> folder."""
    root = make_synthetic_cifar(root, dataset, FORMATS, num_classes, train_per_class,
                                test_per_class, seed, progress)
    paths = {"root": root}
    if corrupted:
        num_classes = num_classes or NUM_CLASSES[dataset]
        images, labels = synthetic_split(num_classes, test_per_class, seed, "test")
        names = suite_folders(dataset)
        paths["c"] = make_synthetic_cifar_c(images, labels, root / names["c"], seed, progress)
        paths["cbar"] = make_synthetic_cifar_cbar(images, labels, root / names["cbar"], seed,
                                                  progress)
        paths["p"] = make_synthetic_cifar_p(images, root / names["p"], frames, seed, progress)
    return paths
