"""Synthetic data: a learnable ImageNet-style class-folder tree and procedural fractal pictures.

Conventions: images are uint8 numpy arrays in HWC RGB order. All randomness comes from an explicit
``numpy.random.Generator``; writers derive one generator per file from ``(seed, split, class, i)``
so any file can be regenerated on its own and the output is identical for a given seed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from dali_pixmix.classes import imagenet_wnids

GOLDEN = 0.6180339887498949
MARKER_NAME = ".complete.json"
FORMAT_VERSION = 1

# --------------------------------------------------------------------------------------------
# Colour helpers
# --------------------------------------------------------------------------------------------


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB; inputs in [0, 1] (hue wraps), output float [..., 3] in [0, 1]."""
    h = np.mod(h, 1.0) * 6.0
    i = np.floor(h).astype(np.int64) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices_r = [v, q, p, p, t, v]
    choices_g = [t, v, v, q, p, p]
    choices_b = [p, p, t, v, v, q]
    r = np.choose(i, choices_r)
    g = np.choose(i, choices_g)
    b = np.choose(i, choices_b)
    return np.stack([r, g, b], axis=-1)


def class_hue(class_idx: int) -> float:
    """Hue centre of a class: golden-ratio spacing keeps neighbouring classes far apart."""
    return (class_idx * GOLDEN) % 1.0


# --------------------------------------------------------------------------------------------
# Learnable synthetic objects
# --------------------------------------------------------------------------------------------

SHAPES = ("disc", "square", "triangle", "star", "ring", "cross")
TEXTURES = ("stripes", "dots", "checker", "rings")


def _shape_field(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A field that is <= 1 inside the unit-size shape (object frame coordinates u, v)."""
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    if shape == "disc":
        return r
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) / 0.8
    if shape == "triangle":
        # Equilateral triangle: max over the three edge normals.
        angles = np.array([np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3])
        proj = [-(u * np.cos(a) + v * np.sin(a)) for a in angles]
        return np.maximum.reduce(proj) / 0.5
    if shape == "star":
        return r / (0.6 + 0.4 * np.cos(5 * theta))
    if shape == "ring":
        return np.maximum(r, 1.55 - r)  # annulus 0.55 <= r <= 1
    if shape == "cross":
        arm = np.minimum(np.abs(u), np.abs(v)) / 0.3
        return np.maximum(np.maximum(np.abs(u), np.abs(v)) / 0.9, arm)
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture: str, u: np.ndarray, v: np.ndarray, freq: float) -> np.ndarray:
    """Brightness modulation in [0, 1] in the object frame (scales with the object)."""
    w = 2 * np.pi * freq
    if texture == "stripes":
        return 0.5 + 0.5 * np.sign(np.sin(w * u))
    if texture == "dots":
        return ((np.sin(w * u) * np.sin(w * v)) > 0.35).astype(np.float64)
    if texture == "checker":
        return 0.5 + 0.5 * np.sign(np.sin(w * u) * np.sin(w * v))
    if texture == "rings":
        return 0.5 + 0.5 * np.sign(np.sin(w * np.hypot(u, v)))
    raise ValueError(f"unknown texture {texture!r}")


def _background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Smooth low-saturation gradient with a low-frequency ripple: no class information."""
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy + 1.0) / 2.0
    t = t + 0.08 * np.sin(rng.uniform(1, 4) * np.pi * (xx + yy) + rng.uniform(0, 2 * np.pi))
    c0 = hsv_to_rgb(*(np.array(rng.uniform([0, 0, 0.2], [1, 0.35, 0.95]))))
    c1 = hsv_to_rgb(*(np.array(rng.uniform([0, 0, 0.2], [1, 0.35, 0.95]))))
    t = np.clip(t, 0, 1)[..., None]
    return c0 * (1 - t) + c1 * t


def synthetic_object_image(class_idx: int, rng: np.random.Generator, height: int,
                           width: int) -> np.ndarray:
    """Draw one picture of class ``class_idx``: uint8 [height, width, 3] RGB.

    The class fixes three cues that survive random-resized-crop and flip: the shape family
    (``SHAPES[c % 6]``), the texture (``TEXTURES[(c // 6) % 4]``; the pair is unique for c < 24)
    and a hue band centred on ``class_hue(c)``. Position, size, rotation, texture frequency,
    saturation, brightness and the background gradient are random nuisances.
    """
    if class_idx < 0:
        raise ValueError(f"class_idx must be >= 0, got {class_idx}")
    shape = SHAPES[class_idx % len(SHAPES)]
    texture = TEXTURES[(class_idx // len(SHAPES)) % len(TEXTURES)]
    scale = min(height, width) / 2.0
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    yy, xx = (yy - height / 2) / scale, (xx - width / 2) / scale
    image = _background(rng, yy, xx)

    cx, cy = rng.uniform(-0.25, 0.25, size=2) * np.array([width / scale, height / scale]) / 2
    radius = rng.uniform(0.55, 0.85)
    rot = rng.uniform(0, 2 * np.pi)
    du, dv = (xx - cx) / radius, (yy - cy) / radius
    u = np.cos(rot) * du + np.sin(rot) * dv
    v = -np.sin(rot) * du + np.cos(rot) * dv
    field = _shape_field(shape, u, v)
    edge = 1.5 / (radius * scale)  # about 1.5 px soft edge
    alpha = np.clip((1.0 - field) / edge, 0.0, 1.0)[..., None]

    tex = _texture(texture, u, v, freq=rng.uniform(2.5, 3.5))
    hue = class_hue(class_idx) + rng.uniform(-0.012, 0.012)  # < half the closest gap (0.034)
    sat = rng.uniform(0.7, 1.0)
    val = rng.uniform(0.75, 1.0) * (0.45 + 0.55 * tex)
    obj = hsv_to_rgb(np.full_like(val, hue), np.full_like(val, sat), val)
    image = image * (1 - alpha) + obj * alpha
    image = image + rng.normal(0, 0.015, size=image.shape)  # sensor-like grain
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Synthetic ImageNet-style class-folder tree
# --------------------------------------------------------------------------------------------


def _dataset_params(num_classes, train_per_class, val_per_class, seed, min_size, max_size,
                    wnids) -> dict:
    return {"format": FORMAT_VERSION, "num_classes": num_classes,
            "train_per_class": train_per_class, "val_per_class": val_per_class, "seed": seed,
            "min_size": min_size, "max_size": max_size, "wnids": list(wnids)}


def _check_dataset_args(num_classes, train_per_class, val_per_class, min_size, max_size, wnids):
    if num_classes < 1 or train_per_class < 0 or val_per_class < 0:
        raise ValueError("num_classes must be >= 1 and per-class counts >= 0")
    if not 8 <= min_size <= max_size:
        raise ValueError(f"need 8 <= min_size <= max_size, got {min_size}, {max_size}")
    if len(wnids) != num_classes or len(set(wnids)) != num_classes:
        raise ValueError(f"need {num_classes} distinct wnids, got {len(wnids)} "
                         f"({len(set(wnids))} distinct)")


def read_marker(root: Path) -> Optional[dict]:
    """The settings a generated folder was made with (its `MARKER_NAME`), None without one."""
    marker = root / MARKER_NAME
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except json.JSONDecodeError:
        return None


def write_marker(root: Path, params: dict) -> None:
    """Mark `root` as complete, made with `params` (written last: a cut run leaves none)."""
    (root / MARKER_NAME).write_text(json.dumps(params, indent=1))


def _refuse_foreign_tree(root: Path, params: dict) -> None:
    """Never mix two datasets in one folder: stale classes would silently become extra labels."""
    old = read_marker(root)
    if old is not None and old != params:
        raise ValueError(f"{root} holds a synthetic dataset made with other parameters "
                         f"({root / MARKER_NAME}); delete it or choose another root")
    for split in ("train", "val"):
        split_dir = root / split
        if split_dir.is_dir():
            extra = sorted(p.name for p in split_dir.iterdir()
                           if p.is_dir() and p.name not in params["wnids"])
            if extra:
                raise ValueError(f"{split_dir} contains folders that are not among the requested "
                                 f"classes ({extra[:3]}...); delete it or choose another root")


def _image_size(rng: np.random.Generator, min_size: int, max_size: int):
    """Independent height and width: sizes AND aspect ratios vary."""
    h, w = rng.integers(min_size, max_size + 1, size=2)
    return int(h), int(w)


def make_synthetic_imagenet(root, num_classes: int = 10, train_per_class: int = 40,
                            val_per_class: int = 10, seed: int = 0, min_size: int = 64,
                            max_size: int = 160, wnids: Optional[Sequence[str]] = None,
                            progress: bool = True) -> Path:
    """Write ``root/{train,val}/<wnid>/<wnid>_<i>.JPEG`` (JPEG quality 90) and return ``root``.

    Class ``k`` is ``wnids[k]`` (default: the first ``num_classes`` ImageNet wnids, so the
    lexicographic folder order equals the class index). A marker ``root/.complete.json`` with the
    parameters is written last; a later call with the same parameters returns at once.
    """
    root = Path(root)
    wnids = list(wnids) if wnids is not None else list(imagenet_wnids()[:num_classes])
    _check_dataset_args(num_classes, train_per_class, val_per_class, min_size, max_size, wnids)
    if sorted(wnids) != wnids:
        raise ValueError("wnids must be sorted so folder order matches class indices")
    params = _dataset_params(num_classes, train_per_class, val_per_class, seed, min_size,
                             max_size, wnids)
    if read_marker(root) == params:
        return root
    _refuse_foreign_tree(root, params)
    jobs = [(split_id, split, k, i) for split_id, (split, count) in
            enumerate((("train", train_per_class), ("val", val_per_class)))
            for k in range(num_classes) for i in range(count)]
    for split_id, split, k, i in tqdm(jobs, desc="synthetic imagenet", disable=not progress):
        rng = np.random.default_rng([seed, split_id, k, i])
        h, w = _image_size(rng, min_size, max_size)
        folder = root / split / wnids[k]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = synthetic_object_image(k, rng, h, w)
        Image.fromarray(pixels).save(folder / f"{wnids[k]}_{i}.JPEG", quality=90)
    write_marker(root, params)
    return root
