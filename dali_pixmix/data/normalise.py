"""ImageNet normalisation of torch tensors made outside the DALI graphs (generated OOD pictures,
FVis renderings, decoded video frames), with the loaders' mean and std."""
from __future__ import annotations

from typing import Tuple

import torch

from dali_pixmix.augment._constants import stream_safe_cache
from dali_pixmix.pipelines.graphs import IMAGENET_MEAN, IMAGENET_STD


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
