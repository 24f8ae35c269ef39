"""PGD adversarial examples: the PixMix paper's "Adversaries" column (reference `cifar.py`, `PGD`).

Untargeted l-inf projected gradient descent in [0, 1] PIXEL space, the model's normalisation
applied inside it (`PixelSpaceModel`): start at x + u with u ~ U[-eps, eps] per value (the start
is not clipped), then `steps` times
    x_adv <- x_adv + step_size * sign(grad_x_adv sum_i CE(model(x_adv)_i, y_i))
    x_adv <- clip(x_adv, centre - eps, centre + eps), then clip to [0, 1].
The paper's setting: eps = 2/255, 20 steps, step 0.5/255; the metric is the top-1 error on the
returned images.

Where the ball is centred (`ball`):
  "clean"      the clean image x: the l-inf threat model the column names, every returned
               image within eps of x (the default).
  "reference"  the random start x + u, as the reference code computes it: its
               `adv_bx = bx.detach(); adv_bx += noise` changes `bx` in place (detach shares
               storage), so it projects onto a ball around the start and its returned images can
               be up to 2 eps from x. Published numbers were made this way; rows must say which.
The model runs in eval mode (its mode is restored afterwards) and only the input gradient is
computed (`torch.autograd.grad`), so no parameter `.grad` is touched.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PGD_EPSILON", "PGD_STEPS", "PGD_STEP_SIZE", "BALLS", "PixelSpaceModel", "pgd_linf",
           "pgd_start_noise", "pgd_protocol"]

PGD_EPSILON = 2.0 / 255
PGD_STEPS = 20
PGD_STEP_SIZE = 0.5 / 255
BALLS = ("clean", "reference")


class PixelSpaceModel(nn.Module):
    """`model` on [0, 1] pixels: (x - mean) / std per channel, then the model.

    With the CIFAR reference's mean = std = 0.5 this is the reference's `model(x * 2 - 1)`
    bit for bit (dividing by 0.5 and multiplying by 2 round identically).
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"need 3 channel means and 3 positive stds, got {mean}, {std}")
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        # the wrapper's mode is the model's: `pgd_linf` restores the mode it found, which must
        # not put an evaluated model into training mode (batch statistics, running means)
        self.train(getattr(model, "training", self.training))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(pixels.dtype), self.std.to(pixels.dtype)
        return self.model((pixels - mean) / std)


def pgd_start_noise(images: torch.Tensor, epsilon: float,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """U[-epsilon, epsilon] noise shaped like `images`, drawn on the generator's device."""
    device = generator.device if generator is not None else images.device
    noise = torch.empty(images.shape, dtype=images.dtype, device=device)
    return noise.uniform_(-epsilon, epsilon, generator=generator).to(images.device)


@contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check(images: torch.Tensor, labels: torch.Tensor, epsilon: float, steps: int,
           step_size: float, ball: str) -> None:
    if ball not in BALLS:
        raise ValueError(f"PGD ball must be one of {BALLS}, got '{ball}'")
    if epsilon < 0 or step_size < 0 or steps < 1:
        raise ValueError(f"PGD needs epsilon and step size >= 0 and steps >= 1, got {epsilon}, "
                         f"{step_size}, {steps}")
    if images.ndim != 4 or labels.shape != images.shape[:1]:
        raise ValueError(f"PGD needs images [N, C, H, W] and labels [N], got "
                         f"{tuple(images.shape)} and {tuple(labels.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"PGD needs float images in [0, 1], got {images.dtype}")


def pgd_linf(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             epsilon: float = PGD_EPSILON, steps: int = PGD_STEPS,
             step_size: float = PGD_STEP_SIZE, generator: Optional[torch.Generator] = None,
             start_noise: Optional[torch.Tensor] = None, ball: str = "clean") -> torch.Tensor:
    """Adversarial versions of `images` (float [N, C, H, W] in [0, 1]) against `model`.

    `model` maps [0, 1] pixels to logits (wrap a classifier in `PixelSpaceModel`). The random
    start is `start_noise` when given (shape of `images`), else drawn from `generator` (see
    `pgd_start_noise`). `images` and `labels` are not modified; the result is detached.
    """
    _check(images, labels, epsilon, steps, step_size, ball)
    clean = images.detach()
    noise = start_noise if start_noise is not None else pgd_start_noise(clean, epsilon, generator)
    if noise.shape != clean.shape:
        raise ValueError(f"start_noise has shape {tuple(noise.shape)}, images "
                         f"{tuple(clean.shape)}")
    adv = clean + noise.to(clean.device, clean.dtype)
    centre = adv.clone() if ball == "reference" else clean
    with _eval_mode(model), torch.enable_grad():
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(model(adv), labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() + step_size * grad.sign()
            adv = torch.minimum(torch.maximum(adv, centre - epsilon), centre + epsilon).clamp(0, 1)
    return adv.detach()


def pgd_protocol(epsilon: float = PGD_EPSILON, steps: int = PGD_STEPS,
                 step_size: float = PGD_STEP_SIZE, ball: str = "clean") -> str:
    """The row label of a PGD setting, e.g. 'pgd-linf:eps=2/255,steps=20,step=0.5/255,ball=clean,
    summed-ce,random-start'."""
    return (f"pgd-linf:eps={epsilon * 255:g}/255,steps={steps},step={step_size * 255:g}/255,"
            f"ball={ball},summed-ce,random-start")
