"""Feature visualisation on CUDA: the CPU's start, repeatable pictures, a gain over baselines."""
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from dali_pixmix.mixing import fvis

pytestmark = pytest.mark.gpu


def render(model, device, out_dir, steps):
    settings = fvis.FVisSettings(size=48, steps=steps, batch=4, lr=0.5)
    jobs = fvis.make_fvis(model.to(device), ["layer1"], out_dir, 3, settings, device,
                          progress=False)
    return jobs, [np.asarray(Image.open(out_dir / fvis.picture_name(*job)), dtype=int)
                  for job in jobs]


def test_cuda_starts_like_the_cpu_repeats_and_beats_the_baselines(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval().requires_grad_(False)
    # Same start on both devices (drawn on the CPU); TF32 convolutions make later steps differ.
    _, cpu = render(model, "cpu", tmp_path / "cpu", steps=0)
    _, gpu = render(model, "cuda", tmp_path / "gpu", steps=0)
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(cpu, gpu))
    _, once = render(model, "cuda", tmp_path / "once", steps=3)
    _, again = render(model, "cuda", tmp_path / "again", steps=3)
    assert all(np.abs(a - b).max() <= 2 for a, b in zip(once, again))
    jobs, _ = render(model, "cuda", tmp_path / "long", steps=64)
    summary = fvis.measure_quality(model.cuda(), jobs, tmp_path / "long", 48, "cuda")
    assert summary["median_ratio_noise"] > 1.5 and summary["median_ratio_fractal"] > 1.5
