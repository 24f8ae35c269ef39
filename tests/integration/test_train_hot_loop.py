"""The training step path reads nothing on the host, and a non-finite loss is still caught.

The step path of `training.loop.train_epoch` (loader, forward/backward/update, step records)
runs under a `TorchFunctionMode` that records every torch call reading a tensor on the host
(`.item()`, `float(t)`, `.tolist()`, `bool(t)`, `.numpy()`, `.cpu()`, ...) or making a tensor
from Python values; from the second step on none may happen (on a GPU each would wait for the
device). The one-step-late read of the step records goes through numpy views of pinned
buffers, outside torch. Runs are tiny (resnet18 at 32 px, PixMix on, 3 steps per epoch).
"""
import json
import weakref

import pytest
import torch
from host_reads import HostReads

from dali_pixmix.checkpoint import list_checkpoints
from dali_pixmix.config import load_config
from dali_pixmix.training import loop

pytestmark = pytest.mark.integration

def tiny_config(data, mixing, out, *extra):
    return load_config(None, [
        f"data.train={data}/train", f"data.val={data}/val", f"pixmix.mixing_set={mixing}",
        "pixmix.bank_size=64", f"train.output_dir={out}", "data.crop=32", "data.val_resize=36",
        "data.val_crop=32", "data.num_threads=1", "model.arch=resnet18", "train.batch_size=16",
        "eval.batch_size=24", "train.log_every=1", "train.tensorboard=false",
        "train.deterministic=true", "optim.lr=0.05", "eval.calibration_bin_size=10", *extra])


def watch_steps(monkeypatch, mode: HostReads, first_step: int = 2):
    """Arm `mode` from step `first_step` of every epoch's step loop to the end of the loop."""
    real_step, real_epoch = loop.train_step, loop.train_epoch
    calls = []

    def step(run, images, labels):
        calls.append(run.step)
        loss = real_step(run, images, labels)
        mode.armed = len(calls) >= first_step - 1  # armed after the first step's work
        return loss

    def epoch(run, stop):
        try:
            with mode:
                return real_epoch(run, stop)
        finally:
            mode.armed = False

    monkeypatch.setattr(loop, "train_step", step)
    monkeypatch.setattr(loop, "train_epoch", epoch)
    return calls


def test_the_detector_sees_host_reads():
    """The check has teeth: what the old step path did is recorded."""
    loss = torch.tensor(0.5)
    with HostReads() as mode:
        mode.armed = True
        float(loss), loss.item(), torch.isfinite(loss).tolist(), bool(loss > 0)
        torch.tensor([0.0, 1.0])
    assert mode.seen == ["__float__", "item", "tolist", "__bool__", "tensor"]


def test_steps_after_the_first_read_nothing_on_the_host(tiny_imagenet, tiny_mixing_dir,
                                                        tmp_path, monkeypatch):
    mode = HostReads()
    calls = watch_steps(monkeypatch, mode)
    cfg = tiny_config(tiny_imagenet, tiny_mixing_dir, tmp_path / "out", "train.epochs=2",
                      "train.debug_log=true")  # the debug log reads labels one step late too
    result = loop.train(cfg, resume="none")
    assert result["status"] == "finished" and calls == list(range(6))
    assert mode.seen == []
    logged = (tmp_path / "out" / "debug_rank0.jsonl").read_text().splitlines()
    assert len(logged) == 7 and '"step": 6' in logged[5]  # every step's labels, in order
    assert (tmp_path / "out" / "curves.png").stat().st_size > 1000  # drawn at the run's end


def test_nan_mid_run_is_named_by_its_step_and_never_saved(tiny_imagenet, tiny_mixing_dir,
                                                          tmp_path, monkeypatch):
    """A NaN first appears at step 5 (epoch 2, batch 2). The timer asks for a checkpoint after
    every step (checkpoint_minutes=0), and the save due at step 5 would hold weights updated by
    the NaN step: it is never written; the run stops naming step 5."""
    real_step = loop.train_step

    def poisoned(run, images, labels):
        if run.step == 4:  # the 5th step
            with torch.no_grad():
                run.raw_model.fc.bias.fill_(float("nan"))
        return real_step(run, images, labels)

    monkeypatch.setattr(loop, "train_step", poisoned)
    out = tmp_path / "out"
    cfg = tiny_config(tiny_imagenet, tiny_mixing_dir, out, "train.epochs=3",
                      "train.checkpoint_minutes=0")
    with pytest.raises(loop.TrainingError,
                       match=r"non-finite loss \(nan\) at step 5 \(epoch 2, batch 2\)"):
        loop.train(cfg, resume="none")
    saved = list_checkpoints(out)
    assert [p.name for p in saved] == ["ckpt_e0000_s000000002.pt", "ckpt_e0001_s000000003.pt"]
    for path in saved:
        weights = torch.load(path, weights_only=True)["model"]
        assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_a_signal_is_read_one_step_late_and_saved_after_the_next_step(tiny_imagenet,
                                                                      tiny_mixing_dir,
                                                                      tmp_path, monkeypatch):
    """A stop request made when step 4 is recorded (epoch 2, batch 1) is read with step 4's
    record while step 5 runs; the run saves at step 5 once step 5's record is read, and stops."""
    real_record = loop.record_step

    def record(run, loss, labels, stop, **batch):
        if run.step == 4:
            stop.requested, stop.signal_name = True, "SIGTERM"
        real_record(run, loss, labels, stop, **batch)

    monkeypatch.setattr(loop, "record_step", record)
    out = tmp_path / "out"
    cfg = tiny_config(tiny_imagenet, tiny_mixing_dir, out, "train.epochs=2")
    assert loop.train(cfg, resume="none") == {"status": "stopped", "step": 5}
    assert [p.name for p in list_checkpoints(out)] == ["ckpt_e0001_s000000003.pt",
                                                       "ckpt_e0001_s000000005.pt"]
    assert not (out / "final.pt").exists()


def test_a_signal_at_an_epochs_last_step_validates_that_epoch_on_resume(tiny_imagenet,
                                                                        tiny_mixing_dir,
                                                                        tmp_path, monkeypatch):
    """A stop read at the last step of epoch 1 (and later of epoch 2, the last): the epoch's
    checkpoint is saved and the run stops without validating (a preempted job has seconds
    left); the resumed run validates that epoch before anything else, once."""
    real_record, real_evaluate = loop.record_step, loop.evaluate
    signal_at, validated = {2}, []

    def record(run, loss, labels, stop, **batch):
        if run.step in signal_at:  # read one step late: the stop lands on step 3 / step 6
            stop.requested, stop.signal_name = True, "SIGUSR1"
        real_record(run, loss, labels, stop, **batch)

    def evaluate(run):
        validated.append((run.epoch, run.step))
        return real_evaluate(run)

    monkeypatch.setattr(loop, "record_step", record)
    monkeypatch.setattr(loop, "evaluate", evaluate)
    out = tmp_path / "out"
    cfg = tiny_config(tiny_imagenet, tiny_mixing_dir, out, "train.epochs=2")
    assert loop.train(cfg, resume="none") == {"status": "stopped", "step": 3}
    assert validated == [] and not (out / "metrics.jsonl").exists()
    signal_at.clear(), signal_at.add(5)
    assert loop.train(cfg, resume="auto") == {"status": "stopped", "step": 6}
    assert validated == [(1, 3)] and not (out / "final.pt").exists()
    signal_at.clear()
    result = loop.train(cfg, resume="auto")
    assert result["status"] == "finished" and result["step"] == 6
    assert validated == [(1, 3), (2, 6)] and (out / "final.pt").exists()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(line["epoch"], "val" in line) for line in lines] == [(1, True), (2, True)]


def test_a_checkpoint_without_loader_state_resumes_with_a_note(tiny_imagenet, tiny_mixing_dir,
                                                               tmp_path, capsys):
    """A checkpoint without the DALI state (an older one, or another world size): the run
    goes on from its step in the same data order and says that the crop/flip draws differ."""
    out = tmp_path / "out"
    cfg = tiny_config(tiny_imagenet, tiny_mixing_dir, out, "train.epochs=2", "train.max_steps=2")
    assert loop.train(cfg, resume="none")["step"] == 2
    (path,) = list_checkpoints(out)
    state = torch.load(path, weights_only=True)
    assert len(state["loader"]["dali"]) == 1 and state["loader"]["position"] == 2
    del state["loader"]
    torch.save(state, path)
    capsys.readouterr()
    cfg.train.max_steps = 4
    assert loop.train(cfg, resume="auto") == {"status": "stopped", "step": 4}
    assert ("the checkpoint's loader state is not used (the checkpoint holds none)"
            in capsys.readouterr().out)


def test_a_cuda_graph_asked_for_on_the_cpu_is_noted_and_the_run_goes_on(tiny_imagenet,
                                                                       tiny_mixing_dir,
                                                                       tmp_path, capsys):
    cfg = tiny_config(tiny_imagenet, tiny_mixing_dir, tmp_path / "out", "train.epochs=1",
                      "train.max_steps=1", "pixmix.cuda_graph=true", "pixmix.strategy=dense")
    assert loop.train(cfg, resume="none") == {"status": "stopped", "step": 1}
    assert "note: pixmix.cuda_graph applies on GPUs only" in capsys.readouterr().out


def test_a_batch_outlives_the_step_that_reads_it(tiny_imagenet, tiny_mixing_dir, tmp_path,
                                                 monkeypatch):
    """DALI's batches are zero-copy views that go back to DALI's pool when torch drops them,
    with no ordering against the device. The host queues step s+1 before step s has run, so
    batch s must still be referenced while step s+1 is queued (it is, in step s's record),
    and let go once step s's record was read (so DALI can reuse the memory)."""
    real_step, batches, seen = loop.train_step, [], []

    def step(run, images, labels):
        seen.append([ref() is not None for ref in batches])
        batches.append(weakref.ref(images))
        return real_step(run, images, labels)

    monkeypatch.setattr(loop, "train_step", step)
    cfg = tiny_config(tiny_imagenet, tiny_mixing_dir, tmp_path / "out", "train.epochs=1")
    assert loop.train(cfg, resume="none")["status"] == "finished"
    assert len(seen) == 3
    assert seen[1][0] and seen[2][1]  # the previous step's batch: still referenced
    assert not seen[2][0]  # the one before: released once its record was read
