"""Distributed fine-tuning with PixMix: setup, training loop, validation, checkpoints, resume.

`train(cfg, resume)` runs one training job in this process (one rank under torchrun/SLURM, or a
plain single process). Conventions:
- `step` counts optimizer steps since the start of training; `epoch` is 0-based internally and
  printed 1-based; the lr follows `schedule.cosine_lr` per step.
- Every epoch's DALI loader is rebuilt from (seed, epoch) (`data.loaders.make_train_loader`),
  so a resume fast-forwards the loader by the steps already done in the epoch and continues
  exactly where an uninterrupted run would be (deterministic on CPU with `train.deterministic`).
- Validation runs through the evaluation suite's runner (`evaluation.runner.Evaluator`) on the
  images eval/clean.py would read, under the evaluation precision policy, so both report the
  same numbers for the same weights.
- Rank 0 writes checkpoints, `metrics.jsonl`, `config.yaml`, `final.pt` into `train.output_dir`.
- SIGTERM/SIGUSR1 set a flag; all ranks agree on it at the next step boundary, save, and return.
"""
from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from dali_pixmix.config import Config
from dali_pixmix.distributed import (
    all_reduce_sum,
    barrier,
    cleanup,
    init_distributed,
)
from dali_pixmix.precision import autocast
from dali_pixmix.provenance import provenance
from dali_pixmix.training import checkpoint as ckpt_io
from dali_pixmix.training.demo import demo_anomaly_rows, prepare_demo_data, results_table
from dali_pixmix.training.methods import mix_batch
from dali_pixmix.training.setup import epoch_loader, open_logs, setup_run, start
from dali_pixmix.training.state import (
    Run,
    StopFlag,
    log,
    save_checkpoint,
    sync_buffers,
    weights_digest,
)


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a non-finite loss); the message names the step."""


# ----------------------------------------------------------------------------- one step
def train_step(run: Run, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Forward/backward/update under autocast; returns the detached loss. `labels` are class
    indices [B], or soft targets [B, classes] (label-mixing methods)."""
    with autocast(run.dist.device, run.amp_dtype):
        loss = F.cross_entropy(run.model(images), labels)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)  # an fp16 overflow step is skipped here, not a failure
    run.scaler.update()
    run.scheduler.step()
    return loss.detach()


def agree_on_flags(run: Run, loss: torch.Tensor, stop: StopFlag) -> tuple:
    """(any loss non-finite, any rank asked to stop, rank 0's timer says save), on every rank.

    One small all-reduce per step; ranks must agree, since a checkpoint ends in a barrier.
    """
    save_due = run.dist.is_main and run.epoch_step < run.steps_per_epoch and (
        time.monotonic() - run.last_save > 60 * run.cfg.train.checkpoint_minutes)
    flags = torch.cat([(~torch.isfinite(loss)).float().reshape(1),
                       torch.tensor([float(stop.requested), float(save_due)], device=loss.device)])
    bad, halt, save = all_reduce_sum(flags).tolist()
    return bad > 0, halt > 0, save > 0


# ----------------------------------------------------------------------------- the loop
@dataclass
class Meter:
    """Running sums between progress lines."""
    loss: float = 0.0
    steps: int = 0
    images: int = 0
    wait: float = 0.0
    total: float = 0.0

    def add(self, loss: float, images: int, wait: float, total: float) -> None:
        self.loss += loss; self.steps += 1; self.images += images
        self.wait += wait; self.total += total

    def summary(self) -> Dict[str, float]:
        return {"loss": self.loss / max(1, self.steps),
                "images_per_s": self.images / max(1e-9, self.total),
                "data_wait": self.wait / max(1e-9, self.total)}


def progress_line(run: Run, meter: Meter) -> str:
    s = meter.summary()
    return (f"epoch {run.epoch + 1}/{run.cfg.train.epochs} step {run.epoch_step}/"
            f"{run.steps_per_epoch} (global {run.step}) loss {s['loss']:.4f} "
            f"lr {run.scheduler.current_lr():.3g} {s['images_per_s']:.1f} img/s "
            f"data wait {100 * s['data_wait']:.0f}%")


def train_epoch(run: Run, stop: StopFlag) -> bool:
    """Train the rest of `run.epoch`; False if the run stopped early (signal or max_steps)."""
    loader = epoch_loader(run, run.epoch)
    batches = iter(loader)
    for _ in range(run.epoch_step):  # fast-forward a resumed epoch (same data and draws)
        next(batches)
    interval, epoch_meter = Meter(), Meter()
    world_images = loader.batch_size * run.dist.world_size
    tick = time.perf_counter()
    for images, labels in batches:
        got = time.perf_counter()
        loss = train_step(run, *mix_batch(run, images, labels))
        run.step += 1
        run.epoch_step += 1
        bad, halt, save_due = agree_on_flags(run, loss, stop)
        if bad:
            raise TrainingError(
                f"non-finite loss ({loss.item()}) at step {run.step} (epoch {run.epoch + 1}, batch "
                f"{run.epoch_step}); stopped without saving, the last good checkpoint in "
                f"{run.out_dir} is kept. Lower optim.lr or check the data/pretrained weights")
        done = time.perf_counter()
        for meter in (interval, epoch_meter):
            meter.add(float(loss), world_images, got - tick, done - tick)
        tick = done
        log_step(run, labels, interval)
        if run.step % run.cfg.train.log_every == 0:
            log(run, progress_line(run, interval))
            interval = Meter()
        at_limit = run.cfg.train.max_steps is not None and run.step >= run.cfg.train.max_steps
        run.halt = halt or at_limit
        if run.halt and run.epoch_step < run.steps_per_epoch:
            save_checkpoint(run, stop.signal_name or "train.max_steps reached")
            return False
        if save_due:  # mid-epoch only: the epoch end saves anyway
            save_checkpoint(run, f"{run.cfg.train.checkpoint_minutes:g} minutes passed")
    run.history.append({"epoch": run.epoch + 1, "step": run.step, **epoch_meter.summary(),
                        "lr": run.scheduler.current_lr()})
    return True


def log_step(run: Run, labels: torch.Tensor, meter: Meter) -> None:
    """TensorBoard scalars and the optional per-rank debug log of sample labels."""
    if run.debug_file is not None:
        run.debug_file.write(json.dumps({"step": run.step, "epoch": run.epoch,
                                         "labels": labels.tolist()}) + "\n")
    if run.writer is not None and run.step % run.cfg.train.log_every == 0:
        run.writer.add_scalar("train/loss", meter.summary()["loss"], run.step)
        run.writer.add_scalar("train/lr", run.scheduler.current_lr(), run.step)


# ----------------------------------------------------------------------------- validation
def evaluate(run: Run) -> Dict[str, Any]:
    """Top-1/top-5/loss/RMS/ECE on the validation set through the evaluation runner: exact
    across ranks (each image once), the same numbers eval/clean.py reports for these weights."""
    sync_buffers(run)
    preds = run.evaluator.infer(run.val_files, run.val_labels, desc="validation")
    return validation_metrics(preds, run.cfg.eval.calibration_bin_size, len(run.classes))


def validation_metrics(preds, bin_size: int, num_classes: int) -> Dict[str, Any]:
    """Accuracies, loss and calibration of validation `Predictions`, in percent.

    The numbers are the evaluation suite's (`tasks.classification_metrics`), as accuracies.
    """
    from dali_pixmix.evaluation.tasks import classification_metrics

    values = classification_metrics(preds, bin_size)
    out = {"n": len(preds), "top1": 100 - values["top1_error"],
           "top5": 100 - values["top5_error"], "loss": float(np.mean(preds.nll, dtype=np.float64)),
           "chance_top1": 100 / num_classes, "ece15": values["ece"], "rms": values["rms"],
           "rms_note": f"adaptive bins of {bin_size}, last bin dropped as in the reference code"}
    if values["rms"] is None:
        out["rms_note"] = (f"not computed: {len(preds)} images < "
                           f"eval.calibration_bin_size={bin_size}")
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in out.items()}


# ----------------------------------------------------------------------------- epoch end
def end_epoch(run: Run) -> None:
    """Validate when due, log one JSON line, save the epoch checkpoint."""
    cfg = run.cfg
    entry = run.history[-1] if run.history and run.history[-1]["epoch"] == run.epoch + 1 else \
        {"epoch": run.epoch + 1, "step": run.step}
    last = run.epoch + 1 == cfg.train.epochs
    if (run.epoch + 1) % cfg.eval.every_epochs == 0 or last:
        entry["val"] = evaluate(run)
        val = entry["val"]
        rms = "n/a" if val["rms"] is None else f"{val['rms']:.2f}"
        log(run, f"epoch {run.epoch + 1} validation: top-1 {val['top1']:.2f}% top-5 "
                 f"{val['top5']:.2f}% loss {val['loss']:.4f} RMS {rms} ({val['n']} images)")
        if run.writer is not None:
            for key in ("top1", "top5", "loss"):
                run.writer.add_scalar(f"val/{key}", val[key], run.step)
    if run.dist.is_main:
        with open(run.out_dir / "metrics.jsonl", "a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")
    run.epoch, run.epoch_step = run.epoch + 1, 0
    save_checkpoint(run, f"end of epoch {run.epoch}")


def save_final(run: Run, val: Optional[Dict]) -> Path:
    """`final.pt`: weights (torchvision keys), classes, arch, config, last validation."""
    path = run.out_dir / "final.pt"
    if run.dist.is_main:
        ckpt_io.atomic_save({"model": run.raw_model.state_dict(), "classes": list(run.classes),
                             "arch": run.cfg.model.arch, "config": run.cfg.to_dict(),
                             "epoch": run.epoch, "step": run.step, "epoch_step": 0,
                             "val": json.loads(json.dumps(val)),
                             "provenance": provenance()}, path)
    barrier()
    return path


# ----------------------------------------------------------------------------- entry point
def fit(run: Run, stop: StopFlag) -> Dict[str, Any]:
    """Epoch loop; returns the status and the last validation metrics."""
    cfg = run.cfg
    if run.epoch < cfg.train.epochs:
        log(run, f"training {cfg.model.arch} on {len(run.samples)} images / {len(run.classes)} "
                 f"classes: {run.dist.world_size} rank(s) x batch "
                 f"{cfg.train.batch_size // run.dist.world_size}, {run.steps_per_epoch} "
                 f"steps/epoch, augment.method={cfg.augment.method}, amp "
                 f"{run.amp_dtype}, device {run.dist.device}")
    while run.epoch < cfg.train.epochs:
        finished = train_epoch(run, stop)
        gc.collect()  # release the epoch's DALI pipeline (and its device buffers) now
        if not finished:
            return {"status": "stopped", "step": run.step}
        end_epoch(run)
        if run.halt and run.epoch < cfg.train.epochs:
            log(run, f"stopping after step {run.step}: {stop.signal_name or 'train.max_steps reached'}")
            return {"status": "stopped", "step": run.step}
    val = next((h["val"] for h in reversed(run.history) if "val" in h), None) or evaluate(run)
    final_path = save_final(run, val)
    extra = demo_anomaly_rows(run, final_path) if cfg.demo.enabled else []
    log(run, results_table(val, cfg, extra))
    return {"status": "finished", "step": run.step, "val": val}


def train(cfg: Config, resume: str = "auto") -> Dict[str, Any]:
    """Run (or continue) training in this process; returns {"status", "step", ["val"]}."""
    stop = StopFlag()
    stop.install()
    dist = init_distributed(cfg.dist.device, cfg.dist.timeout_minutes)
    try:
        prepare_demo_data(cfg, dist)
        run = setup_run(cfg, dist)
        open_logs(run)
        start(run, resume)
        result = fit(run, stop)
        if run.debug_file is not None:
            sync_buffers(run)
            run.debug_file.write(json.dumps({"final_weights_sha256": weights_digest(run.raw_model),
                                             "step": run.step}) + "\n")
            run.debug_file.close()
        if run.writer is not None:
            run.writer.close()
        return result
    finally:
        cleanup()
