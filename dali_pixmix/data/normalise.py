"""ImageNet normalisation: the mean and std, and the dtypes and layouts, that the DALI graphs
normalise to, and the same normalisation of torch tensors made outside them (generated OOD
pictures, FVis renderings, decoded video frames)."""
from __future__ import annotations

from typing import Tuple

import torch

from dali_pixmix.augment._constants import stream_safe_cache

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUTS = ("CHW", "HWC")


def dali_dtype(dtype: str):
    """The DALI type of a normalised output `dtype` ("float32" or "float16")."""
    from nvidia.dali import types

    table = {"float32": types.FLOAT, "float16": types.FLOAT16}
    if dtype not in table:
        raise ValueError(f"dtype must be one of {sorted(table)}, got {dtype!r}")
    return table[dtype]


def check_layout(layout: str) -> str:
    """`layout` if it is one of `LAYOUTS`."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def normalise_imagenet(images: torch.Tensor, scale: float = 1.0,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[B, 3, H, W] pixels in [0, `scale`] -> `dtype` network input, on the same device."""
    mean, std = imagenet_mean_std(images.device, dtype, float(scale))
    return (images.to(dtype) - mean) / std


@stream_safe_cache(maxsize=16)
def imagenet_mean_std(device: torch.device, dtype: torch.dtype,
                      scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std (times `scale`) as [1, 3, 1, 1] tensors, made once per device, dtype
    and scale: a host-to-device copy per batch would block the host every time."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=dtype).view(1, 3, 1, 1) * scale
    std = torch.tensor(IMAGENET_STD, dtype=dtype).view(1, 3, 1, 1) * scale
    return mean.to(device), std.to(device)
