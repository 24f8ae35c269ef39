"""Mixed precision: the one autocast helper, and the evaluation precision policy.

Training picks its autocast dtype from `train.amp` (`training.setup.resolve_amp`). Every
evaluation (validation during training, the eval/*.py scripts, ImageNet-P) follows one policy,
`eval_amp_dtype`: float16 autocast on CUDA (finer than bfloat16 for rankings and confidences),
float32 on the CPU, so a model gets the same numbers wherever it is evaluated.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """Autocast to `dtype` on `device`'s type; a no-op context when `dtype` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def eval_amp_dtype(device: torch.device, amp: bool = True) -> Optional[torch.dtype]:
    """The evaluation policy: float16 on CUDA when `amp`, else full float32 precision."""
    return torch.float16 if amp and device.type == "cuda" else None


def precision_name(dtype: Optional[torch.dtype]) -> str:
    """'fp32', 'amp-fp16' or 'amp-bf16': how a number was computed (for protocol labels)."""
    return {None: "fp32", torch.float16: "amp-fp16", torch.bfloat16: "amp-bf16"}[dtype]
