"""CIFAR training on two CPU ranks under torchrun (gloo): the in-memory train split sharded
disjointly, identical replicas, the test split validated exactly once across ranks.

Every training picture is its own class, so the labels a rank logs identify its samples."""
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from child_env import child_env

from dali_pixmix.evaluation.synthetic_cifar import make_synthetic_cifar

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[2]
PICTURES = 16  # one per class


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_train_cifar_on_disjoint_shards_and_end_identical(tmp_path, tiny_mixing_dir):
    root = make_synthetic_cifar(tmp_path / "cifar", "cifar10", ["binary"], PICTURES, 1, 2,
                                progress=False)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={free_port()}", str(REPO / "train_cifar.py"),
           "--config", str(REPO / "configs" / "cifar10_pixmix.yaml")]
    for item in (f"data.root={root}", f"pixmix.mixing_set={tiny_mixing_dir}",
                 "data.num_threads=1", "model.arch=wrn10_1", "train.batch_size=4",
                 "eval.batch_size=6", "eval.calibration_bin_size=4", "train.epochs=2",
                 "train.log_every=1", "train.debug_log=true", "train.tensorboard=false",
                 f"train.output_dir={out}", "dist.device=cpu"):
        cmd += ["--set", item]
    result = subprocess.run(cmd, capture_output=True, text=True,
                            env=child_env(OMP_NUM_THREADS="1"), timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    logs = []
    for rank in (0, 1):
        rows = [json.loads(x) for x in (out / f"debug_rank{rank}.jsonl").read_text().splitlines()]
        logs.append(([r for r in rows if "labels" in r], rows[-1]["final_weights_sha256"]))
    (steps0, digest0), (steps1, digest1) = logs
    assert digest0 == digest1  # DDP kept the replicas identical
    assert [r["step"] for r in steps0] == [r["step"] for r in steps1] == list(range(1, 9))
    for epoch in (0, 1):
        seen = [[lab for r in steps if r["epoch"] == epoch for lab in r["labels"]]
                for steps in (steps0, steps1)]
        assert len(seen[0]) == len(seen[1]) == PICTURES // 2
        assert sorted(seen[0] + seen[1]) == list(range(PICTURES))  # disjoint, covering the set
    final = torch.load(out / "final.pt", weights_only=True)
    assert final["val"]["n"] == 2 * PICTURES  # every test picture counted exactly once
