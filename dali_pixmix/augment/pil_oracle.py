"""Per-image PIL implementation of PixMix, written from the method description.

This is the test oracle for the batched torch implementation (``dali_pixmix.augment.pixmix``)
and the baseline for benchmarks. It uses PIL (``ImageOps``, ``ImageEnhance``,
``Image.transform``) for the augmentation ops and numpy float32 for the mixing, with a
``numpy.random.Generator``.

Public functions:

* ``apply_op(pil_image, op_name, param) -> PIL.Image``: one op with its exact parameter.
* ``sample_op(rng, severity, all_ops, width, height) -> (op_name, param)``: augment()'s draw.
* ``augment(pil_image, rng, severity=1, all_ops=True) -> PIL.Image``.
* ``get_ab(rng, beta) -> (a, b)`` as numpy float32; ``add(x1, x2, a, b)``,
  ``multiply(x1, x2, a, b)`` on float32 HxWx3 arrays in [0, 1] (not clamped).
* ``pixmix_pil(pil_image, mix_pil, rng, k=4, beta=4.0, severity=1, all_ops=True,
  partner_aug_prob=0.5) -> float32 HxWx3 array in [0, 1]`` (not normalised).
* ``replay(orig_uint8_hwc, mix_uint8_hwc, trace_entry) -> float32 HxWx3 array``: recompute one
  sample of ``dali_pixmix.augment.pixmix.pixmix(..., trace=True)`` from its trace with PIL ops.
* ``augmix_pil(pil_image, rng, width=3, depth=-1, severity=1, alpha=1.0, all_ops=True)`` and
  ``augmix_replay(orig_uint8_hwc, trace_entry)``: the same for AugMix
  (``dali_pixmix.augment.augmix``), written from the AugMix reference procedure.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

OPS = ("autocontrast", "equalize", "posterize", "rotate", "solarize",
       "shear_x", "shear_y", "translate_x", "translate_y")
ALL_OPS = OPS + ("color", "contrast", "brightness", "sharpness")
_SIGNED = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def int_param(level: float, maxval: float) -> int:
    return int(level * maxval / 10)


def float_param(level: float, maxval: float) -> float:
    return float(level) * maxval / 10


def _affine(img: Image.Image, coeffs) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, tuple(coeffs), resample=Image.BILINEAR)


_APPLY = {
    "autocontrast": lambda img, _p: ImageOps.autocontrast(img),
    "equalize": lambda img, _p: ImageOps.equalize(img),
    "posterize": lambda img, p: ImageOps.posterize(img, int(p)),
    "rotate": lambda img, p: img.rotate(p, resample=Image.BILINEAR),
    "solarize": lambda img, p: ImageOps.solarize(img, int(p)),
    "shear_x": lambda img, p: _affine(img, (1, p, 0, 0, 1, 0)),
    "shear_y": lambda img, p: _affine(img, (1, 0, 0, p, 1, 0)),
    "translate_x": lambda img, p: _affine(img, (1, 0, p, 0, 1, 0)),
    "translate_y": lambda img, p: _affine(img, (1, 0, 0, 0, 1, p)),
    "color": lambda img, p: ImageEnhance.Color(img).enhance(p),
    "contrast": lambda img, p: ImageEnhance.Contrast(img).enhance(p),
    "brightness": lambda img, p: ImageEnhance.Brightness(img).enhance(p),
    "sharpness": lambda img, p: ImageEnhance.Sharpness(img).enhance(p),
}


def apply_op(pil_image: Image.Image, op_name: str, param=None) -> Image.Image:
    """Apply one PixMix op with its exact parameter (None for autocontrast / equalize)."""
    if op_name not in _APPLY:
        raise ValueError(f"unknown op {op_name!r}; expected one of {ALL_OPS}")
    return _APPLY[op_name](pil_image, param)


def op_param(op_name: str, level: float, negate: bool, width: int, height: int):
    """Map a level in [0.1, severity) to the op's parameter (int truncation, sign applied)."""
    sign = -1 if negate else 1
    if op_name in ("autocontrast", "equalize"):
        return None
    if op_name == "posterize":
        return 4 - int_param(level, 4)
    if op_name == "solarize":
        return 256 - int_param(level, 256)
    if op_name == "rotate":
        return int_param(level, 30) * sign
    if op_name in ("shear_x", "shear_y"):
        return float_param(level, 0.3) * sign
    if op_name == "translate_x":
        return int_param(level, width / 3) * sign
    if op_name == "translate_y":
        return int_param(level, height / 3) * sign
    return float_param(level, 1.8) + 0.1  # color, contrast, brightness, sharpness


def sample_op(rng: np.random.Generator, severity: float, all_ops: bool, width: int, height: int):
    """augment()'s random draw: one op uniformly, a fresh level ~ U(0.1, severity), a sign."""
    ops = ALL_OPS if all_ops else OPS
    name = ops[rng.integers(len(ops))]
    level = rng.uniform(0.1, severity)
    negate = name in _SIGNED and rng.random() < 0.5
    return name, op_param(name, level, negate, width, height)


def augment(pil_image: Image.Image, rng: np.random.Generator, severity: float = 1,
            all_ops: bool = True) -> Image.Image:
    name, param = sample_op(rng, severity, all_ops, *pil_image.size)
    return apply_op(pil_image, name, param)


def get_ab(rng: np.random.Generator, beta: float):
    """(a, b) as float32: p=.5 a~Beta(beta,1), b~Beta(1,beta); else a=1+Beta(1,beta),
    b=-Beta(1,beta)."""
    if rng.random() < 0.5:
        return np.float32(rng.beta(beta, 1)), np.float32(rng.beta(1, beta))
    return np.float32(1 + np.float32(rng.beta(1, beta))), np.float32(-rng.beta(1, beta))


def add(x1: np.ndarray, x2: np.ndarray, a, b) -> np.ndarray:
    """a * x1 + b * x2 + (1 - a - b) / 2 in float32 (mixing in [-1, 1] space)."""
    a, b = np.float32(a), np.float32(b)
    offset = (np.float32(1) - a - b) / np.float32(2)
    return x1 * a + (x2 * b + offset)


def multiply(x1: np.ndarray, x2: np.ndarray, a, b) -> np.ndarray:
    """(2 x1)**a * max(2 x2, 1e-37)**b / 2 in float32 (mixing in [0, 2] space)."""
    a, b = np.float32(a), np.float32(b)
    partner = np.maximum(x2 * np.float32(2), np.float32(1e-37))
    return (x1 * np.float32(2)) ** a * partner ** b / np.float32(2)


def _to_float(img) -> np.ndarray:
    return np.asarray(img, dtype=np.uint8).astype(np.float32) / np.float32(255)


def pixmix_pil(pil_image: Image.Image, mix_pil: Image.Image, rng: np.random.Generator,
               k: int = 4, beta: float = 4.0, severity: float = 1,
               all_ops: bool = True, partner_aug_prob: float = 0.5) -> np.ndarray:
    """PixMix one RGB image with its mixing picture; float32 HxWx3 in [0, 1], not normalised.

    ``partner_aug_prob``: probability that a round's partner is an augmented copy."""
    if pil_image.size != mix_pil.size:
        raise ValueError(f"image size {pil_image.size} != mixing picture size {mix_pil.size}")
    start = augment(pil_image, rng, severity, all_ops) if rng.random() < 0.5 else pil_image
    mixed = _to_float(start)
    for _ in range(rng.integers(k + 1)):
        use_aug = rng.random() < partner_aug_prob
        partner = augment(pil_image, rng, severity, all_ops) if use_aug else mix_pil
        mix = add if rng.random() < 0.5 else multiply
        a, b = get_ab(rng, beta)
        mixed = np.clip(mix(mixed, _to_float(partner), a, b), 0, 1)
    return mixed


def replay(orig_uint8_hwc: np.ndarray, mix_uint8_hwc: np.ndarray, trace_entry: dict) -> np.ndarray:
    """Recompute one traced sample of the batched ``pixmix`` with PIL ops; float32 HxWx3."""
    orig = Image.fromarray(np.ascontiguousarray(orig_uint8_hwc, dtype=np.uint8))
    start = trace_entry["start"]
    mixed = _to_float(apply_op(orig, *start) if start is not None else orig)
    for rnd in trace_entry["rounds"]:
        partner = rnd["partner"]
        source = mix_uint8_hwc if partner == "mixing" else apply_op(orig, *partner)
        x2 = _to_float(source)
        mix = add if rnd["mix"] == "add" else multiply
        mixed = np.clip(mix(mixed, x2, rnd["a"], rnd["b"]), 0, 1)
    return mixed


def augmix_pil(pil_image: Image.Image, rng: np.random.Generator, width: int = 3,
               depth: int = -1, severity: float = 1, alpha: float = 1.0,
               all_ops: bool = True) -> np.ndarray:
    """AugMix one RGB image (no JSD); float32 HxWx3 in [0, 1], not normalised."""
    ws = np.float32(rng.dirichlet([alpha] * width))
    m = np.float32(rng.beta(alpha, alpha))
    mix = np.zeros_like(_to_float(pil_image))
    for i in range(width):
        chained = pil_image
        for _ in range(depth if depth > 0 else rng.integers(1, 4)):
            chained = augment(chained, rng, severity, all_ops)
        mix += ws[i] * _to_float(chained)
    return (np.float32(1) - m) * _to_float(pil_image) + m * mix


def augmix_replay(orig_uint8_hwc: np.ndarray, trace_entry: dict) -> np.ndarray:
    """Recompute one traced image of the batched ``augmix`` with PIL ops; float32 HxWx3."""
    orig = Image.fromarray(np.ascontiguousarray(orig_uint8_hwc, dtype=np.uint8))
    mix = np.zeros_like(_to_float(orig))
    for steps, weight in zip(trace_entry["chains"], trace_entry["weights"]):
        chained = orig
        for name, param in steps:
            chained = apply_op(chained, name, param)
        mix += np.float32(weight) * _to_float(chained)
    m = np.float32(trace_entry["m"])
    return (np.float32(1) - m) * _to_float(orig) + m * mix
