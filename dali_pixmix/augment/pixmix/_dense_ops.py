"""Device side of the dense strategy, part 1: all augmentations of a batch, one fixed block of
batch-wide kernels per op family, whatever the draws (see ``_dense_plan`` for the layout).

Every augmentation is of an original image (never of a mixed one), so each family reads its
sources from the image rows of the uint8 table and writes its results to its own rows:

* geometric (rotate, shear_x / y, translate_x / y): ONE per-row affine resampling with PIL's
  conventions (pixel centres, bilinear, edge replication inside the canvas, black outside,
  truncation), from images padded by edge replication and packed as 4-byte pixels;
* lut (autocontrast, equalize, posterize, solarize, brightness): a 3 x 256 table per row, built
  from the row's int32 histograms (one ``index_add_``) and parameter, applied with one gather;
* grey (color, contrast): a blend with the greyscale image or its rounded mean;
* sharp (sharpness): a blend with the SMOOTH-filtered interior.

Unused rows carry identity parameters. Nothing here reads a device value on the host or makes a
shape depend on data, so the sequence can run under a CUDA graph.
"""
from __future__ import annotations

import torch

from dali_pixmix.augment import ops as A
from dali_pixmix.augment._rows import take_rows
from dali_pixmix.augment.pixmix._dense_plan import LUT_CODES

_PAD = 2  # edge-replicated border: covers taps of pixels whose floor is off by one at an edge


def augment_all(table: torch.Tensor, p: dict, shape) -> None:
    """Write every family's augmented images into its rows of ``table`` (uint8
    ``[shape.rows, H, W, 3]`` whose first ``shape.batch`` rows are the original images)."""
    images = table[:shape.batch]
    for family, run in enumerate((_geometric, _lut, _grey, _sharp)):
        start = shape.family_start(family)
        run(images, p, table[start:start + shape.family_rows[family]])


# ----------------------------------------------------------------------------- geometric

def _geometric(images: torch.Tensor, p: dict, out: torch.Tensor) -> None:
    """``out[j] = affine(images[sample[j]], coeffs[j])`` as ``ops.affine`` (PIL) computes it.

    Input coordinates are ``u = a x' + b y' + c``, ``v = d x' + e y' + f`` at pixel centres
    (x' = x + .5). Each is a per-column term plus a per-row term (float64, tiny); the full-size
    kernels only add their float32 fractional parts and carry, so the taps are exact integers
    and the interpolation weights are within ~1e-7 of PIL's (float64) ones."""
    coeffs, sample = p["geo_coeffs"], p["geo_sample"]
    m = coeffs.shape[0]
    _, h, w, _ = images.shape
    pixels, pitch = _padded_pixels(images)
    xs = torch.arange(w, dtype=torch.float64, device=images.device).add_(0.5)
    ys = torch.arange(h, dtype=torch.float64, device=images.device).add_(0.5)
    a, b, c, d, e, f = (t.view(m, 1) for t in coeffs.unbind(1))
    u_col, u_row = a * xs, (b * ys + c) - 0.5  # u - 0.5 = u_col[x] + u_row[y]
    v_col, v_row = d * xs, (e * ys + f) - 0.5
    inside = _inside(u_col, u_row, w) & _inside(v_col, v_row, h)
    du, u_carry, u_col_i, u_row_i = _split(u_col, u_row)
    dv, v_carry, v_col_i, v_row_i = _split(v_col, v_row)
    plane = (h + 2 * _PAD) * pitch
    # Flat int32 index of the top-left tap: (floor(v) + PAD) * pitch + floor(u) + PAD, plus
    # the sample's first pixel; clamped so that points off the canvas read some pixel.
    start = (sample * plane + _PAD * (pitch + 1)).to(torch.int32).view(m, 1)
    col_term = (u_col_i + pitch * v_col_i).view(m, 1, w)
    index = col_term + (u_row_i + pitch * v_row_i + start).view(m, h, 1)
    index.add_(u_carry).add_(v_carry, alpha=pitch)
    index = index.clamp_(0, max(0, pixels.numel() - pitch - 2)).view(-1)
    top = _tap(pixels, index, 0, (m, h, w)).lerp_(_tap(pixels, index, 1, (m, h, w)), du)
    bottom = _tap(pixels, index, pitch, (m, h, w))
    bottom.lerp_(_tap(pixels, index, pitch + 1, (m, h, w)), du)
    out.copy_(top.lerp_(bottom, dv))  # float -> uint8 truncates, like PIL
    out.mul_(inside.unsqueeze(-1))


def _padded_pixels(images: torch.Tensor):
    """Images with a ``_PAD``-pixel edge-replicated border, as flat int32 RGBx pixels, and the
    padded row pitch."""
    n, h, w, _ = images.shape
    buf = images.new_zeros((n, h + 2 * _PAD, w + 2 * _PAD, 4))
    inner = slice(_PAD, _PAD + w)
    buf[:, _PAD:_PAD + h, inner, :3] = images
    buf[:, :_PAD, inner] = buf[:, _PAD:_PAD + 1, inner]
    buf[:, _PAD + h:, inner] = buf[:, _PAD + h - 1:_PAD + h, inner]
    buf[:, :, :_PAD] = buf[:, :, _PAD:_PAD + 1]
    buf[:, :, _PAD + w:] = buf[:, :, _PAD + w - 1:_PAD + w]
    return buf.view(torch.int32).view(-1), w + 2 * _PAD


def _inside(col: torch.Tensor, row: torch.Tensor, size: int) -> torch.Tensor:
    """bool ``[m, H, W]``: ``col[x] + row[y]`` (a coordinate minus .5) lies in [-.5, size - .5),
    i.e. the sampled point is on the canvas (PIL's test, on the float64 terms)."""
    col = col.unsqueeze(1)
    return (col >= (-0.5 - row).unsqueeze(2)) & (col < ((size - 0.5) - row).unsqueeze(2))


def _split(col: torch.Tensor, row: torch.Tensor):
    """Floor and fraction of ``col[x] + row[y]``: (float32 fraction ``[m, H, W, 1]``, bool carry
    ``[m, H, W]``, int32 integer parts ``[m, W]`` and ``[m, H]``); floor = parts + carry."""
    col_i, row_i = col.floor(), row.floor()
    frac = (col - col_i).float().unsqueeze(1) + (row - row_i).float().unsqueeze(2)
    carry = frac >= 1.0
    return frac.remainder_(1.0).unsqueeze(-1), carry, col_i.int(), row_i.int()


def _tap(pixels: torch.Tensor, index: torch.Tensor, offset: int, size: tuple) -> torch.Tensor:
    """float32 RGB ``[m, H, W, 3]`` of the pixels at ``index + offset``."""
    rgbx = pixels[offset:].index_select(0, index).view(torch.uint8).view(*size, 4)
    # into a contiguous tensor: converting the strided view directly is slower on CPU
    return torch.empty((*size, 3), dtype=torch.float32, device=pixels.device).copy_(rgbx[..., :3])


# ----------------------------------------------------------------------------- look-up tables

def _lut(images: torch.Tensor, p: dict, out: torch.Tensor) -> None:
    """``out[j] = lut_j(images[sample[j]])`` with each row's table chosen by its code."""
    code, param = p["lut_code"], p["lut_param"]
    m = code.shape[0]
    src = take_rows(images, p["lut_sample"])
    index = _table_index(src)
    tables = _lut_tables(row_histograms(index, m), code, param)
    torch.index_select(tables.view(-1), 0, index, out=out.view(-1))


def row_histograms(index: torch.Tensor, rows: int) -> torch.Tensor:
    """int32 ``[rows, 3, 256]``: how often each ``_table_index`` value occurs. A count is at most
    H * W (< 2**31), so 32-bit counters are exact; on CUDA ``index_add_`` then uses native 32-bit
    atomics, half the memory traffic of int64 ones (~25M adds per batch of 256 at 224 px)."""
    ones = torch.ones((), dtype=torch.int32, device=index.device).expand(index.numel())
    hist = torch.zeros(rows * 768, dtype=torch.int32, device=index.device)
    return hist.index_add_(0, index, ones).view(rows, 3, 256)


def _table_index(src: torch.Tensor) -> torch.Tensor:
    """int32 flat ``[m * H * W * 3]``: value v of channel c of row j -> ``768 j + 256 c + v``."""
    m = src.shape[0]
    rows = torch.arange(m, dtype=torch.int32, device=src.device).view(m, 1, 1, 1) * 768
    channels = torch.arange(3, dtype=torch.int32, device=src.device) * 256
    return offset_index(src, rows + channels).view(-1)


def offset_index(values_u8: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """int32 ``values_u8 + offsets`` (broadcast). On CUDA one kernel (uint8 + int32 promotes);
    on CPU a cast then an add, several times faster than the mixed-dtype kernel there."""
    if values_u8.is_cuda:
        return torch.add(values_u8, offsets)
    return values_u8.to(torch.int32).add_(offsets)


def _lut_tables(hist: torch.Tensor, code: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """uint8 ``[m, 3, 256]``: every candidate table, then each row's by ``code``
    (``LUT_CODES`` order); ``param`` is posterize's bits, solarize's threshold or brightness's
    factor (float64)."""
    m = hist.shape[0]
    ramp = torch.arange(256, device=hist.device)
    occupied = hist > 0
    lo = occupied.to(torch.uint8).argmax(-1)  # first non-empty bin
    hi = 255 - occupied.flip(-1).to(torch.uint8).argmax(-1)
    bits = torch.where(code == LUT_CODES.index("posterize"), param, 8.0).long()
    shift = (8 - bits).clamp_(0, 8).view(m, 1, 1)  # keeping <= 0 bits clears every value
    threshold = param.long().view(m, 1, 1)
    factor = param.float().view(m, 1, 1)
    candidates = (
        A.autocontrast_lut(lo, hi),
        A.equalize_lut(hist),
        ramp & (torch.full_like(shift, 0xFF) << shift) & 0xFF,
        torch.where(ramp >= threshold, 255 - ramp, ramp),
        ramp.float().mul(factor).clamp_(0, 255),  # -> uint8 truncates, as ops.brightness
        ramp.view(1, 1, 256),
    )
    stacked = torch.stack([t.expand(m, 3, 256).to(torch.uint8) for t in candidates])
    return stacked.gather(0, code.view(1, m, 1, 1).expand(1, m, 3, 256)).squeeze(0)


# ----------------------------------------------------------------------------- blends

def _grey(images: torch.Tensor, p: dict, out: torch.Tensor) -> None:
    """color (blend with the greyscale image) or contrast (with its rounded mean), per row, as
    ``ops.color`` / ``ops.contrast`` compute them."""
    src = take_rows(images, p["grey_sample"])
    m = src.shape[0]
    xf = src.float()
    luma = A.grayscale(xf)
    degenerate = torch.where(p["grey_is_color"].view(m, 1, 1, 1), luma, A.mean_grey(luma))
    out.copy_(A._blend(degenerate, src, p["grey_factor"], xf))


def _sharp(images: torch.Tensor, p: dict, out: torch.Tensor) -> None:
    """sharpness, per row, as ``ops.sharpness`` computes it."""
    src = take_rows(images, p["sharp_sample"])
    out.copy_(src)
    A.sharpen_interior(out, src, p["sharp_factor"])
