"""Learning-rate schedule stepped once per iteration (the PixMix reference recipe).

The reference ImageNet script uses cosine annealing from the peak lr to `min_lr` (1e-6) over all
iterations, applied after every optimizer step. `cosine_lr` is the pure formula; `CosineSchedule`
applies it to an optimizer and has a tiny, weights_only-safe state_dict ({"step": int}).
"""
from __future__ import annotations

import math
from typing import Dict

import torch


def cosine_lr(step: int, total_steps: int, base_lr: float, min_lr: float,
              warmup_steps: int = 0) -> float:
    """lr at iteration `step` (0-based): linear warm-up, then cosine from base_lr to min_lr."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class CosineSchedule:
    """Sets every param group's lr to `cosine_lr(step)`; call `step()` after `optimizer.step()`."""

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, min_lr: float,
                 total_steps: int, warmup_steps: int = 0):
        self.optimizer = optimizer
        self.base_lr, self.min_lr = base_lr, min_lr
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.last_step = 0
        self._apply()

    def current_lr(self) -> float:
        return self.lr_at(self.last_step)

    def lr_at(self, step: int) -> float:
        """The lr set after `step` optimizer steps (the one step `step + 1` uses)."""
        return cosine_lr(step, self.total_steps, self.base_lr, self.min_lr, self.warmup_steps)

    def _apply(self) -> None:
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def state_dict(self) -> Dict[str, int]:
        return {"step": self.last_step}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.last_step = int(state["step"])
        self._apply()
