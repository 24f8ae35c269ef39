"""Beta and Dirichlet draws from an explicit ``torch.Generator``.

``torch.distributions`` samples from torch's global generator only; these draw Gamma variates
with ``torch._standard_gamma`` (which takes a generator) and normalise them:
``Beta(a, b) = Ga / (Ga + Gb)``, ``Dirichlet(alpha) = G / sum(G)``. float64, on the generator's
device (the CPU for a host generator).
"""
from __future__ import annotations

import torch


def _gamma(shape_values: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch._standard_gamma(shape_values, generator=generator)


def _device(generator: torch.Generator | None):
    return generator.device if generator is not None else torch.device("cpu")


def beta(a: float, b: float, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """float64 ``[n]`` draws of Beta(a, b)."""
    if a <= 0 or b <= 0:
        raise ValueError(f"Beta parameters must be > 0, got ({a}, {b})")
    shape = torch.tensor([a, b], dtype=torch.float64, device=_device(generator))
    g = _gamma(shape.repeat(n, 1), generator)
    total = g.sum(dim=1)
    # Both Gammas can underflow to 0 for tiny parameters (probability ~1e-60 at 0.2): 1/2 then.
    return torch.where(total > 0, g[:, 0] / total.clamp(min=1e-300), 0.5)


def dirichlet(alpha: float, n: int, k: int,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """float64 ``[n, k]`` draws of the symmetric Dirichlet(alpha, ..., alpha)."""
    if alpha <= 0 or k < 1:
        raise ValueError(f"Dirichlet needs alpha > 0 and k >= 1, got alpha={alpha}, k={k}")
    g = _gamma(torch.full((n, k), float(alpha), dtype=torch.float64,
                          device=_device(generator)), generator)
    total = g.sum(dim=1, keepdim=True)
    return torch.where(total > 0, g / total.clamp(min=1e-300), 1.0 / k)
