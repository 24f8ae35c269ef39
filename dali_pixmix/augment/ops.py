"""The 13 PixMix augmentation ops, batched, with PIL semantics.

Conventions shared by every op:

* ``x`` is a uint8 tensor ``[B, H, W, 3]`` (RGB, channels last) on any device; the result is
  uint8 with the same shape and device. Nothing is modified in place.
* Parameters are 1-D tensors of length ``B`` (one value per sample, sign already applied), on
  any device. They are the exact values the PIL reference passes to PIL
  (``pil_oracle.apply_op``), see ``pixmix.op_params`` for how they are drawn.
* Results match PIL (checked against Pillow 13): bit-exact for ``posterize``, ``solarize``,
  ``autocontrast``, ``equalize``, ``color``, ``contrast``, ``brightness`` and ``sharpness`` (the
  enhance ops are specified to within one grey level; they reproduce PIL's float32 blend and
  truncation). Geometric ops reproduce PIL's affine transform (pixel-centre mapping, bilinear
  sampling with edge replication inside the canvas, black outside, truncation to uint8) with
  float64 coordinates and float32 interpolation, so they differ from PIL (by one level) only
  where an interpolated value lands within ~1e-5 of an integer.
* Shear runs as per-row / per-column shifts (rows grouped by integer offset); translation by
  whole pixels (PixMix's) as one slice copy per distinct offset, otherwise as shear does;
  rotation uses one cached coordinate map per distinct angle (cached per device, safe on any
  CUDA stream: ``_constants``), a multiple of 360 degrees being a copy. The shortcuts give
  the general path's result bit for bit (whole-pixel bilinear taps have weights 0 and 1).
  The dense PixMix strategy reuses the table builders
  (``autocontrast_lut``, ``equalize_lut``), the blends, ``mean_grey`` and ``sharpen_interior``,
  and does its own single affine resampling for every geometric op (``_dense_ops``).
"""
from __future__ import annotations

import math

import torch

from dali_pixmix.augment._constants import stream_safe_cache
from dali_pixmix.augment._rows import put_rows, take_rows, to_device

OPS = ("autocontrast", "equalize", "posterize", "rotate", "solarize",
       "shear_x", "shear_y", "translate_x", "translate_y")
ALL_OPS = OPS + ("color", "contrast", "brightness", "sharpness")


def _check_images(x: torch.Tensor) -> None:
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [B, H, W, 3], got {x.dtype} {tuple(x.shape)}")


def _per_sample(param, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Parameter as a ``[B, 1, 1, 1]`` tensor of ``dtype`` on ``x``'s device."""
    p = to_device(torch.as_tensor(param), x.device).to(dtype).reshape(-1)
    if p.numel() != x.shape[0]:
        raise ValueError(f"expected one parameter per sample ({x.shape[0]}), got {p.numel()}")
    return p.view(-1, 1, 1, 1)


# ----------------------------------------------------------------------------- look-up tables

def _lut_index(x: torch.Tensor) -> torch.Tensor:
    """int64 ``[B, H*W*3]``: each value's position ``c * 256 + v`` in its sample's
    ``[3 * 256]`` table (channel c of every pixel)."""
    n, numel = x.shape[0], math.prod(x.shape[1:])  # explicit sizes: a batch may be empty
    channel = torch.arange(3, device=x.device, dtype=torch.int64) * 256
    return x.reshape(n, numel).long().view(n, numel // 3, 3).add_(channel).view(n, numel)


def apply_lut(x: torch.Tensor, lut: torch.Tensor, index: torch.Tensor | None = None):
    """Per-sample, per-channel look-up: ``out[b,h,w,c] = lut[b, c, x[b,h,w,c]]``.

    ``lut`` is ``[B, 3, 256]`` (any integer dtype, values in 0..255); ``index`` is
    ``_lut_index(x)`` when the caller already has it.
    """
    index = _lut_index(x) if index is None else index
    table = lut.to(torch.uint8).reshape(x.shape[0], 3 * 256)
    return torch.gather(table, 1, index).view(x.shape)


def channel_histograms(x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample, per-channel 256-bin histograms, int64 ``[B, 3, 256]``."""
    n = x.shape[0]
    index = _lut_index(x) if index is None else index
    hist = torch.zeros(n, 3 * 256, dtype=torch.int64, device=x.device)
    ones = torch.ones((), dtype=torch.int64, device=x.device).expand(index.shape)
    return hist.scatter_add_(1, index, ones).view(n, 3, 256)


def autocontrast_lut(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.autocontrast`` (cutoff 0) tables ``[m, 3, 256]`` (float64 holding
    integers) from each channel's min ``lo`` and max ``hi`` (``[m, 3]``, any number type).

    A channel with max == min is left unchanged. The table is built in float64 with PIL's
    ``int(i * scale + offset)`` so results are bit-exact.
    """
    lo, hi = lo.double().unsqueeze(-1), hi.double().unsqueeze(-1)  # [m, 3, 1]
    flat = hi <= lo
    # torch's scalar / tensor is reciprocal-then-multiply; a true division matches Python's.
    scale = torch.full_like(hi, 255.0).div_(torch.where(flat, torch.ones_like(hi), hi - lo))
    offset = -lo * scale
    ramp = torch.arange(256, device=lo.device, dtype=torch.float64)
    lut = torch.trunc(ramp * scale + offset).clamp(0, 255)
    return torch.where(flat, ramp.expand_as(lut), lut)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.autocontrast`` (cutoff 0): stretch each channel's [min, max] to [0, 255]
    (see ``autocontrast_lut``)."""
    _check_images(x)
    lo, hi = x.reshape(x.shape[0], x.shape[1] * x.shape[2], 3).aminmax(dim=1)
    return apply_lut(x, autocontrast_lut(lo, hi))


def equalize_lut(hist: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.equalize`` tables ``[m, 3, 256]`` (int64) from int32 or int64
    histograms ``[m, 3, 256]`` (sums and cumulative sums are taken in int64).

    step = (pixels - count of the highest non-empty bin) // 255; the channel is unchanged when
    it has at most one non-empty bin or step == 0; else lut[i] = (step // 2 + #pixels < i) // step,
    clipped to 255.
    """
    occupied = hist > 0
    ramp = torch.arange(256, device=hist.device, dtype=torch.int64)
    last_bin = torch.where(occupied, ramp, torch.zeros_like(ramp)).amax(dim=-1, keepdim=True)
    step = (hist.sum(-1, keepdim=True) - hist.gather(-1, last_bin)) // 255
    unchanged = (occupied.sum(-1, keepdim=True) <= 1) | (step == 0)
    below = torch.cumsum(hist, dim=-1) - hist  # pixels with value < i
    safe_step = step.clamp(min=1)
    lut = ((safe_step // 2 + below) // safe_step).clamp(max=255)
    return torch.where(unchanged, ramp.expand_as(lut), lut)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.equalize``: per-channel histogram equalisation, bit-exact (see
    ``equalize_lut``)."""
    _check_images(x)
    index = _lut_index(x)
    return apply_lut(x, equalize_lut(channel_histograms(x, index)), index)


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
    degrees = torch.remainder(torch.as_tensor(degrees, dtype=torch.float64).reshape(-1), 360.0)
    angle = -torch.deg2rad(degrees)  # PIL reduces the angle modulo 360 first, as here
    # PIL rounds the matrix to 15 decimals (exact 0 / 1 at multiples of 90 degrees).
    cos = torch.round(torch.cos(angle), decimals=15)
    sin = torch.round(torch.sin(angle), decimals=15)
    cx, cy = width / 2.0, height / 2.0
    c = cos * -cx + sin * -cy + cx
    f = -sin * -cx + cos * -cy + cy
    return torch.stack([cos, sin, c, -sin, cos, f], dim=-1)


def affine(x: torch.Tensor, coeffs) -> torch.Tensor:
    """PIL ``Image.transform(size, AFFINE, (a, b, c, d, e, f), BILINEAR)`` per sample.

    ``coeffs`` is ``[B, 6]``: output pixel centre (x + .5, y + .5) reads the input at
    (a x + b y + c, d x + e y + f) in continuous coordinates (pixel i covers [i, i + 1)).
    Points outside the canvas are black; inside, bilinear with edge replication and
    truncation to uint8, as PIL does. Samples with identical coefficients (e.g. rotations by
    the same integer angle) share one float64 coordinate map.
    """
    _check_images(x)
    n, h, w, _ = x.shape
    m = torch.as_tensor(coeffs, dtype=torch.float64).reshape(n, 6).cpu()
    unique, inverse = torch.unique(m, dim=0, return_inverse=True)
    if unique.shape[0] == 1:
        return _affine_group(x, tuple(unique[0].tolist()))
    out = torch.empty_like(x)
    for g in range(unique.shape[0]):
        members = to_device((inverse == g).nonzero(as_tuple=True)[0], x.device)
        group = take_rows(x, members)  # a fresh copy: no second one for the identity
        put_rows(out, members, _affine_group(group, tuple(unique[g].tolist()), copy=False))
    return out


_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _affine_group(x: torch.Tensor, coeffs: tuple, copy: bool = True) -> torch.Tensor:
    """``affine`` of samples sharing ``coeffs``: the identity map reads every pixel centre
    exactly (a copy; ``x`` itself when ``copy`` is False), any other goes through the
    bilinear plan."""
    n, h, w, _ = x.shape
    if coeffs == _IDENTITY:
        return x.clone() if copy else x
    plan = _bilinear_plan(coeffs, h, w, x.device)
    return _bilinear_apply(x.reshape(n, h * w, 3), *plan).view(n, h, w, 3)


@stream_safe_cache(maxsize=8)
def _bilinear_plan(coeffs: tuple, h: int, w: int, device):
    """Tap indices ``[4, H*W*3]``, weights and inside-mask ``[H*W, 3]`` of one affine map.

    Cached (a few MB each at 224 px): PixMix rotations use integer angles, so the same few
    maps recur in every batch."""
    a, b, c, d, e, f = coeffs
    xs = torch.arange(w, dtype=torch.float64, device=device).view(1, w) + 0.5
    ys = torch.arange(h, dtype=torch.float64, device=device).view(h, 1) + 0.5
    u = a * xs + b * ys + c  # same operation order as PIL's affine_transform
    v = d * xs + e * ys + f
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    u0, v0 = torch.floor(u - 0.5), torch.floor(v - 0.5)
    du, dv = (u - 0.5 - u0).float(), (v - 0.5 - v0).float()
    x0, y0 = u0.long(), v0.long()
    xa, xb = x0.clamp(0, w - 1), (x0 + 1).clamp(0, w - 1)
    ya, yb = y0.clamp(0, h - 1) * w, (y0 + 1).clamp(0, h - 1) * w
    taps = torch.stack([ya + xa, ya + xb, yb + xa, yb + xb]).view(4, h * w, 1) * 3
    taps = (taps + torch.arange(3, device=device)).view(4, h * w * 3)  # flat RGB offsets
    # Per-pixel factors repeated for the 3 channels: broadcasting over the innermost (size 3)
    # dimension would defeat vectorisation.
    def rgb(t):
        return t.view(-1, 1).expand(h * w, 3).contiguous()
    return taps, rgb(du), rgb(dv), rgb(inside)


def _bilinear_apply(flat: torch.Tensor, taps, du, dv, inside) -> torch.Tensor:
    """PIL's bilinear filter (row blend along x, then along y) on ``[m, H*W, 3]`` uint8."""
    m, hw, _ = flat.shape
    rgb = flat.reshape(m, hw * 3)
    t00, t01, t10, t11 = (torch.gather(rgb, 1, taps[i].expand(m, -1)).view(m, hw, 3).float()
                          for i in range(4))
    top = t00.add_(t01.sub_(t00).mul_(du))
    bottom = t10.add_(t11.sub_(t10).mul_(du))
    out = top.add_(bottom.sub_(top).mul_(dv)).mul_(inside)
    return out.clamp_(0, 255).to(torch.uint8)  # float -> uint8 truncates, like PIL


def _shift_lines(lines: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Resample each line at ``j + shift`` (PIL affine conventions): uint8 ``[R, L, 3]``.

    ``shift`` is float64 ``[R]`` on the host. Output pixel j has centre j + .5 and reads the
    input at j + .5 + shift: black outside [0, L), else linear between the two nearest input
    pixels with edge replication, truncated. Lines are grouped by the integer part of the
    shift so every copy is a contiguous slice; the grouping is planned on the host, so a GPU
    batch needs no device synchronisation here.
    """
    r, length, _ = lines.shape
    dev = lines.device
    shift = shift.cpu()
    floor = torch.floor(shift)
    whole = floor.clamp(-length - 1, length + 1).long()
    frac = (shift - floor).float()
    pad = int(whole.abs().max()) + 1 if r else 1
    padded = torch.cat([lines[:, :1].expand(r, pad, 3), lines,
                        lines[:, -1:].expand(r, pad + 1, 3)], dim=1)
    wide = torch.empty(r, length + 1, 3, dtype=lines.dtype, device=dev)
    for d in torch.unique(whole).tolist():
        rows = to_device((whole == d).nonzero(as_tuple=True)[0], dev)
        wide.index_copy_(0, rows, padded.index_select(0, rows)[:, pad + d:pad + d + length + 1])
    pos = torch.arange(length, dtype=torch.float64, device=dev).view(1, length) + 0.5
    pos = pos + to_device(shift, dev).view(r, 1)
    inside = ((pos >= 0) & (pos < length)).unsqueeze(-1).expand(r, length, 3).contiguous()
    if not bool((frac != 0).any()):
        return wide[:, :length] * inside
    left = wide[:, :length].float()
    out = left.add_(wide[:, 1:].float().sub_(left).mul_(to_device(frac, dev).view(r, 1, 1)))
    return out.mul_(inside).clamp_(0, 255).to(torch.uint8)


def _shift_along(x: torch.Tensor, shift: torch.Tensor, axis: str) -> torch.Tensor:
    """Shift every row (axis "x") or column (axis "y") of ``x`` by ``shift`` ``[B, lines]``
    (float64, host)."""
    n, h, w, _ = x.shape
    if axis == "x":
        return _shift_lines(x.reshape(n * h, w, 3), shift.reshape(n * h)).view(n, h, w, 3)
    cols = x.transpose(1, 2).reshape(n * w, h, 3)
    out = _shift_lines(cols, shift.reshape(n * w)).view(n, w, h, 3)
    return out.transpose(1, 2).contiguous()


def _params64(param, n: int) -> torch.Tensor:
    """Per-sample parameters as a float64 host tensor ``[n]``."""
    p = torch.as_tensor(param).to("cpu", torch.float64).reshape(-1)
    if p.numel() != n:
        raise ValueError(f"expected one parameter per sample ({n}), got {p.numel()}")
    return p


def rotate(x: torch.Tensor, degrees) -> torch.Tensor:
    """PIL ``img.rotate(degrees, resample=BILINEAR)``: counter-clockwise about the centre."""
    _check_images(x)
    n, h, w, _ = x.shape
    return affine(x, rotation_matrices(_params64(degrees, n), w, h))


def shear_x(x: torch.Tensor, s) -> torch.Tensor:
    """PIL affine (1, s, 0, 0, 1, 0), bilinear, black fill: row y moves by s * (y + .5)."""
    _check_images(x)
    n, h, w, _ = x.shape
    ys = torch.arange(h, dtype=torch.float64) + 0.5
    return _shift_along(x, _params64(s, n).view(n, 1) * ys.view(1, h), "x")


def shear_y(x: torch.Tensor, s) -> torch.Tensor:
    """PIL affine (1, 0, 0, s, 1, 0), bilinear, black fill: column x moves by s * (x + .5)."""
    _check_images(x)
    n, h, w, _ = x.shape
    xs = torch.arange(w, dtype=torch.float64) + 0.5
    return _shift_along(x, _params64(s, n).view(n, 1) * xs.view(1, w), "y")


def translate_x(x: torch.Tensor, pixels) -> torch.Tensor:
    """PIL affine (1, 0, t, 0, 1, 0): output pixel x shows input pixel x + t, black outside."""
    _check_images(x)
    n, h, _, _ = x.shape
    t = _params64(pixels, n)
    if bool((t == torch.round(t)).all()):
        return _whole_pixel_shift(x, t.long(), dim=2)
    return _shift_along(x, t.view(n, 1).expand(n, h), "x")


def translate_y(x: torch.Tensor, pixels) -> torch.Tensor:
    """PIL affine (1, 0, 0, 0, 1, t): output pixel y shows input pixel y + t, black outside."""
    _check_images(x)
    n, _, w, _ = x.shape
    t = _params64(pixels, n)
    if bool((t == torch.round(t)).all()):
        return _whole_pixel_shift(x, t.long(), dim=1)
    return _shift_along(x, t.view(n, 1).expand(n, w), "y")


def _whole_pixel_shift(x: torch.Tensor, shift: torch.Tensor, dim: int) -> torch.Tensor:
    """Output index i along ``dim`` (1: y, 2: x) shows input index i + shift (per sample,
    host int64), black outside: one slice copy per distinct shift."""
    out = torch.zeros_like(x)
    length = x.shape[dim]
    for d in torch.unique(shift).tolist():
        if abs(d) >= length:
            continue  # shifted out of the canvas: black
        rows = to_device((shift == d).nonzero(as_tuple=True)[0], x.device)
        source = x.narrow(dim, max(d, 0), length - abs(d)).index_select(0, rows)
        out.narrow(dim, max(-d, 0), length - abs(d)).index_copy_(0, rows, source)
    return out


# ----------------------------------------------------------------------------- enhance ops

def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor, xf: torch.Tensor | None = None):
    """PIL ``Image.blend(degenerate, x, factor)`` on uint8: float32 math, truncate, clip.

    ``degenerate`` is a float tensor broadcastable to ``x``; ``xf`` is ``x.float()`` if known.
    """
    alpha = _per_sample(factor, x, torch.float32)
    xf = x.float() if xf is None else xf
    out = xf.sub_(degenerate).mul_(alpha).add_(degenerate)
    return out.clamp_(0, 255).to(torch.uint8)


_LUMA = (19595.0, 38470.0, 7471.0)


def grayscale(xf: torch.Tensor) -> torch.Tensor:
    """PIL RGB -> L (ITU-R 601-2 luma in 16-bit fixed point, rounded) of float RGB values.

    Returns float32 ``[B, H, W, 1]`` holding integers. Every partial sum is an integer below
    2**24, so float32 evaluates PIL's integer formula exactly in any order.
    """
    # Element-wise on purpose: a matmul could run in TF32 on GPUs and lose exactness.
    r, g, b = xf.unbind(-1)
    total = (r * _LUMA[0]).add_(g * _LUMA[1]).add_(b * _LUMA[2]).unsqueeze(-1)
    return total.add_(32768.0).mul_(1.0 / 65536.0).floor_()


def _rgb(grey: torch.Tensor) -> torch.Tensor:
    """``[..., 1]`` -> contiguous ``[..., 3]`` (an innermost broadcast would not vectorise)."""
    return grey.expand(*grey.shape[:-1], 3).contiguous()


def color(x: torch.Tensor, factor) -> torch.Tensor:
    """PIL ``ImageEnhance.Color``: blend with the greyscale image."""
    _check_images(x)
    xf = x.float()
    return _blend(_rgb(grayscale(xf)), x, factor, xf)


def mean_grey(luma: torch.Tensor) -> torch.Tensor:
    """float32 ``[B, 1, 1, 1]``: the rounded mean of each greyscale image ``luma``
    (``[B, H, W, 1]``, from ``grayscale``), PIL ``ImageEnhance.Contrast``'s degenerate value
    ``int(mean + 0.5)``, in integers: ``(sum + HW // 2) // HW``. (A float division would round
    exact .5 ties differently on CUDA, where tensor / scalar multiplies by the reciprocal.)"""
    pixels = luma.shape[1] * luma.shape[2]
    total = luma.sum(dim=(1, 2, 3), dtype=torch.int64)  # exact: luma holds integers
    return ((total + pixels // 2) // pixels).float().view(-1, 1, 1, 1)


def contrast(x: torch.Tensor, factor) -> torch.Tensor:
    """PIL ``ImageEnhance.Contrast``: blend with the rounded mean of the greyscale image."""
    _check_images(x)
    xf = x.float()
    return _blend(mean_grey(grayscale(xf)), x, factor, xf)


def brightness(x: torch.Tensor, factor) -> torch.Tensor:
    """PIL ``ImageEnhance.Brightness``: blend with black."""
    _check_images(x)
    alpha = _per_sample(factor, x, torch.float32)
    return x.float().mul_(alpha).clamp_(0, 255).to(torch.uint8)


def _smooth_interior(xf: torch.Tensor) -> torch.Tensor:
    """SMOOTH-filtered interior ``[B, H-2, W-2, 3]`` (float32 holding integers) of float ``xf``.

    The kernel is a 3x3 box plus 4 x centre; sums of integers stay exact in float32, and PIL's
    rounding of s / 13 cannot meet a .5 tie (13 is odd), so this is bit-exact."""
    rows = xf[:, :, :-2] + xf[:, :, 1:-1]
    rows += xf[:, :, 2:]
    total = rows[:, :-2] + rows[:, 1:-1]
    total += rows[:, 2:]
    total.add_(xf[:, 1:-1, 1:-1], alpha=4.0)
    return total.add_(6.5).div_(13.0).floor_()


def sharpness(x: torch.Tensor, factor) -> torch.Tensor:
    """PIL ``ImageEnhance.Sharpness``: blend with the SMOOTH-filtered image.

    Border pixels blend with themselves, so only the interior is computed."""
    _check_images(x)
    out = x.clone()
    sharpen_interior(out, x, factor)
    return out


def sharpen_interior(out: torch.Tensor, x: torch.Tensor, factor) -> None:
    """Write the interior of ``sharpness(x, factor)`` into ``out`` (uint8, shaped like ``x``;
    its border is left as it is). Images below 3 x 3 have no interior."""
    if x.shape[1] < 3 or x.shape[2] < 3:
        return
    xf = x.float()
    degenerate = _smooth_interior(xf)
    alpha = _per_sample(factor, x, torch.float32)
    inner = xf[:, 1:-1, 1:-1].sub_(degenerate).mul_(alpha).add_(degenerate)
    out[:, 1:-1, 1:-1] = inner.clamp_(0, 255)  # float -> uint8 truncates, like PIL


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

