"""Training under faults: bad images, a used output folder, changed recipes, lost checkpoints.

Runs are tiny (resnet18 at 32 px, PixMix off, 3 steps per epoch): they check what survives a
fault and what the user is told, not accuracy.
"""
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from broken_images import cut_after_header, random_bytes

from dali_pixmix.checkpoint import list_checkpoints
from dali_pixmix.config import load_config
from dali_pixmix.data.checks import UnreadableImageError
from dali_pixmix.training.loop import train

pytestmark = pytest.mark.integration


def config(train_dir, val_dir, out_dir, *extra):
    return load_config(None, [
        f"data.train={train_dir}", f"data.val={val_dir}", "augment.method=baseline",
        f"train.output_dir={out_dir}", "data.crop=32", "data.val_resize=36", "data.val_crop=32",
        "data.num_threads=1", "model.arch=resnet18", "train.batch_size=16",
        "eval.batch_size=24", "train.log_every=1", "train.tensorboard=false",
        "train.deterministic=true", "optim.lr=0.05", "eval.calibration_bin_size=10", *extra])


def metrics(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text()
            .splitlines()]


@pytest.fixture(scope="module")
def stopped_run(tiny_imagenet, tmp_path_factory):
    """A run of train.epochs=1 stopped by train.max_steps=1 (checkpoint at step 1)."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    cfg = config(tiny_imagenet / "train", tiny_imagenet / "val", out, "train.epochs=1",
                 "train.max_steps=1")
    assert train(cfg, resume="none") == {"status": "stopped", "step": 1}
    return out


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_resume_none_in_a_used_folder_is_refused_or_archived(tiny_imagenet, stopped_run,
                                                             tmp_path, capsys):
    """A new run never mixes with an earlier run's checkpoints (whose step numbers may be
    higher): refused, or the earlier run is archived; then --resume auto continues the NEW run."""
    out = copy_run(stopped_run, tmp_path / "run")
    earlier = list_checkpoints(out)
    cfg = config(tiny_imagenet / "train", tiny_imagenet / "val", out, "train.epochs=1",
                 "train.max_steps=1", "optim.lr=0.02")  # another recipe: a new run
    with pytest.raises(ValueError, match=r"already holds a run .*--archive.*--overwrite"):
        train(cfg, resume="none")
    assert list_checkpoints(out) == earlier  # nothing touched
    with pytest.raises(ValueError, match="never with --resume auto"):
        train(cfg, resume="auto", previous="archive")
    # the earlier run's checkpoint is made to look further on than the new run will be
    earlier[0].rename(out / "ckpt_e0000_s000000002.pt")
    train(cfg, resume="none", previous="archive")  # stops at step 1 (train.max_steps)
    archived = list((out / "archive").iterdir())
    assert len(archived) == 1 and (archived[0] / "ckpt_e0000_s000000002.pt").is_file()
    assert [p.name for p in list_checkpoints(out)] == ["ckpt_e0000_s000000001.pt"]
    # an interruption, then a requeue with --resume auto: the new run goes on
    capsys.readouterr()
    cfg.train.max_steps = 2
    assert train(cfg, resume="auto") == {"status": "stopped", "step": 2}
    assert f"resumed from {out / 'ckpt_e0000_s000000001.pt'}" in capsys.readouterr().out
    state = torch.load(list_checkpoints(out)[-1], weights_only=True)
    assert state["config"]["optim"]["lr"] == 0.02
    train(cfg, resume="none", previous="overwrite")
    assert len(list((out / "archive").iterdir())) == 1  # overwrite deleted, did not archive


def test_changed_recipe_is_refused_unless_asked_and_printed(tiny_imagenet, stopped_run,
                                                            tmp_path, capsys):
    out = copy_run(stopped_run, tmp_path / "run")
    saved = (out / "config.yaml").read_text()
    changed = config(tiny_imagenet / "train", tiny_imagenet / "val", out, "train.epochs=1",
                     "train.max_steps=2", "optim.lr=0.1", "train.seed=3", "train.log_every=2")
    with pytest.raises(ValueError, match=r"optim\.lr 0\.05 -> 0\.1, train\.seed 0 -> 3; .*"
                                         r"--resume-changed"):
        train(changed, resume="auto")
    assert (out / "config.yaml").read_text() == saved  # not overwritten by a refused resume
    capsys.readouterr()
    assert train(changed, resume="auto", resume_changed=True)["step"] == 2
    printed = capsys.readouterr().out
    assert "changed recipe (--resume-changed): optim.lr 0.05 -> 0.1, train.seed 0 -> 3" in printed
    note = next(line for line in printed.splitlines() if "not part of the recipe" in line)
    assert "train.log_every 1 -> 2, train.max_steps 1 -> 2" in note
    assert (out / "config_before_step1.yaml").read_text() == saved
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["lr"] == 0.1


@pytest.mark.parametrize("change, key, folder", [
    ("augment.method=cutmix", r"augment\.method 'baseline' -> 'cutmix'", "run_cutmix"),
    ("model.arch=resnet34", r"model\.arch", "run_resnet34")])
def test_another_method_or_model_is_another_run_even_with_resume_changed(
        tiny_imagenet, stopped_run, tmp_path, change, key, folder):
    """What a run IS never changes on resume: --resume-changed would continue the baseline
    weights under the new method's name. The first way out named is another folder."""
    out = copy_run(stopped_run, tmp_path / "run")

    def files():  # the folder's lock file only names its latest holder
        return sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir()
                      if p.name != ".train.lock")

    before = files()
    changed = config(tiny_imagenet / "train", tiny_imagenet / "val", out, "train.epochs=1",
                     change)
    for resume_changed in (False, True):
        with pytest.raises(ValueError) as err:
            train(changed, resume="auto", resume_changed=resume_changed)
        assert re.search(key, str(err.value)), err.value
        assert (f"(train it in a folder of its own, e.g. --set train.output_dir="
                f"{tmp_path / folder}; or resume with the checkpoint's settings; or replace "
                f"the run in {out} with --resume none --archive)") in str(err.value)
    assert files() == before


def test_lost_epoch_checkpoint_is_retrained_without_a_duplicate_metrics_line(tiny_imagenet,
                                                                             tmp_path):
    out = tmp_path / "run"
    cfg = config(tiny_imagenet / "train", tiny_imagenet / "val", out, "train.epochs=2")
    assert train(cfg, resume="none")["step"] == 6
    first = metrics(out)
    final = torch.load(out / "final.pt", weights_only=True)["model"]
    (out / "ckpt_e0002_s000000006.pt").unlink()  # the last epoch's checkpoint is lost
    assert train(cfg, resume="auto")["step"] == 6  # epoch 2 again, from the end of epoch 1
    again = metrics(out)
    assert [m["epoch"] for m in again] == [1, 2]
    assert again[1]["val"] == first[1]["val"] and again[1]["loss"] == first[1]["loss"]
    redone = torch.load(out / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(final[k], redone[k]) for k in final)


def test_resume_with_fewer_steps_per_epoch_ends_an_epoch_already_past_them(tiny_imagenet,
                                                                          tmp_path, capsys):
    """A mid-epoch checkpoint (step 5 of 6) resumed where an epoch has 3 steps (a smaller
    data.train, which a resume may change; another world size does the same): the epoch is
    over, its line is written, and the next epoch trains its 3 steps."""
    small = tmp_path / "small"
    for folder in sorted((tiny_imagenet / "train").iterdir()):
        (small / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:4]:
            shutil.copy(image, small / folder.name / image.name)
    out, common = tmp_path / "run", ("train.epochs=2", "train.batch_size=8")
    cfg = config(tiny_imagenet / "train", tiny_imagenet / "val", out, *common, "train.max_steps=5")
    assert train(cfg, resume="none") == {"status": "stopped", "step": 5}
    capsys.readouterr()
    result = train(config(small, tiny_imagenet / "val", out, *common), resume="auto")
    assert result["status"] == "finished" and result["step"] == 8
    assert "had 6 steps per epoch, this run has 3" in capsys.readouterr().out
    assert [(m["epoch"], m["step"]) for m in metrics(out)] == [(1, 5), (2, 8)]


def test_bad_validation_image_never_costs_the_epoch(tiny_imagenet, tmp_path):
    """The epoch's checkpoint is written before validation; the file is named; after the fix
    `--resume auto` validates that epoch and goes on."""
    val = shutil.copytree(tiny_imagenet / "val", tmp_path / "val")
    bad = cut_after_header(next((val).iterdir()) / "zz_cut.JPEG")  # header fine, data cut
    out = tmp_path / "run"
    cfg = config(tiny_imagenet / "train", val, out, "train.epochs=1")
    with pytest.raises(UnreadableImageError, match=rf"validation image {bad} .*validating "
                                                   r"epoch 1, whose checkpoint is saved"):
        train(cfg, resume="none")
    assert [p.name for p in list_checkpoints(out)] == ["ckpt_e0001_s000000003.pt"]
    assert not (out / "metrics.jsonl").exists()
    bad.unlink()  # the fix
    result = train(cfg, resume="auto")
    assert result["status"] == "finished" and result["step"] == 3 and result["val"]["n"] == 24
    assert [(m["epoch"], m["val"]["n"]) for m in metrics(out)] == [(1, 24)]
    assert not (out / "bad_images.txt").exists()


def test_bad_training_image_is_named_and_never_crash_loops(tiny_imagenet, tmp_path):
    train_dir = shutil.copytree(tiny_imagenet / "train", tmp_path / "train")
    victim = sorted(next(train_dir.iterdir()).iterdir())[0]
    original = victim.read_bytes()
    cut_after_header(victim)  # decodes up to the header: only DALI's decoding step fails
    out = tmp_path / "run"
    cfg = config(train_dir, tiny_imagenet / "val", out, "train.epochs=1")
    with pytest.raises(UnreadableImageError, match=rf"training image {victim} .* at step \d "
                                                   r"\(epoch 1\); training stopped"):
        train(cfg, resume="none")
    assert (out / "bad_images.txt").read_text().split() == [str(victim.resolve())]
    # a rerun stops at once, before any model or pipeline is built, instead of training up to
    # the same step and failing there again
    with pytest.raises(UnreadableImageError, match="found by an earlier attempt"):
        train(cfg, resume="auto")
    victim.write_bytes(original)  # the fix
    assert train(cfg, resume="auto")["status"] == "finished"
    assert not (out / "bad_images.txt").exists()


def test_image_without_a_header_stops_the_run_at_start_with_its_name(tiny_imagenet, tmp_path):
    """Random bytes named .JPEG: found by the start-up header check, before DALI (which would
    crash on it in a batch of 32 or more) and before the model is built."""
    train_dir = shutil.copytree(tiny_imagenet / "train", tmp_path / "train")
    junk = random_bytes(next(train_dir.iterdir()) / "junk.JPEG")
    cfg = config(train_dir, tiny_imagenet / "val", tmp_path / "run", "train.batch_size=48")
    with pytest.raises(UnreadableImageError) as caught:
        train(cfg, resume="none")
    assert caught.value.files == [junk]
    assert f"python tools/make_file_list.py {train_dir} --verify" in str(caught.value)
    assert list_checkpoints(tmp_path / "run") == []


def test_a_second_run_in_a_folder_in_use_is_refused_and_leaves_its_files_alone(tiny_imagenet,
                                                                              tmp_path):
    """Two runs started in one folder: the second is refused (one line naming the holder)
    before it touches anything, e.g. the first run's checkpoint being written; the lock dies
    with its process (kill -9 leaves no stale lock)."""
    import os
    import signal
    import subprocess
    import sys

    from child_env import child_env

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom dali_pixmix.training.outputs import "
         f"folder_lock\nwith folder_lock({str(out)!r}):\n    print('held', flush=True)\n"
         "    time.sleep(600)"], stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert holder.stdout.readline() == "held\n"
        writing = out / f".ckpt_e0000_s000000002.pt.tmp{holder.pid}"  # its save in progress
        writing.write_bytes(b"half a checkpoint")
        cfg = config(tiny_imagenet / "train", tiny_imagenet / "val", out, "train.epochs=1",
                     "train.max_steps=1")
        with pytest.raises(ValueError) as caught:
            train(cfg, resume="auto")
        assert str(caught.value).startswith(
            f"train.output_dir {out} is in use by another training run (pid {holder.pid} on ")
        assert "set another train.output_dir" in str(caught.value)
        assert writing.read_bytes() == b"half a checkpoint" and not list_checkpoints(out)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert train(cfg, resume="auto") == {"status": "stopped", "step": 1}  # no stale lock
    assert not writing.exists()  # now a killed save's leftover: removed
