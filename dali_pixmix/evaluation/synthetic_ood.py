"""Seeded synthetic anomaly sets (Gaussian, Rademacher, Blobs), generated locally.

The evaluation draws them in memory (`synthetic_batch`); `write_synthetic_set` writes the same
images as PNG files for inspection or for other tools.

Definitions follow the outlier-exposure / PixMix anomaly code, which draws them in the
normalised range [-1, 1] and maps them to pixels as (x + 1) / 2:
  gaussian    x = clip(N(0, 0.5^2), -1, 1) per pixel and channel
  rademacher  x = +-1 with probability 1/2 per pixel and channel
  blobs       b ~ Bernoulli(0.7) per pixel and channel, Gaussian-blurred (sigma 1.5 at 32 px,
              scaled with the image size), values < 0.75 set to 0, then x = 2 b - 1
Image i of set s is drawn from numpy's Generator seeded with (seed, s, i), so a set is identical
on every machine and any image can be regenerated alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import torch
from PIL import Image

SYNTHETIC_SETS = ("gaussian", "rademacher", "blobs")


def _blur(planes: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of [C, H, W] planes with reflect padding."""
    radius = max(1, int(round(4 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).float()
    t = torch.from_numpy(planes).float().unsqueeze(1)  # [C, 1, H, W]
    t = torch.nn.functional.pad(t, (radius, radius, radius, radius), mode="reflect")
    t = torch.nn.functional.conv2d(t, kernel.view(1, 1, 1, -1))
    t = torch.nn.functional.conv2d(t, kernel.view(1, 1, -1, 1))
    return t.squeeze(1).numpy()


def synthetic_image(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One HWC uint8 image of the given kind."""
    shape = (3, size, size)
    if kind == "gaussian":
        x = np.clip(rng.normal(0.0, 0.5, size=shape), -1, 1)
    elif kind == "rademacher":
        x = rng.integers(0, 2, size=shape) * 2.0 - 1.0
    elif kind == "blobs":
        b = _blur(rng.binomial(1, 0.7, size=shape).astype(np.float32), 1.5 * size / 32)
        b[b < 0.75] = 0.0
        x = 2.0 * b - 1.0
    else:
        raise ValueError(f"unknown synthetic OOD set '{kind}': choose from {SYNTHETIC_SETS}")
    pixels = np.round((x + 1.0) / 2.0 * 255.0).clip(0, 255).astype(np.uint8)
    return pixels.transpose(1, 2, 0)


def image_rng(kind: str, seed: int, index: int) -> np.random.Generator:
    """The generator of image `index` of set `kind`: seeded with (seed, set number, index)."""
    if kind not in SYNTHETIC_SETS:
        raise ValueError(f"unknown synthetic OOD set '{kind}': choose from {SYNTHETIC_SETS}")
    return np.random.default_rng([seed, SYNTHETIC_SETS.index(kind), index])


def synthetic_batch(kind: str, indices, size: int = 224, seed: int = 0) -> np.ndarray:
    """Images `indices` of set `kind` as uint8 [B, size, size, 3], identical to the PNG files."""
    return np.stack([synthetic_image(kind, size, image_rng(kind, seed, int(i))) for i in indices])


def write_synthetic_set(kind: str, folder: str | Path, count: int, size: int = 224,
                        seed: int = 0) -> List[str]:
    """Write (or reuse) `count` PNGs of `kind` into `folder`; returns the sorted file paths.

    Existing files with the expected names are reused, so a rerun costs nothing; change the
    folder when changing size or seed.
    """
    if count < 1:
        raise ValueError(f"synthetic OOD set '{kind}' needs count >= 1, got {count}")
    image_rng(kind, seed, 0)  # validates the name before touching the disk
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        path = folder / f"{kind}_{i:06d}.png"
        if not path.is_file():
            tmp = path.with_name(path.stem + ".tmp.png")
            Image.fromarray(synthetic_image(kind, size, image_rng(kind, seed, i))).save(tmp)
            tmp.replace(path)
        files.append(str(path))
    return files
