"""A small seeded corruption set in the ImageNet-C layout, made from a validation folder.

For demos and tests: five of ImageNet-C's corruptions, re-implemented simply, at 5 severities,
written as `<out>/<corruption>/<severity>/<wnid>/<image>.png` so that the evaluation suite's
ImageNet-C task reads it unchanged. Like ImageNet-C, each validation picture is first resized
(shorter side `resize`) and centre-cropped (`crop`), then corrupted. Severity parameters follow
ImageNet-C (Hendrycks & Dietterich, 2019) where they do not depend on the picture size; the
defocus radius is scaled from 224 px to `crop`:

  gaussian_noise    x + N(0, c^2) in [0, 1], c = .08 .12 .18 .26 .38
  defocus_blur      mean over a disc of radius r * crop / 224 (at least 1 px), r = 3 4 6 8 10
  contrast          (x - mean) * c + mean per channel, c = .4 .3 .2 .1 .05
  pixelate          BOX down to c * size and back up, c = .6 .5 .4 .3 .25
  jpeg_compression  JPEG at quality 25 18 15 10 7

These are NOT the ImageNet-C images: an mCE normalised by AlexNet's published errors means
nothing on them; report the mean corruption error.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from dali_pixmix.data.images import class_images

CORRUPTIONS = ("gaussian_noise", "defocus_blur", "contrast", "pixelate", "jpeg_compression")
_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)
_DEFOCUS_RADIUS = (3, 4, 6, 8, 10)  # at 224 px
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)
_JPEG_QUALITY = (25, 18, 15, 10, 7)
MARKER_NAME = ".complete.json"


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def _defocus(x: np.ndarray, radius: float) -> np.ndarray:
    """Mean over a disc (reflect padding) of float HWC [0, 1]."""
    r = max(1, int(round(radius)))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disc = (xx * xx + yy * yy <= radius * radius + 1e-9).astype(np.float32)
    if disc.sum() <= 1:  # below one pixel of radius: the cross of the 4 neighbours
        disc = (np.abs(xx) + np.abs(yy) <= 1).astype(np.float32)
    kernel = torch.from_numpy(disc / disc.sum()).view(1, 1, *disc.shape)
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))).float().unsqueeze(1)
    t = torch.nn.functional.pad(t, (r, r, r, r), mode="reflect")
    return torch.nn.functional.conv2d(t, kernel).squeeze(1).numpy().transpose(1, 2, 0)


def corrupt(image: np.ndarray, corruption: str, severity: int,
            rng: np.random.Generator) -> np.ndarray:
    """uint8 HWC `image` with `corruption` at `severity` (1..5); `rng` draws any noise."""
    if corruption not in CORRUPTIONS or not 1 <= severity <= 5:
        raise ValueError(f"corruption must be one of {CORRUPTIONS} at severity 1..5, got "
                         f"{corruption!r} {severity}")
    s = severity - 1
    h, w, _ = image.shape
    x = image.astype(np.float32) / 255.0
    if corruption == "gaussian_noise":
        return _to_uint8(np.clip(x + rng.normal(0.0, _NOISE[s], x.shape), 0, 1))
    if corruption == "defocus_blur":
        return _to_uint8(_defocus(x, _DEFOCUS_RADIUS[s] * min(h, w) / 224))
    if corruption == "contrast":
        means = x.mean(axis=(0, 1), keepdims=True)
        return _to_uint8(np.clip((x - means) * _CONTRAST[s] + means, 0, 1))
    pil = Image.fromarray(image)
    if corruption == "pixelate":
        small = (max(1, int(w * _PIXELATE[s])), max(1, int(h * _PIXELATE[s])))
        return np.asarray(pil.resize(small, Image.BOX).resize((w, h), Image.BOX))
    buffer = io.BytesIO()
    pil.save(buffer, "JPEG", quality=_JPEG_QUALITY[s])
    return np.asarray(Image.open(buffer).convert("RGB"))


def _prepared(path: Path, resize: int, crop: int) -> np.ndarray:
    """Resize (shorter side) + centre crop, as ImageNet-C's 224 px pictures were made."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = resize / min(w, h)
    img = img.resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.BILINEAR)
    left, top = (img.size[0] - crop) // 2, (img.size[1] - crop) // 2
    return np.asarray(img.crop((left, top, left + crop, top + crop)))


def write_corruption_set(val_root: str | Path, out: str | Path, resize: int, crop: int,
                         seed: int = 0, corruptions: Sequence[str] = CORRUPTIONS,
                         progress: bool = True) -> Path:
    """Write the corrupted copies of every picture of `val_root` (class folders) into `out`;
    a marker with the settings makes a second call with the same settings free."""
    out = Path(out)
    params = {"val_root": str(Path(val_root).resolve()), "resize": resize, "crop": crop,
              "seed": seed, "corruptions": list(corruptions)}
    marker = out / MARKER_NAME
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return out
    classes, files, labels = class_images(val_root)
    cells = [(c, s) for c in corruptions for s in range(1, 6)]
    for corruption, severity in cells:  # every folder once, before the pictures
        for name in set(classes[label] for label in labels):
            (out / corruption / str(severity) / name).mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(cells) * len(files), desc="corruption set", disable=not progress,
              unit="img") as bar:
        for i, path in enumerate(files):  # each picture prepared once, for all its cells
            picture = _prepared(path, resize, crop)
            for corruption, severity in cells:
                rng = np.random.default_rng([seed, CORRUPTIONS.index(corruption), severity, i])
                pixels = corrupt(picture, corruption, severity, rng)
                folder = out / corruption / str(severity) / classes[labels[i]]
                Image.fromarray(pixels).save(folder / f"{i:06d}_{Path(path).stem}.png")
                bar.update()
    marker.write_text(json.dumps(params, indent=1))
    return out
