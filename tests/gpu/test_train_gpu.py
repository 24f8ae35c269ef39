"""The training engine on CUDA: nvJPEG + GPU PixMix, AMP (bf16 and fp16 + GradScaler),
channels_last; a stopped run resumes; the step path never makes the host wait for the GPU.
Skipped without CUDA."""
from pathlib import Path

import pytest
import torch
import torchvision

from dali_pixmix.checkpoint import list_checkpoints
from dali_pixmix.config import load_config
from dali_pixmix.training import loop
from dali_pixmix.training.loop import train

pytestmark = pytest.mark.gpu


def overrides(data, mixing, out, *extra):
    return [f"data.train={data}/train", f"data.val={data}/val", f"pixmix.mixing_set={mixing}",
            "pixmix.bank_size=64", f"train.output_dir={out}", "data.crop=32", "data.val_resize=36",
            "data.val_crop=32", "model.arch=resnet18", "train.batch_size=16", "eval.batch_size=24",
            "train.log_every=1", "train.tensorboard=false", "eval.calibration_bin_size=10",
            "dist.device=cuda", *extra]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_gpu_training_stops_and_resumes(tiny_imagenet, tiny_mixing_dir, tmp_path, amp):
    out = tmp_path / amp
    first = load_config(None, overrides(tiny_imagenet, tiny_mixing_dir, out, f"train.amp={amp}",
                                        "train.epochs=2", "train.max_steps=4"))
    assert train(first, resume="auto") == {"status": "stopped", "step": 4}
    state = torch.load(list_checkpoints(out)[-1], weights_only=True)
    assert (state["scaler"] is not None) == (amp == "fp16")
    second = load_config(None, overrides(tiny_imagenet, tiny_mixing_dir, out, f"train.amp={amp}",
                                         "train.epochs=2"))
    result = train(second, resume="auto")
    assert result["status"] == "finished" and result["step"] == 6
    assert result["val"]["n"] == 24
    model = torchvision.models.resnet18(num_classes=6)
    model.load_state_dict(torch.load(Path(out) / "final.pt", weights_only=True)["model"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_gpu_training_steps_never_synchronise_the_host(tiny_imagenet, tiny_mixing_dir, tmp_path,
                                                       monkeypatch, amp):
    """From the second step of each epoch to its end (loader, forward/backward, fused SGD with
    fp16's GradScaler, step records, progress lines, debug log), every torch call that would
    make the host wait for the GPU raises (`set_sync_debug_mode("error")`; the PixMix stage in
    DALI's thread runs under it too). The waits on step events (one step late) are not
    such calls: they wait for a step that is done while the next one is queued."""
    real_step, real_epoch = loop.train_step, loop.train_epoch
    steps = []

    def step(run, images, labels):
        loss = real_step(run, images, labels)
        steps.append(run.step)
        torch.cuda.set_sync_debug_mode("error")  # from the end of the epoch's first step
        return loss

    def epoch(run, stop):
        try:
            return real_epoch(run, stop)
        finally:
            torch.cuda.set_sync_debug_mode("default")  # checkpoints and validation may wait

    monkeypatch.setattr(loop, "train_step", step)
    monkeypatch.setattr(loop, "train_epoch", epoch)
    out = tmp_path / amp
    cfg = load_config(None, overrides(tiny_imagenet, tiny_mixing_dir, out, f"train.amp={amp}",
                                      "train.epochs=2", "train.debug_log=true"))
    result = train(cfg, resume="none")
    assert result["status"] == "finished" and steps == list(range(6))
    state = torch.load(list_checkpoints(out)[-1], weights_only=True)
    assert state["optimizer"]["param_groups"][0]["fused"] is True  # inf check on the device
    assert (out / "debug_rank0.jsonl").read_text().count('"labels"') == 6
