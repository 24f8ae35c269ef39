"""Distributed fine-tuning with PixMix: setup, training loop, validation, checkpoints, resume.

`train(cfg, resume)` runs one training job in this process (one rank under torchrun/SLURM, or a
plain single process). Conventions:
- `step` counts optimizer steps since the start of training; `epoch` is 0-based internally and
  printed 1-based; the lr follows `schedule.cosine_lr` per step.
- One DALI training loader serves the whole run (`pipelines.loaders.TrainLoader`, built once per
  rank): the data order is fixed by (seed, epoch), and a checkpoint carries every rank's DALI
  state, so a resumed run starts reading at its step (nothing is replayed) and continues
  exactly where an uninterrupted run would be (deterministic on CPU with `train.deterministic`).
- The host never waits for a step: the loss and the stop/NaN/save flags stay on the device and
  are read one step late (`training.records`); a non-finite loss stops the run naming the step
  where it first appeared, and no checkpoint ever holds weights updated by such a step.
- Validation runs through the evaluation suite's runner (`evaluation.runner.Evaluator`) on the
  images eval/clean.py would read, under the evaluation precision policy, so both report the
  same numbers for the same weights.
- Rank 0 writes checkpoints, `metrics.jsonl`, `config.yaml`, `final.pt` into `train.output_dir`.
- SIGTERM/SIGUSR1 set a flag; all ranks learn it from the step record of the next step, save
  one step later (the step already queued), and return. A `train.checkpoint_minutes` save
  likewise lands one step after rank 0's timer fired.
- An epoch ends with its checkpoint, then its validation and metrics line (`end_epoch`); a run
  resumed from that checkpoint finishes a validation that did not happen (`finish_epoch`).
- Where a run starts (new run, resume, recipe check) is `training.resume`'s decision; an image
  DALI cannot decode stops the run with `UnreadableImageError`, recorded in bad_images.txt.
"""
from __future__ import annotations

import gc
import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from dali_pixmix import checkpoint as ckpt_io
from dali_pixmix.config import Config
from dali_pixmix.data.checks import UnreadableImageError
from dali_pixmix.distributed import DistInfo, barrier, cleanup, init_distributed
from dali_pixmix.precision import autocast
from dali_pixmix.provenance import provenance
from dali_pixmix.training import outputs
from dali_pixmix.training.demo import demo_anomaly_rows, prepare_demo_data, results_table
from dali_pixmix.training.methods import mix_batch
from dali_pixmix.training.records import StepRecord, StepRecords
from dali_pixmix.training.resume import starting_state
from dali_pixmix.training.setup import (
    amp_mode,
    announce_device,
    check_inputs,
    open_logs,
    open_train_loader,
    setup_run,
    start,
)
from dali_pixmix.training.state import (
    Meter,
    Run,
    StopFlag,
    log,
    save_checkpoint,
    sync_buffers,
    weights_digest,
)

CURVES_EVERY_S = 60.0  # seconds between two redraws of curves.png during a run


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a non-finite loss); the message names the step."""


# ----------------------------------------------------------------------------- one step
def train_step(run: Run, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Forward/backward/update under autocast; returns the detached loss (on the device).
    `labels` are class indices [B], or soft targets [B, classes] (label-mixing methods).

    Nothing here reads a tensor on the host: with fp16, `GradScaler.step` hands the inf check
    to the fused optimizer (`setup.build_optimizer`) instead of reading it."""
    with autocast(run.dist.device, run.amp_dtype):
        loss = F.cross_entropy(run.model(images), labels)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)  # an fp16 overflow step is skipped here, not a failure
    run.scaler.update()
    run.scheduler.step()
    return loss.detach()


def timer_says_save(run: Run) -> bool:
    """Rank 0's clock: a checkpoint is due (saved once this step's record is read; a flag
    that arrives at an epoch's end is dropped there, since the epoch end saves anyway)."""
    return run.dist.is_main and (
        time.monotonic() - run.last_save > 60 * run.cfg.train.checkpoint_minutes)


def record_step(run: Run, loss: torch.Tensor, labels: torch.Tensor, stop: StopFlag,
                batch: tuple = ()) -> None:
    """Leave the step's loss and this rank's flags on the device for a one-step-late read;
    the step's `batch` (every tensor it reads) stays alive until then (`training.records`)."""
    run.records.push(loss, labels, stop=stop.requested, save=timer_says_save(run),
                     where=(run.step, run.epoch, run.epoch_step), batch=batch)


def read_records(run: Run, keep: int) -> None:
    """Read the step records until `keep` remain: the NaN check, the agreed stop and save
    flags, the meters, the progress line and the logs. `keep=0` waits for the current step."""
    while len(run.records) > keep:
        record = run.records.pop()
        if record.nonfinite:
            kept = (f"the last good checkpoint in {run.out_dir} is kept"
                    if ckpt_io.list_checkpoints(run.out_dir) else
                    "no checkpoint had been saved yet")
            raise TrainingError(
                f"non-finite loss ({record.loss}) at step {record.step} (epoch "
                f"{record.epoch + 1}, batch {record.epoch_step}); stopped without saving, "
                f"{kept}. Lower optim.lr or check the data/pretrained weights")
        run.halt = run.halt or record.stop
        run.save_due = run.save_due or record.save
        for meter in (run.interval_meter, run.epoch_meter):
            meter.add_loss(record.loss)
        log_step(run, record)


# ----------------------------------------------------------------------------- the loop
def progress_line(run: Run, record: StepRecord, meter: Meter) -> str:
    s = meter.summary()
    return (f"epoch {record.epoch + 1}/{run.cfg.train.epochs} step {record.epoch_step}/"
            f"{run.steps_per_epoch} (global {record.step}) loss {s['loss']:.4f} "
            f"lr {run.scheduler.lr_at(record.step):.3g} {s['images_per_s']:.1f} img/s "
            f"data wait {100 * s['data_wait']:.0f}%")


def train_epoch(run: Run, stop: StopFlag) -> bool:
    """Train the rest of `run.epoch`; False if the run stopped early (signal or max_steps).

    Each step's record is read while the next step is queued (`read_records(run, keep=1)`);
    before a checkpoint the current step's record is read too, so no weights updated by a
    non-finite step are ever saved, and every rank saves or stops at the same step."""
    loader = run.loader
    if loader.position != run.epoch * run.steps_per_epoch + run.epoch_step:
        raise RuntimeError(f"the training loader is at batch {loader.position}, the run at "
                           f"epoch {run.epoch} step {run.epoch_step}")  # a bug, never data
    world_images = loader.batch_size * run.dist.world_size
    tick = time.perf_counter()
    for images, labels in loader.rest_of_epoch(run.epoch):
        got = time.perf_counter()
        inputs, targets = mix_batch(run, images, labels)
        loss = train_step(run, inputs, targets)
        run.step += 1
        run.epoch_step += 1
        record_step(run, loss, labels, stop, batch=(images, labels))
        read_records(run, keep=1)
        done = time.perf_counter()
        for meter in (run.interval_meter, run.epoch_meter):
            meter.add_time(world_images, got - tick, done - tick)
        tick = done
        run.halt = run.halt or reached_max_steps(run)
        if not (run.halt or run.save_due) or run.epoch_step == run.steps_per_epoch:
            continue  # (an epoch end reads every record and saves anyway)
        read_records(run, keep=0)
        if run.halt:
            save_checkpoint(run, stop.signal_name or "train.max_steps reached")
            return False
        save_checkpoint(run, f"{run.cfg.train.checkpoint_minutes:g} minutes passed")
        run.save_due = False
    read_records(run, keep=0)
    run.save_due = False
    return True


def log_step(run: Run, record: StepRecord) -> None:
    """The progress line, TensorBoard scalars and the optional per-rank debug log of a step."""
    if run.debug_file is not None:
        run.debug_file.write(json.dumps({"step": record.step, "epoch": record.epoch,
                                         "labels": record.labels}) + "\n")
    if record.step % run.cfg.train.log_every:
        return
    meter, run.interval_meter = run.interval_meter, Meter()
    log(run, progress_line(run, record, meter))
    if run.writer is not None:
        run.writer.add_scalar("train/loss", meter.summary()["loss"], record.step)
        run.writer.add_scalar("train/lr", run.scheduler.lr_at(record.step), record.step)


# ----------------------------------------------------------------------------- validation
def evaluate(run: Run) -> Dict[str, Any]:
    """Top-1/top-5/loss/RMS/ECE on the validation set through the evaluation runner: exact
    across ranks (each image once), the same numbers eval/clean.py reports for these weights."""
    sync_buffers(run)
    if run.val_images is not None:  # CIFAR's test split, in memory
        preds = run.evaluator.infer_arrays(run.val_images, run.val_labels, desc="validation")
    else:
        preds = run.evaluator.infer(run.val_files, run.val_labels, desc="validation",
                                    what="validation image")
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
    """Save the epoch's checkpoint first, then validate (when due) and log its line: a failing
    validation never costs the epoch (the checkpoint carries the pending end, see
    `finish_epoch`)."""
    cfg = run.cfg
    entry = {"epoch": run.epoch + 1, "step": run.step, **run.epoch_meter.summary(),
             "lr": float(run.scheduler.current_lr())}
    due = (run.epoch + 1) % cfg.eval.every_epochs == 0 or run.epoch + 1 == cfg.train.epochs
    run.pending_epoch = {"entry": entry, "validate": due}
    run.epoch, run.epoch_step, run.epoch_meter = run.epoch + 1, 0, Meter()
    save_checkpoint(run, f"end of epoch {run.epoch}")
    if stopping_on_signal(run):
        return  # a preempted job has seconds left; `--resume auto` validates the epoch first
    finish_epoch(run)


def stopping_on_signal(run: Run) -> bool:
    """All ranks agreed to stop on a signal (a reached `train.max_steps` still validates)."""
    return run.halt and not reached_max_steps(run)


def finish_epoch(run: Run) -> None:
    """Validate the epoch whose checkpoint was just saved (or restored), when due, and write
    its metrics.jsonl line."""
    entry = dict(run.pending_epoch["entry"])
    if run.pending_epoch["validate"]:
        try:
            entry["val"] = evaluate(run)
        except UnreadableImageError as err:
            raise unreadable_in_training(run, err, f"while validating epoch {entry['epoch']}, "
                                         "whose checkpoint is saved; `--resume auto` validates "
                                         "it once the file is fixed") from None
        log_validation(run, entry["epoch"], entry["val"])
    if run.dist.is_main:
        outputs.write_epoch_line(run.out_dir, entry)
    run.history.append(entry)
    run.pending_epoch = None
    plot_curves(run)


def plot_curves(run: Run, force: bool = False) -> None:
    """Rank 0 redraws `curves.png` from metrics.jsonl at most every `CURVES_EVERY_S` (an
    epoch's end costs well under 1% then) and at the end of a run; a plot that cannot be
    drawn costs a warning, never the run."""
    now = time.monotonic()
    if not run.dist.is_main or not (force or now - run.last_curves >= CURVES_EVERY_S):
        return
    run.last_curves = now
    from dali_pixmix.training.curves import CURVES, write_curves

    lines = outputs.metrics_lines(run.out_dir)
    if not lines:
        return
    title = f"{run.cfg.model.arch}, augment.method={run.cfg.augment.method}, {run.out_dir}"
    try:
        write_curves({run.cfg.augment.method: lines}, run.out_dir / CURVES, title)
    except Exception as err:  # noqa: BLE001 - a plot is never worth a training run
        log(run, f"warning: {CURVES} not written: {type(err).__name__}: {err}")


def log_validation(run: Run, epoch: int, val: Dict[str, Any]) -> None:
    rms = "n/a" if val["rms"] is None else f"{val['rms']:.2f}"
    log(run, f"epoch {epoch} validation: top-1 {val['top1']:.2f}% top-5 {val['top5']:.2f}% "
             f"loss {val['loss']:.4f} RMS {rms} ({val['n']} images)")
    if run.writer is not None:
        for key in ("top1", "top5", "loss"):
            run.writer.add_scalar(f"val/{key}", val[key], run.step)


def unreadable_in_training(run: Run, err: UnreadableImageError, where: str):
    """Record the files in `bad_images.txt` (a rerun refuses to start until they decode, so
    it never trains up to the same file again) and add where the run stopped to the error."""
    outputs.record_unreadable(run.out_dir, err.files)
    return UnreadableImageError(err.problems, err.what, err.root, context=where)


def reached_max_steps(run: Run) -> bool:
    limit = run.cfg.train.max_steps
    return limit is not None and run.step >= limit


def save_final(run: Run, val: Optional[Dict]) -> Path:
    """`final.pt`: weights (torchvision keys), classes, arch, config, last validation, and
    the weights' digest (what the evaluation caches key on: `checkpoint.checkpoint_identity`)."""
    path = run.out_dir / "final.pt"
    if run.dist.is_main:
        ckpt_io.atomic_save({"model": run.raw_model.state_dict(), "classes": list(run.classes),
                             "arch": run.cfg.model.arch, "config": run.cfg.to_dict(),
                             "epoch": run.epoch, "step": run.step, "epoch_step": 0,
                             "val": json.loads(json.dumps(val)),
                             ckpt_io.WEIGHTS_DIGEST: weights_digest(run.raw_model),
                             "provenance": provenance()}, path)
    barrier()
    return path


# ----------------------------------------------------------------------------- entry point
def train_epochs(run: Run, stop: StopFlag) -> bool:
    """The epochs left, through one training loader; False if the run stopped early."""
    cfg = run.cfg
    log(run, f"training {cfg.model.arch} on {len(run.samples)} images / {len(run.classes)} "
             f"classes: {run.dist.world_size} rank(s) x batch "
             f"{cfg.train.batch_size // run.dist.world_size}, {run.steps_per_epoch} "
             f"steps/epoch, augment.method={cfg.augment.method}, amp "
             f"{amp_mode(cfg, run.amp_dtype)}, device {run.dist.device}")
    if reached_max_steps(run):  # a rerun with the same limit trains nothing more
        log(run, f"train.max_steps={cfg.train.max_steps} already reached: stopped at step "
                 f"{run.step}")
        return False
    run.loader = open_train_loader(run)
    run.records = StepRecords(run.dist.device, run.loader.batch_size,
                              keep_labels=run.debug_file is not None)
    while run.epoch < cfg.train.epochs:
        try:
            finished = train_epoch(run, stop)
        except UnreadableImageError as err:
            raise unreadable_in_training(
                run, err, f"at step {run.step + 1} (epoch {run.epoch + 1}); training stopped "
                          "and `--resume auto` continues from the last checkpoint once the "
                          "file is fixed") from None
        if not finished:
            return False
        end_epoch(run)
        if run.halt and (run.epoch < cfg.train.epochs or run.pending_epoch is not None):
            log(run, f"stopping after step {run.step}: "
                     f"{stop.signal_name or 'train.max_steps reached'}")
            return False
    return True


def close_train_loader(run: Run) -> None:
    """Release the training pipeline (and its device buffers) before the final evaluation."""
    run.loader = run.records = None
    gc.collect()


def fit(run: Run, stop: StopFlag) -> Dict[str, Any]:
    """Epoch loop; returns the status and the last validation metrics."""
    cfg = run.cfg
    if run.pending_epoch is not None:  # resumed from an epoch end whose validation did not run
        finish_epoch(run)
    try:
        finished = run.epoch >= cfg.train.epochs or train_epochs(run, stop)
    finally:
        close_train_loader(run)
    plot_curves(run, force=True)
    if not finished:
        return {"status": "stopped", "step": run.step}
    val = next((h["val"] for h in reversed(run.history) if "val" in h), None) or evaluate(run)
    run.evaluator.release_loaders()
    final_path = save_final(run, val)
    extra = demo_anomaly_rows(cfg, run.dist, final_path) if cfg.demo.enabled else []
    log(run, results_table(val, cfg, extra))
    return {"status": "finished", "step": run.step, "val": val}


def finished_run(cfg: Config, dist: DistInfo, state: Optional[Dict[str, Any]]) -> Optional[Dict]:
    """The result of a run that has nothing left to do: its newest checkpoint is the last
    epoch's end and final.pt (written after that epoch's validation) is of the same step.
    Reported from final.pt, writing nothing (a requeued finished job costs nothing, and
    final.pt keeps its time); None otherwise."""
    if state is None or state["epoch"] < cfg.train.epochs:
        return None
    final_path = Path(cfg.train.output_dir) / "final.pt"
    try:
        final = ckpt_io.read_checkpoint(final_path)
    except (FileNotFoundError, ValueError):
        return None  # written again by `fit`
    if final.get("step") != state["step"] or not isinstance(final.get("val"), dict):
        return None
    log(dist, f"the run in {cfg.train.output_dir} finished at step {state['step']}: nothing to "
              "train or write; its results (final.pt):")
    extra = demo_anomaly_rows(cfg, dist, final_path) if cfg.demo.enabled else []
    log(dist, results_table(final["val"], cfg, extra))
    return {"status": "finished", "step": state["step"], "val": final["val"]}


def train(cfg: Config, resume: str = "auto", previous: str = "refuse",
          resume_changed: bool = False, stop: Optional[StopFlag] = None) -> Dict[str, Any]:
    """Run (or continue) training in this process; returns {"status", "step", ["val"]}.

    `resume` is auto|none|PATH; `previous` (refuse|archive|overwrite) is what a new run does
    with an earlier run in train.output_dir; `resume_changed` accepts a checkpoint whose recipe
    differs from `cfg` (see `training.resume`). `stop` (default: a new one) is the flag the
    signals set; a caller that goes on after training (`training.compare`) reads it. Rank 0
    holds the output folder's lock (`outputs.folder_lock`) until it returns; a finished run is
    reported, not redone.
    """
    stop = stop or StopFlag()
    stop.install()
    try:
        dist = init_distributed(cfg.dist.device, cfg.dist.timeout_minutes)
        announce_device(cfg, dist)
        with ExitStack() as held:
            return train_locked(cfg, dist, stop, held, resume, previous, resume_changed)
    finally:
        stop.uninstall()
        cleanup()


def train_locked(cfg: Config, dist: DistInfo, stop: StopFlag, held: ExitStack, resume: str,
                 previous: str, resume_changed: bool) -> Dict[str, Any]:
    """`train` once the signals are caught: rank 0 takes the folder's lock into `held`."""
    prepare_demo_data(cfg, dist)
    classes, samples = check_inputs(cfg)
    state = starting_state(cfg, dist, classes, resume, previous, resume_changed, held)
    done = finished_run(cfg, dist, state)
    if done is not None:
        return done
    run = setup_run(cfg, dist, classes, samples)
    start(run, state)
    open_logs(run)  # config.yaml is rewritten only for an accepted start
    result = fit(run, stop)
    if run.debug_file is not None:
        sync_buffers(run)
        run.debug_file.write(json.dumps({"final_weights_sha256": weights_digest(run.raw_model),
                                         "step": run.step}) + "\n")
        run.debug_file.close()
    if run.writer is not None:
        run.writer.close()
    return result
