"""Row gathers / scatters along the batch dimension and non-blocking host-to-device copies."""
from __future__ import annotations

import math

import torch


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """Host -> device copy that does not synchronise the stream (small index / parameter
    tensors: CUDA stages pageable memory before returning, so this is safe)."""
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
