"""Cutout (DeVries & Taylor, 2017) on a batch: one square patch per image, set to zero.

As the reference code: the centre ``(cy, cx)`` is uniform over the pixels, the patch is
``[cy - s // 2, cy + s // 2) x [cx - s // 2, cx + s // 2)`` clipped at the border, and it is
zeroed AFTER normalisation (the reference masks the normalised tensor), so the patch shows the
mean colour. Boxes are drawn on the host from an explicit generator (``cutout_boxes``). The
training pipeline hands them to DALI's ``fn.erase`` as regions (``erase_regions``), which zeroes
them in the normalised images on the pipeline's device; ``cutout`` is the same method on a
torch batch (the boxes copied to the images' device without blocking, so a CUDA batch never
waits for the host).
"""
from __future__ import annotations

import torch

from dali_pixmix.augment._rows import to_device


def cutout_boxes(n: int, height: int, width: int, size: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """int64 ``[n, 4]`` on the host: each image's ``(y0, y1, x0, x1)``, half-open, clipped."""
    if size < 1:
        raise ValueError(f"cutout size must be >= 1 pixel, got {size}")
    device = generator.device if generator is not None else "cpu"
    u = torch.rand(2, n, generator=generator, device=device, dtype=torch.float64).cpu()
    cy = (u[0] * height).long().clamp_(max=height - 1)
    cx = (u[1] * width).long().clamp_(max=width - 1)
    half = size // 2
    return torch.stack([(cy - half).clamp(0, height), (cy + half).clamp(0, height),
                        (cx - half).clamp(0, width), (cx + half).clamp(0, width)], dim=1)


def erase_regions(boxes: torch.Tensor) -> tuple:
    """DALI ``fn.erase`` arguments of ``cutout_boxes`` output, one float32 array per image:
    (anchors ``(y0, x0)``, shapes ``(y1 - y0, x1 - x0)``) with ``axis_names="HW"``."""
    corners = boxes.to(torch.float32).view(-1, 2, 2)  # [(y0, y1), (x0, x1)]
    anchors = corners[:, :, 0].contiguous().numpy()
    shapes = (corners[:, :, 1] - corners[:, :, 0]).contiguous().numpy()
    return list(anchors), list(shapes)


def box_mask(boxes: torch.Tensor, height: int, width: int, device) -> torch.Tensor:
    """bool ``[n, H, W]`` on ``device``: True inside each image's box."""
    boxes = to_device(boxes, device)
    ys = torch.arange(height, device=device).view(1, height)
    xs = torch.arange(width, device=device).view(1, width)
    rows = (ys >= boxes[:, 0:1]) & (ys < boxes[:, 1:2])
    cols = (xs >= boxes[:, 2:3]) & (xs < boxes[:, 3:4])
    return rows.unsqueeze(2) & cols.unsqueeze(1)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator | None = None,
           output=None, trace: bool = False):
    """Cutout a uint8 ``[B, H, W, 3]`` batch on its device.

    Returns float32 ``[B, H, W, 3]`` in [0, 1] with each box zeroed, or, with ``output`` (a
    ``pixmix.Normalized`` format), the normalised images in its layout and dtype with each box
    zeroed after normalisation (the reference's order). ``trace=True`` also returns the boxes
    (int64 ``[B, 4]``: y0, y1, x0, x1).
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"cutout: expected uint8 [B, H, W, 3], got {images.dtype} "
                         f"{tuple(images.shape)}")
    n, h, w, _ = images.shape
    boxes = cutout_boxes(n, h, w, size, generator)
    x = images.float().div_(255.0)
    channel_dim = 3
    if output is not None:
        x = output.convert(x)
        channel_dim = 1 if output.layout == "CHW" else 3
    x.masked_fill_(box_mask(boxes, h, w, images.device).unsqueeze(channel_dim), 0.0)
    return (x, boxes) if trace else x
