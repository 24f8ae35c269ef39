"""eval/cifar.py under torchrun with two CPU ranks: every picture once (odd counts, partial last
batches), the same predictions and PGD error as one process (the start noise is per image)."""
import json
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from child_env import child_env
from entry_points import load_script

from dali_pixmix.checkpoint import atomic_save
from dali_pixmix.config import Config
from dali_pixmix.data.cifar import write_cifar
from dali_pixmix.evaluation import cli
from dali_pixmix.models import build_model

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_match_one_process(tmp_path):
    rng = np.random.default_rng(0)
    classes = [f"c{k}" for k in range(6)]
    test = rng.integers(0, 256, (11, 32, 32, 3), dtype=np.uint8)  # shards of 5 and 6
    write_cifar(tmp_path / "data", "cifar10", "binary",
                {"train": (test[:6], np.arange(6)), "test": (test, np.arange(11) % 6)}, classes)
    (tmp_path / "data" / "CIFAR-10-C").mkdir()
    np.save(tmp_path / "data" / "CIFAR-10-C" / "fog.npy",
            rng.integers(0, 256, (55, 32, 32, 3), dtype=np.uint8))
    np.save(tmp_path / "data" / "CIFAR-10-C" / "labels.npy", np.tile(np.arange(11) % 6, 5))
    cfg = Config()
    cfg.data.dataset = "cifar10"
    torch.manual_seed(0)
    atomic_save({"model": build_model("wrn10_1", 6).state_dict(), "arch": "wrn10_1",
                 "classes": classes, "config": asdict(cfg)}, tmp_path / "m.pt")
    args = ["--checkpoint", str(tmp_path / "m.pt"), "--data-root", str(tmp_path / "data"),
            "--batch-size", "4", "--device", "cpu", "--calibration-bin-size", "4", "--pgd",
            "--pgd-steps", "2", "--no-synthetic"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={free_port()}", str(REPO / "eval" / "cifar.py"), *args,
           "--out", str(tmp_path / "two")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                            env=child_env(OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("| this model |") == 1  # only rank 0 reports
    assert cli.run_cli(load_script("eval/cifar.py").main,
                       [*args, "--out", str(tmp_path / "one")]) == 0
    for cache in ("cifar_clean/test.npz", "cifar_c/fog.npz", "pgd/cifar10_test.npz"):
        two, one = (np.load(tmp_path / run / "cache" / cache) for run in ("two", "one"))
        np.testing.assert_array_equal(two["labels"], one["labels"])
        np.testing.assert_array_equal(two["top5"], one["top5"])
        np.testing.assert_allclose(two["confidence"], one["confidence"], rtol=1e-4)
    assert len(np.load(tmp_path / "two" / "cache" / "cifar_c" / "fog.npz")["labels"]) == 55
    for task in ("cifar_clean", "cifar_c", "pgd"):
        rows = [json.loads((tmp_path / run / "results" / f"{task}.json").read_text())
                for run in ("one", "two")]
        assert [r["value"] for r in rows[0]] == pytest.approx([r["value"] for r in rows[1]],
                                                              abs=1e-3)
