"""The evaluation path on CUDA (nvJPEG decode, AMP, channels_last) agrees with the CPU path."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dali_pixmix.classes import imagenet_wnids
from dali_pixmix.models import build_model

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[2]
WNIDS = list(imagenet_wnids()[:4])


def script(name):
    spec = importlib.util.spec_from_file_location(f"eval_gpu_{name}", REPO / "eval" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cuda_and_cpu_evaluation_agree(tmp_path):
    rng = np.random.default_rng(0)
    for w in WNIDS:  # PNG: both decoders give the same pixels
        (tmp_path / "val" / w).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 255, (72, 80, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "val" / w / f"{i}.png")
    torch.manual_seed(0)
    torch.save({"model": build_model("resnet18", 4).state_dict(), "arch": "resnet18",
                "classes": WNIDS}, tmp_path / "m.pt")
    cache = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        argv = ["--checkpoint", str(tmp_path / "m.pt"), "--out", str(out), "--val",
                str(tmp_path / "val"), "--resize", "64", "--crop", "56", "--batch-size", "8",
                "--calibration-bin-size", "8", "--device", device]
        assert script("clean").main(argv) == 0
        cache[device] = np.load(out / "cache" / "clean" / "val.npz")
    np.testing.assert_array_equal(cache["cpu"]["labels"], cache["cuda"]["labels"])
    # float16 autocast and GPU resampling: close, not bit-identical
    np.testing.assert_allclose(cache["cpu"]["confidence"], cache["cuda"]["confidence"], atol=3e-2)
    agree = np.mean(cache["cpu"]["top5"][:, 0] == cache["cuda"]["top5"][:, 0])
    assert agree >= 0.9
