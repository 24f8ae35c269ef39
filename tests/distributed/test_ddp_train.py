"""Two CPU ranks under torchrun (gloo): disjoint shards, identical weights, exact validation,
a mid-epoch resume that restores every rank's loader; CIFAR training (the in-memory split) too.

Every training picture is its own class, so the labels a rank logs identify its samples.
"""
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from child_env import child_env

from dali_pixmix.data.synthetic import make_synthetic_imagenet
from dali_pixmix.evaluation.synthetic_cifar import make_synthetic_cifar

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[2]
IMAGES = 16  # one per class


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_output(logs: Path, rank: int, stream: str) -> str:
    """What local rank `rank` wrote to `stream` in a torchrun job run with --tee 3 --log-dir
    `logs` (`<logs>/<job>/attempt_0/<rank>/<stream>.log`)."""
    found = list(logs.glob(f"*/attempt_*/{rank}/{stream}.log"))
    assert len(found) == 1, found
    return found[0].read_text()


def read_debug(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if "labels" in r], rows[-1]["final_weights_sha256"]


def check_lockstep_on_disjoint_shards(out):
    """Two ranks' debug logs of 2 epochs x 4 steps over IMAGES one-picture classes: the same
    steps, identical final weights, disjoint shards covering the set every epoch; rank 0's
    steps."""
    steps0, digest0 = read_debug(out / "debug_rank0.jsonl")
    steps1, digest1 = read_debug(out / "debug_rank1.jsonl")
    assert digest0 == digest1  # DDP kept the replicas identical
    assert [r["step"] for r in steps0] == [r["step"] for r in steps1] == list(range(1, 9))
    for epoch in (0, 1):
        seen0 = [lab for r in steps0 if r["epoch"] == epoch for lab in r["labels"]]
        seen1 = [lab for r in steps1 if r["epoch"] == epoch for lab in r["labels"]]
        assert len(seen0) == len(seen1) == IMAGES // 2
        assert sorted(seen0 + seen1) == list(range(IMAGES))  # disjoint shards covering the set
    return steps0


def test_two_ranks_see_disjoint_data_and_end_identical(tmp_path, tiny_mixing_dir):
    data = make_synthetic_imagenet(tmp_path / "data", num_classes=IMAGES, train_per_class=1,
                                   val_per_class=1, min_size=40, max_size=64, progress=False)
    out = tmp_path / "out"
    sets = [f"data.train={data / 'train'}", f"data.val={data / 'val'}", "data.crop=32",
            "data.val_resize=36", "data.val_crop=32", "data.num_threads=1",
            f"pixmix.mixing_set={tiny_mixing_dir}", "pixmix.bank_size=64", "model.arch=resnet18",
            "train.batch_size=4", "eval.batch_size=6", "train.epochs=2", "train.log_every=1",
            "train.debug_log=true", "train.tensorboard=false", f"train.output_dir={out}",
            "eval.calibration_bin_size=4", "dist.device=cpu", "train.checkpoint_minutes=0"]
    def command(*extra, logs=None):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               f"--master_port={free_port()}"]
        if logs is not None:  # each rank's output also in its own files
            cmd += ["--tee", "3", "--log-dir", str(logs)]
        cmd += [str(REPO / "train_imagenet.py"), "--config", str(REPO / "configs" / "demo.yaml"),
                "--set", "demo.enabled=false"]
        for item in sets + list(extra):
            cmd += ["--set", item]
        return cmd

    cmd = command()
    env = child_env(OMP_NUM_THREADS="1")
    result = subprocess.run(command(logs=tmp_path / "logs"), capture_output=True, text=True,
                            env={**env, "DALI_PIXMIX_PROGRESS": "1"}, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # one job prints one progress bar and one last line: rank 0's (each rank built its bank)
    assert "mixing bank" in rank_output(tmp_path / "logs", 0, "stderr")
    assert "mixing bank" not in rank_output(tmp_path / "logs", 1, "stderr")
    assert "finished at step 8" in rank_output(tmp_path / "logs", 0, "stdout")
    assert "finished at step" not in rank_output(tmp_path / "logs", 1, "stdout")

    steps0 = check_lockstep_on_disjoint_shards(out)
    steps1, digest1 = read_debug(out / "debug_rank1.jsonl")
    first_epoch = [r["labels"] for r in steps0 if r["epoch"] == 0]
    assert first_epoch != [r["labels"] for r in steps0 if r["epoch"] == 1]  # reshuffled

    # checkpoint_minutes=0: rank 0's timer asks for a save at every step whose next step is
    # mid-epoch; the ranks learn it one step late and save at that next step, all together (no
    # hang): steps 2 and 6 (the request of step 2, read before that save, is met by it; the
    # epoch ends 4 and 8 save anyway). The newest 3 are kept
    assert sorted(p.name for p in out.glob("ckpt_*.pt")) == [
        "ckpt_e0001_s000000004.pt", "ckpt_e0001_s000000006.pt", "ckpt_e0002_s000000008.pt"]
    final = torch.load(out / "final.pt", weights_only=True)
    assert final["val"]["n"] == IMAGES  # every validation image counted exactly once
    torchvision.models.resnet18(num_classes=IMAGES).load_state_dict(final["model"])  # no "module."
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2

    # rank 0 decides where a run starts and every rank follows: a refused new run stops both
    # ranks with the same one-line error (none waits for the other), a resume loads one file
    refused = subprocess.run(cmd + ["--resume", "none"], capture_output=True, text=True, env=env,
                             timeout=240)
    assert refused.returncode != 0
    assert refused.stderr.count("error: train.output_dir") == 2, refused.stderr[-3000:]
    # the same command on the finished run reports it: nothing is validated or written again
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    resumed = subprocess.run(command(logs=tmp_path / "again"), capture_output=True, text=True,
                             env=env, timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    printed = rank_output(tmp_path / "again", 0, "stdout")
    assert f"the run in {out} finished at step 8: nothing to train" in printed
    assert "finished at step 8; outputs in" in printed and "resumed from" not in printed
    assert "finished at step" not in rank_output(tmp_path / "again", 1, "stdout")
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()
            if p.is_file() and p.name != ".train.lock"} == {
        p: t for p, t in stamps.items() if p.name != ".train.lock"}

    # stopped mid-epoch at step 3, then resumed: every rank restores its own DALI state (crop
    # and flip draws) and reads on from its step, so the weights equal the uninterrupted run's
    split = tmp_path / "split"
    for extra in (["train.max_steps=3"], []):
        part = subprocess.run(command(f"train.output_dir={split}", *extra), capture_output=True,
                              text=True, env=env, timeout=240)
        assert part.returncode == 0, part.stdout[-3000:] + part.stderr[-3000:]
    assert f"resumed from {split / 'ckpt_e0000_s000000003.pt'}" in part.stdout
    assert "loader state is not used" not in part.stdout
    steps, digest = read_debug(split / "debug_rank1.jsonl")
    assert [r["labels"] for r in steps] == [r["labels"] for r in steps1]  # same data order
    assert digest == digest1


def test_two_ranks_train_cifar_on_disjoint_shards_and_end_identical(tmp_path, tiny_mixing_dir):
    """train_cifar.py: the in-memory train split sharded disjointly, identical replicas, the
    test split validated exactly once across ranks (one picture per class)."""
    root = make_synthetic_cifar(tmp_path / "cifar", "cifar10", ["binary"], IMAGES, 1, 2,
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
    check_lockstep_on_disjoint_shards(out)
    final = torch.load(out / "final.pt", weights_only=True)
    assert final["val"]["n"] == 2 * IMAGES  # every test picture counted exactly once
