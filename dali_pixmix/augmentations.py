"""The 13 PixMix augmentation ops, batched, with PIL semantics.

Conventions shared by every op:

* ``x`` is a uint8 tensor ``[B, H, W, 3]`` (RGB, channels last) on any device; the result is
  uint8 with the same shape and device. Nothing is modified in place.
* Parameters are 1-D tensors of length ``B`` (one value per sample, sign already applied), on
  any device. They are the exact values the PIL reference passes to PIL
  (``dali_pixmix.reference.apply_op``), see ``dali_pixmix/pixmix.py`` for how they are drawn.
* Results match PIL (Pillow >= 9): bit-exact for ``posterize``, ``solarize``, ``autocontrast``,
  ``equalize``, ``color``, ``contrast``, ``brightness`` and ``sharpness`` (the enhance ops are
  specified to within one grey level; they reproduce PIL's float32 blend and truncation).
  Geometric ops reproduce PIL's affine transform (pixel-centre mapping, bilinear sampling with
  edge replication inside the canvas, black outside, truncation to uint8) in float32, so they
  agree with PIL's float64 arithmetic except where a value lands within ~1e-4 of an integer.
"""
from __future__ import annotations

import torch

OPS = ("autocontrast", "equalize", "posterize", "rotate", "solarize",
       "shear_x", "shear_y", "translate_x", "translate_y")
ALL_OPS = OPS + ("color", "contrast", "brightness", "sharpness")
GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def _check_images(x: torch.Tensor) -> None:
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [B, H, W, 3], got {x.dtype} {tuple(x.shape)}")


def _per_sample(param, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Parameter as a ``[B, 1, 1, 1]`` tensor of ``dtype`` on ``x``'s device."""
    p = torch.as_tensor(param).to(device=x.device, dtype=dtype).reshape(-1)
    if p.numel() != x.shape[0]:
        raise ValueError(f"expected one parameter per sample ({x.shape[0]}), got {p.numel()}")
    return p.view(-1, 1, 1, 1)


# ----------------------------------------------------------------------------- look-up tables

def apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel look-up: ``out[b,h,w,c] = lut[b, c, x[b,h,w,c]]``.

    ``lut`` is ``[B, 3, 256]`` (any integer dtype, values in 0..255).
    """
    b = x.shape[0]
    offsets = torch.arange(b * 3, device=x.device, dtype=torch.int64).view(b, 1, 1, 3) * 256
    return torch.take(lut.to(torch.uint8).reshape(-1), x.long() + offsets)


def channel_histograms(x: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel 256-bin histograms, int64 ``[B, 3, 256]``."""
    b = x.shape[0]
    offsets = torch.arange(b * 3, device=x.device, dtype=torch.int64).view(b, 1, 1, 3) * 256
    counts = torch.bincount((x.long() + offsets).reshape(-1), minlength=b * 3 * 256)
    return counts.view(b, 3, 256)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.autocontrast`` (cutoff 0): stretch each channel's [min, max] to [0, 255].

    A channel with max == min is left unchanged. The LUT is built in float64 with PIL's
    ``int(i * scale + offset)`` so results are bit-exact.
    """
    _check_images(x)
    lo = x.amin(dim=(1, 2)).double().unsqueeze(-1)  # [B, 3, 1]
    hi = x.amax(dim=(1, 2)).double().unsqueeze(-1)
    flat = hi <= lo
    # torch's scalar / tensor is reciprocal-then-multiply; a true division matches Python's.
    scale = torch.full_like(hi, 255.0).div_(torch.where(flat, torch.ones_like(hi), hi - lo))
    offset = -lo * scale
    ramp = torch.arange(256, device=x.device, dtype=torch.float64)
    lut = torch.trunc(ramp * scale + offset).clamp(0, 255)
    lut = torch.where(flat, ramp.expand_as(lut), lut)
    return apply_lut(x, lut)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.equalize``: per-channel histogram equalisation, bit-exact.

    step = (pixels - count of the highest non-empty bin) // 255; the channel is unchanged when
    it has at most one non-empty bin or step == 0; else lut[i] = (step // 2 + #pixels < i) // step,
    clipped to 255.
    """
    _check_images(x)
    hist = channel_histograms(x)
    occupied = hist > 0
    ramp = torch.arange(256, device=x.device, dtype=torch.int64)
    last_bin = torch.where(occupied, ramp, torch.zeros_like(ramp)).amax(dim=-1, keepdim=True)
    step = (hist.sum(-1, keepdim=True) - hist.gather(-1, last_bin)) // 255
    unchanged = (occupied.sum(-1, keepdim=True) <= 1) | (step == 0)
    below = torch.cumsum(hist, dim=-1) - hist  # pixels with value < i
    safe_step = step.clamp(min=1)
    lut = ((safe_step // 2 + below) // safe_step).clamp(max=255)
    lut = torch.where(unchanged, ramp.expand_as(lut), lut)
    return apply_lut(x, lut)


def posterize(x: torch.Tensor, bits) -> torch.Tensor:
    """PIL ``ImageOps.posterize``: keep the ``bits`` (0..8) high bits of every channel."""
    _check_images(x)
    shift = 8 - _per_sample(bits, x, torch.int32)
    mask = (torch.full_like(shift, 0xFF) << shift) & 0xFF
    return x & mask.to(torch.uint8)


def solarize(x: torch.Tensor, threshold) -> torch.Tensor:
    """PIL ``ImageOps.solarize``: invert (255 - v) every value v >= threshold."""
    _check_images(x)
    thr = _per_sample(threshold, x, torch.int32)
    return torch.where(x >= thr, 255 - x, x)


# ----------------------------------------------------------------------------- geometry

def rotation_matrices(degrees, width: int, height: int) -> torch.Tensor:
    """PIL ``Image.rotate`` inverse affine coefficients ``[B, 6]`` (float64).

    Positive degrees rotate counter-clockwise about the canvas centre ``(w / 2, h / 2)``.
    """
    angle = -torch.deg2rad(torch.as_tensor(degrees, dtype=torch.float64).reshape(-1))
    cos, sin = torch.cos(angle), torch.sin(angle)
    cx, cy = width / 2.0, height / 2.0
    c = cos * -cx + sin * -cy + cx
    f = -sin * -cx + cos * -cy + cy
    return torch.stack([cos, sin, c, -sin, cos, f], dim=-1)


def affine(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """PIL ``Image.transform(size, AFFINE, (a, b, c, d, e, f), BILINEAR)`` per sample.

    ``coeffs`` is ``[B, 6]``: output pixel centre (x + .5, y + .5) reads the input at
    (a x + b y + c, d x + e y + f) in continuous coordinates (pixel i covers [i, i + 1)).
    Points outside the canvas are black; inside, bilinear with edge replication and
    truncation to uint8, as PIL does.
    """
    _check_images(x)
    n, h, w, _ = x.shape
    m = coeffs.to(device=x.device, dtype=torch.float64).reshape(n, 6)
    a, b, c, d, e, f = (m[:, i].view(n, 1, 1) for i in range(6))
    # Sample position in pixel-index space: source = coeffs * centre - 0.5. The constant terms
    # are folded in float64 so that integer translations stay exact in float32.
    c0 = ((a + b) * 0.5 + c - 0.5).float()
    f0 = ((d + e) * 0.5 + f - 0.5).float()
    xs = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w)
    ys = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1)
    u = a.float() * xs + b.float() * ys + c0  # [n, h, w]
    v = d.float() * xs + e.float() * ys + f0
    inside = (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)
    return _bilinear(x, u, v, inside)


def _bilinear(x: torch.Tensor, u: torch.Tensor, v: torch.Tensor, inside: torch.Tensor):
    """PIL's bilinear filter at index-space points (u, v); edges replicated, outside -> 0."""
    n, h, w, _ = x.shape
    u0, v0 = torch.floor(u), torch.floor(v)
    du, dv = (u - u0).unsqueeze(-1), (v - v0).unsqueeze(-1)
    x0 = u0.long().clamp_(0, w - 1)
    x1 = (u0.long() + 1).clamp_(0, w - 1)
    y0 = v0.long().clamp_(0, h - 1)
    y1 = (v0.long() + 1).clamp_(0, h - 1)
    base = torch.arange(n, device=x.device).view(n, 1, 1) * (h * w)
    rows = x.reshape(n * h * w, 3)

    def pick(yy, xx):
        return rows[(base + yy * w + xx).reshape(-1)].view(n, h, w, 3).float()

    top0, top1 = pick(y0, x0), pick(y0, x1)
    top = top0.add_((top1.sub_(top0)).mul_(du))
    bot0, bot1 = pick(y1, x0), pick(y1, x1)
    bot = bot0.add_((bot1.sub_(bot0)).mul_(du))
    out = top.add_((bot.sub_(top)).mul_(dv))
    out.mul_(inside.unsqueeze(-1))
    return out.clamp_(0, 255).to(torch.uint8)  # float -> uint8 truncates, like PIL


def _unit_coeffs(n: int, device) -> torch.Tensor:
    m = torch.zeros(n, 6, dtype=torch.float64, device=device)
    m[:, 0] = 1.0
    m[:, 4] = 1.0
    return m


def shear_coeffs(op: str, s, n: int, device) -> torch.Tensor:
    """Affine coefficients ``[n, 6]`` for shear_x (1, s, 0, 0, 1, 0) or shear_y (1, 0, 0, s, 1, 0)."""
    m = _unit_coeffs(n, device)
    m[:, 1 if op == "shear_x" else 3] = torch.as_tensor(s, dtype=torch.float64).to(device).reshape(-1)
    return m


def translate_coeffs(op: str, pixels, n: int, device) -> torch.Tensor:
    """Affine coefficients ``[n, 6]`` for translate_x (1, 0, t, 0, 1, 0) or translate_y (.., t)."""
    m = _unit_coeffs(n, device)
    t = torch.as_tensor(pixels, dtype=torch.float64).to(device).reshape(-1)
    m[:, 2 if op == "translate_x" else 5] = t
    return m


def geometric_coeffs(op: str, param, x: torch.Tensor) -> torch.Tensor:
    """Affine coefficients ``[B, 6]`` of one geometric op for the batch ``x``."""
    n, h, w, _ = x.shape
    if op == "rotate":
        return rotation_matrices(param, w, h).to(x.device)
    if op in ("shear_x", "shear_y"):
        return shear_coeffs(op, param, n, x.device)
    if op in ("translate_x", "translate_y"):
        return translate_coeffs(op, param, n, x.device)
    raise ValueError(f"not a geometric op: {op!r}; expected one of {GEOMETRIC_OPS}")


def rotate(x: torch.Tensor, degrees) -> torch.Tensor:
    """PIL ``img.rotate(degrees, resample=BILINEAR)``: counter-clockwise about the centre."""
    return affine(x, geometric_coeffs("rotate", degrees, x))


def shear_x(x: torch.Tensor, s) -> torch.Tensor:
    """PIL affine (1, s, 0, 0, 1, 0), bilinear, black fill."""
    return affine(x, geometric_coeffs("shear_x", s, x))


def shear_y(x: torch.Tensor, s) -> torch.Tensor:
    """PIL affine (1, 0, 0, s, 1, 0), bilinear, black fill."""
    return affine(x, geometric_coeffs("shear_y", s, x))


def translate_x(x: torch.Tensor, pixels) -> torch.Tensor:
    """PIL affine (1, 0, t, 0, 1, 0): output pixel x shows input pixel x + t."""
    return affine(x, geometric_coeffs("translate_x", pixels, x))


def translate_y(x: torch.Tensor, pixels) -> torch.Tensor:
    """PIL affine (1, 0, 0, 0, 1, t): output pixel y shows input pixel y + t."""
    return affine(x, geometric_coeffs("translate_y", pixels, x))


# ----------------------------------------------------------------------------- enhance ops

def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor) -> torch.Tensor:
    """PIL ``Image.blend(degenerate, x, factor)`` on uint8: float32 math, truncate, clip."""
    alpha = _per_sample(factor, x, torch.float32)
    deg = degenerate.float()
    out = (x.float() - deg).mul_(alpha).add_(deg)
    return out.clamp_(0, 255).to(torch.uint8)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """PIL RGB -> L conversion (ITU-R 601-2 luma, fixed point, rounded), int32 ``[B, H, W, 1]``."""
    r, g, b = x.int().unbind(-1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).unsqueeze(-1)


def color(x: torch.Tensor, factor) -> torch.Tensor:
    """PIL ``ImageEnhance.Color``: blend with the greyscale image."""
    _check_images(x)
    return _blend(grayscale(x), x, factor)


def contrast(x: torch.Tensor, factor) -> torch.Tensor:
    """PIL ``ImageEnhance.Contrast``: blend with the rounded mean of the greyscale image."""
    _check_images(x)
    luma = grayscale(x)
    mean = luma.sum(dim=(1, 2, 3), dtype=torch.int64).double() / luma[0].numel()
    grey = torch.floor(mean + 0.5).view(-1, 1, 1, 1)
    return _blend(grey, x, factor)


def brightness(x: torch.Tensor, factor) -> torch.Tensor:
    """PIL ``ImageEnhance.Brightness``: blend with black."""
    _check_images(x)
    return _blend(torch.zeros((), device=x.device), x, factor)


def smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageFilter.SMOOTH`` (1 1 1 / 1 5 1 / 1 1 1, /13, rounded) on interior pixels.

    Border pixels keep their value. The 3x3 sum is exact in float32; PIL's rounding of s/13
    cannot straddle a .5 boundary (13 is odd), so the result is bit-exact.
    """
    n, h, w, _ = x.shape
    out = x.clone()
    if h < 3 or w < 3:
        return out
    f = x.float()
    total = f[:, :-2, :-2] + f[:, :-2, 1:-1] + f[:, :-2, 2:]
    total += f[:, 1:-1, :-2] + f[:, 1:-1, 2:] + f[:, 2:, :-2] + f[:, 2:, 1:-1] + f[:, 2:, 2:]
    total += 5.0 * f[:, 1:-1, 1:-1]
    out[:, 1:-1, 1:-1] = torch.floor(total.add_(6.5).div_(13.0)).to(torch.uint8)
    return out


def sharpness(x: torch.Tensor, factor) -> torch.Tensor:
    """PIL ``ImageEnhance.Sharpness``: blend with the SMOOTH-filtered image."""
    _check_images(x)
    return _blend(smooth(x), x, factor)


# ----------------------------------------------------------------------------- dispatch

OP_FUNCTIONS = {
    "autocontrast": lambda x, _p: autocontrast(x),
    "equalize": lambda x, _p: equalize(x),
    "posterize": posterize, "rotate": rotate, "solarize": solarize,
    "shear_x": shear_x, "shear_y": shear_y, "translate_x": translate_x, "translate_y": translate_y,
    "color": color, "contrast": contrast, "brightness": brightness, "sharpness": sharpness,
}


def apply_op(x: torch.Tensor, op: str, param=None) -> torch.Tensor:
    """Apply op ``op`` (a name from ``ALL_OPS``) with per-sample ``param`` to the batch ``x``."""
    if op not in OP_FUNCTIONS:
        raise ValueError(f"unknown op {op!r}; expected one of {ALL_OPS}")
    return OP_FUNCTIONS[op](x, param)

