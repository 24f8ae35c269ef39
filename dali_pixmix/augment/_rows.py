"""Row gathers / scatters along the batch dimension and non-blocking host-to-device copies."""
from __future__ import annotations

import math

import torch


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """Host -> device copy that does not make the host wait (small index / parameter tensors).

    To a CUDA device a host tensor is first copied into page-locked memory: a non-blocking
    copy from pageable memory is staged by the driver, which may synchronise with the stream.
    (torch's pinned-memory cache keeps the page-locked block until the copy has run.)"""
    if t.device.type == "cpu" and torch.device(device).type == "cuda" and not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a 2-D ``[len, row]`` view with the widest element type dividing a row, so that
    row gathers / scatters move 8-byte words instead of single bytes."""
    flat = t.reshape(t.shape[0], math.prod(t.shape[1:]))
    row_bytes = flat.shape[1] * flat.element_size()
    for dtype in (torch.int64, torch.int32, torch.int16):
        size = torch.empty((), dtype=dtype).element_size()
        if row_bytes % size == 0 and size > flat.element_size():
            return flat.view(dtype)
    return flat


def take_rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t[idx]`` along dim 0 (a row copy); ``idx`` int64 on ``t``'s device."""
    return _rows(t).index_select(0, idx).view(t.dtype).view(-1, *t.shape[1:])


def put_rows(t: torch.Tensor, idx: torch.Tensor, src: torch.Tensor) -> None:
    """``t[idx] = src`` along dim 0, in place; ``t`` must be contiguous."""
    _rows(t).index_copy_(0, idx, _rows(src.contiguous()))
