"""Mixup and CutMix: batch-level label mixing, on the training device, with soft targets.

Both pair sample i with sample ``perm[i]`` of the same batch (a uniformly random permutation)
and draw ONE lambda per batch, as the methods' reference code does:

* mixup (Zhang et al., ICLR 2018): ``lambda ~ Beta(alpha, alpha)`` (0.2 on ImageNet);
  ``x = lambda x + (1 - lambda) x[perm]`` and the same for the one-hot labels.
* cutmix (Yun et al., ICCV 2019): ``lambda ~ Beta(alpha, alpha)`` (1.0); a box with sides
  ``int(H sqrt(1 - lambda))`` x ``int(W sqrt(1 - lambda))`` (area ~ ``1 - lambda``) centred on a
  uniformly random pixel, ``[c - side // 2, c + side // 2)`` clipped at the border, is pasted
  from ``x[perm]``; the label weight is corrected to the box actually pasted:
  ``lambda = 1 - box area / (H W)``.

Images are normalised float ``[B, 3, H, W]`` (any memory format; mixing normalised images
equals normalising mixed ones, the normalisation being affine). Every draw comes from a HOST
generator: lambda and the box are Python numbers, the permutation is copied to the device
without blocking, so a CUDA batch is mixed without any host synchronisation. On the CPU the
partners are gathered a few samples at a time (one batch-sized allocation, not two: fresh
pages cost more than the arithmetic) with one torch thread, as the loader's DALI threads are
busy beside it (two OpenMP threads spin at every barrier when the cores are taken, which made
mixing on a 2-core machine cost several times its work).

``torchvision.transforms.v2.MixUp`` / ``CutMix`` compute the same kinds of mix but draw from
torch's global generator (no ``generator`` argument: per-rank streams and an exact replay on
resume would depend on every other user of that generator) and pair sample i with sample
i - 1 (``roll(1)``) instead of a random permutation; hence these few functions.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from dali_pixmix.augment._rows import to_device
from dali_pixmix.augment.distributions import beta

KINDS = ("mixup", "cutmix")
HOST_CHUNK = 8  # samples gathered at a time on the CPU (a few MB: reused heap, no fresh pages)


@dataclass(frozen=True)
class MixDraw:
    """One batch's draw: the label weight of each sample's own image, the partners and, for
    CutMix, the pasted box ``(y0, y1, x0, x1)`` (half-open, already clipped)."""
    lam: float
    perm: torch.Tensor                      # int64 [B], on the host
    box: Optional[Tuple[int, int, int, int]] = None


def draw_mixup(n: int, alpha: float, generator: torch.Generator) -> MixDraw:
    lam = float(beta(alpha, alpha, 1, generator)[0])
    return MixDraw(lam, torch.randperm(n, generator=generator))


def draw_cutmix(n: int, height: int, width: int, alpha: float,
                generator: torch.Generator) -> MixDraw:
    lam = float(beta(alpha, alpha, 1, generator)[0])
    perm = torch.randperm(n, generator=generator)
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy = int(torch.randint(height, (1,), generator=generator))
    cx = int(torch.randint(width, (1,), generator=generator))
    y0, y1 = min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height)
    x0, x1 = min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width)
    pasted = (y1 - y0) * (x1 - x0) / (height * width)
    return MixDraw(1.0 - pasted, perm, (y0, y1, x0, x1))


def soft_targets(labels: torch.Tensor, perm: torch.Tensor, lam: float,
                 num_classes: int) -> torch.Tensor:
    """float32 ``[B, num_classes]``: ``lam`` on each label and ``1 - lam`` on its partner's
    (a scatter, not ``one_hot``, which reads the labels' range on the host)."""
    n = labels.shape[0]
    targets = torch.zeros((n, num_classes), dtype=torch.float32, device=labels.device)
    weight = torch.full((n, 1), lam, dtype=torch.float32, device=labels.device)
    targets.scatter_add_(1, labels.view(n, 1), weight)
    return targets.scatter_add_(1, labels.index_select(0, perm).view(n, 1), 1.0 - weight)


def apply_draw(images: torch.Tensor, labels: torch.Tensor, draw: MixDraw,
               num_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mixed images, soft targets) of one batch for ``draw`` (a mixup draw has no box)."""
    perm = to_device(draw.perm, images.device)
    n = images.shape[0]
    step = HOST_CHUNK if images.device.type == "cpu" else n
    with _one_thread_on_cpu(images.device):
        if draw.box is None:
            mixed = images.mul(draw.lam)
            for i in range(0, n, step):
                mixed[i:i + step].add_(images.index_select(0, perm[i:i + step]),
                                       alpha=1.0 - draw.lam)
        else:
            y0, y1, x0, x1 = draw.box
            mixed = images.clone()  # keeps the memory format (channels_last stays)
            box = images[:, :, y0:y1, x0:x1]
            for i in range(0, n, step):
                mixed[i:i + step, :, y0:y1, x0:x1] = box.index_select(0, perm[i:i + step])
    return mixed, soft_targets(labels, perm, draw.lam, num_classes)


@contextmanager
def _one_thread_on_cpu(device: torch.device):
    """torch's thread count 1 for the block when ``device`` is the CPU, restored after."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def mix_batch(images: torch.Tensor, labels: torch.Tensor, kind: str, alpha: float,
              num_classes: int, generator: torch.Generator
              ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix (``kind``) a batch: (images, float32 soft targets ``[B, C]``).

    ``generator`` must be a CPU generator (the draws steer host-side slicing)."""
    if kind not in KINDS:
        raise ValueError(f"label mixing must be one of {KINDS}, got {kind!r}")
    if generator.device.type != "cpu":
        raise ValueError("label mixing draws on the host: pass a CPU torch.Generator")
    n, _, h, w = images.shape
    if kind == "mixup":
        draw = draw_mixup(n, alpha, generator)
    else:
        draw = draw_cutmix(n, h, w, alpha, generator)
    return apply_draw(images, labels, draw, num_classes)
