"""eval/clean.py and eval/cifar.py under torchrun with two CPU ranks: each image once, same
result as one process."""
import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from child_env import child_env
from PIL import Image

from dali_pixmix.classes import imagenet_wnids
from dali_pixmix.evaluation import cli
from dali_pixmix.models import build_model

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[2]
WNIDS = list(imagenet_wnids()[:5])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_match_one_process(tmp_path):
    rng = np.random.default_rng(0)
    for k, w in enumerate(WNIDS):  # 11 images: shards of 5 and 6, last batches partial
        (tmp_path / "val" / w).mkdir(parents=True)
        for i in range(3 if k == 0 else 2):
            pixels = rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "val" / w / f"{i}.png")
    torch.manual_seed(0)
    torch.save({"model": build_model("resnet18", 5).state_dict(), "arch": "resnet18",
                "classes": WNIDS}, tmp_path / "m.pt")
    args = ["--checkpoint", str(tmp_path / "m.pt"), "--val", str(tmp_path / "val"),
            "--resize", "36", "--crop", "32", "--batch-size", "4", "--num-threads", "1",
            "--calibration-bin-size", "4", "--device", "cpu"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={free_port()}", str(REPO / "eval" / "clean.py"), *args,
           "--out", str(tmp_path / "two")]
    env = child_env(OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("clean: ") == 1  # only rank 0 reports

    spec = importlib.util.spec_from_file_location("eval_clean", REPO / "eval" / "clean.py")
    clean = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(clean)  # the same script, in this single process
    assert cli.run_cli(clean.main, [*args, "--out", str(tmp_path / "one")]) == 0
    two = np.load(tmp_path / "two" / "cache" / "clean" / "val.npz")
    one = np.load(tmp_path / "one" / "cache" / "clean" / "val.npz")
    np.testing.assert_array_equal(two["labels"], np.repeat(np.arange(5), [3, 2, 2, 2, 2]))
    np.testing.assert_array_equal(two["labels"], one["labels"])
    np.testing.assert_array_equal(two["top5"], one["top5"])
    np.testing.assert_allclose(two["confidence"], one["confidence"], rtol=1e-4)
    rows = {p: json.loads((tmp_path / p / "results" / "clean.json").read_text())
            for p in ("one", "two")}
    for a, b in zip(rows["one"], rows["two"]):
        assert a["metric"] == b["metric"] and a["n"] == b["n"] == 11
        assert a["value"] == pytest.approx(b["value"], abs=1e-3)


def test_cifar_suite_two_ranks_match_one_process(tmp_path):
    """eval/cifar.py: every picture once (odd counts, partial last batches), the same
    predictions and PGD error as one process (the start noise is per image)."""
    from dataclasses import asdict

    from entry_points import load_script

    from dali_pixmix.checkpoint import atomic_save
    from dali_pixmix.config import Config
    from dali_pixmix.data.cifar import write_cifar

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
