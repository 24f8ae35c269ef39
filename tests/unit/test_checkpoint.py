"""Checkpoints: atomic write, rotation, truncated files skipped, RNG round trip, weights_only."""
import random

import numpy as np
import pytest
import torch
import torchvision

from dali_pixmix.checkpoint import (
    atomic_save,
    capture_rng,
    find_latest_valid,
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    restore_rng,
    save_step_checkpoint,
)

pytestmark = pytest.mark.unit


def state(epoch, step, model=None):
    return {"model": (model or torch.nn.Linear(2, 2)).state_dict(), "epoch": epoch, "step": step,
            "epoch_step": step, "classes": ["n01", "n02"], "arch": "x", "rng": capture_rng(),
            "config": {"optim": {"lr": 0.1}}, "optimizer": None, "scheduler": {"step": step},
            "scaler": None}


def test_rotation_keeps_newest_and_orders_by_step(tmp_path):
    for step in (5, 10, 15, 20):
        save_step_checkpoint(state(step // 10, step), tmp_path, keep=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["ckpt_e0001_s000000015.pt", "ckpt_e0002_s000000020.pt"]
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_truncated_newest_is_skipped_with_warning(tmp_path):
    save_step_checkpoint(state(0, 3), tmp_path, keep=5)
    newest = save_step_checkpoint(state(0, 6), tmp_path, keep=5)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="skipping unreadable checkpoint"):
        ckpt = find_latest_valid(tmp_path)
    assert ckpt["step"] == 3
    with pytest.raises(ValueError, match="may be truncated"):
        load_checkpoint(newest)
    assert resolve_resume("none", tmp_path) is None
    assert find_latest_valid(tmp_path / "empty") is None


def test_foreign_file_is_a_clear_error(tmp_path):
    atomic_save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a dali-pixmix training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        resolve_resume(str(tmp_path / "missing.pt"), tmp_path)


def test_rng_round_trip_through_weights_only_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's legacy state
    atomic_save(state(0, 1), tmp_path / "ckpt_e0000_s000000001.pt")
    expected = (torch.rand(3), np.random.standard_normal(3), random.random())
    restore_rng(load_checkpoint(tmp_path / "ckpt_e0000_s000000001.pt")["rng"])
    got = (torch.rand(3), np.random.standard_normal(3), random.random())
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_saved_resnet50_weights_load_into_torchvision(tmp_path):
    model = torchvision.models.resnet50(num_classes=7)
    save_step_checkpoint(state(0, 1, model), tmp_path, keep=1)
    ckpt = torch.load(list_checkpoints(tmp_path)[0], weights_only=True)
    fresh = torchvision.models.resnet50(num_classes=7)
    fresh.load_state_dict(ckpt["model"])  # strict: same keys, no "module." prefix
    assert torch.equal(fresh.fc.weight, model.fc.weight)


def test_final_weights_are_refused_for_resuming_with_the_way_to_use_them(tmp_path):
    """final.pt (weights, classes, epoch, step, no optimizer state) cannot be resumed; the
    error says how to train on from it."""
    final = {"model": torch.nn.Linear(2, 2).state_dict(), "classes": ["n01", "n02"], "arch": "x",
             "epoch": 1, "step": 3, "epoch_step": 0, "val": {"top1": 50.0}}
    atomic_save(final, tmp_path / "final.pt")
    with pytest.raises(ValueError, match=r"final weights without optimizer.*--resume none --set "
                                         r"model\.pretrained=.*final\.pt"):
        resolve_resume(str(tmp_path / "final.pt"), tmp_path)


def test_empty_checkpoint_is_named(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"checkpoint .*empty\.pt is an empty file"):
        load_checkpoint(tmp_path / "empty.pt")


def test_partial_files_of_a_killed_save_are_removed_when_a_run_starts(tmp_path):
    """kill -9 during a save leaves `.ckpt_*.pt.tmp<pid>`; the next start removes them, and
    nothing else."""
    from dali_pixmix.config import load_config
    from dali_pixmix.training.resume import choose_start

    save_step_checkpoint(state(0, 3), tmp_path, keep=2)
    stale = [tmp_path / ".ckpt_e0000_s000000006.pt.tmp4242", tmp_path / ".final.pt.tmp77"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    keep = [tmp_path / ".hidden_notes.tmp1", tmp_path / "ckpt_notes.txt"]
    for path in keep:
        path.write_text("mine")
    cfg = load_config(None, [f"train.output_dir={tmp_path}", "model.arch=x", "optim.lr=0.1"])
    assert choose_start(cfg, "auto")["step"] == 3
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)


def test_a_checkpoint_from_before_augment_method_keeps_its_recipe():
    from dali_pixmix.config import Config
    from dali_pixmix.training.resume import config_changes

    saved = Config().to_dict()
    del saved["augment"]
    saved["pixmix"]["enabled"] = False  # a baseline run written before augment.method
    recipe, _ = config_changes(saved, Config().to_dict())  # default method: pixmix
    assert recipe == [("augment.method", "baseline", "pixmix")]
