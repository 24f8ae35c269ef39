"""Per-iteration cosine schedule against hand-computed values."""
import math

import pytest
import torch

from dali_pixmix.training.schedule import CosineSchedule, cosine_lr

pytestmark = pytest.mark.unit


def test_cosine_end_points_and_midpoint():
    assert cosine_lr(0, 100, 0.01, 1e-6) == pytest.approx(0.01)
    assert cosine_lr(50, 100, 0.01, 1e-6) == pytest.approx(1e-6 + (0.01 - 1e-6) / 2)
    assert cosine_lr(100, 100, 0.01, 1e-6) == pytest.approx(1e-6)
    assert cosine_lr(25, 100, 1.0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_warmup_is_linear_then_cosine():
    assert cosine_lr(0, 110, 1.0, 0.0, warmup_steps=10) == pytest.approx(0.1)
    assert cosine_lr(9, 110, 1.0, 0.0, warmup_steps=10) == pytest.approx(1.0)
    assert cosine_lr(60, 110, 1.0, 0.0, warmup_steps=10) == pytest.approx(0.5)


def test_schedule_sets_lr_and_resumes():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
    sched = CosineSchedule(opt, 0.01, 1e-6, total_steps=10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    for _ in range(4):
        sched.step()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
    sched2 = CosineSchedule(opt2, 0.01, 1e-6, total_steps=10)
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] \
        == pytest.approx(cosine_lr(4, 10, 0.01, 1e-6))
