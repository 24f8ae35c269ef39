"""The state of one training run (`Run`), its stop flag, and saving / restoring it as a checkpoint.

Checkpoint files themselves (atomic writes, rotation, lookup) are `dali_pixmix.checkpoint`'s job.
"""
from __future__ import annotations

import dataclasses
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from dali_pixmix import checkpoint as ckpt_io
from dali_pixmix.provenance import provenance
from dali_pixmix.training.schedule import CosineSchedule

from ..config import Config
from ..distributed import DistInfo, all_gather_objects, barrier, print_main


@dataclass
class Meter:
    """Running sums of training steps (between progress lines, or over an epoch).

    A step's host times are added when its loop iteration ends, its loss when its record
    reaches the host one step later (`training.records`)."""
    loss: float = 0.0
    steps: int = 0
    images: int = 0
    wait: float = 0.0
    total: float = 0.0

    def add_time(self, images: int, wait: float, total: float) -> None:
        self.images += images
        self.wait += wait
        self.total += total

    def add_loss(self, loss: float) -> None:
        self.loss += loss
        self.steps += 1

    def summary(self) -> Dict[str, float]:
        return {"loss": self.loss / max(1, self.steps),
                "images_per_s": self.images / max(1e-9, self.total),
                "data_wait": self.wait / max(1e-9, self.total)}


@dataclass
class Run:
    """Everything the loop needs; `model` is the (DDP-wrapped, compiled) training module."""
    cfg: Config
    dist: DistInfo
    classes: List[str]
    samples: list
    out_dir: Path
    model: torch.nn.Module
    raw_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Optional[CosineSchedule] = None
    scaler: Optional[torch.amp.GradScaler] = None
    amp_dtype: Optional[torch.dtype] = None
    bank: Any = None
    evaluator: Any = None         # evaluation.runner.Evaluator over raw_model (validation)
    val_files: List[str] = field(default_factory=list)
    val_labels: List[int] = field(default_factory=list)
    val_images: Any = None        # CIFAR: the test split's uint8 [N, 32, 32, 3] (val_files unused)
    epoch: int = 0
    step: int = 0
    epoch_step: int = 0
    steps_per_epoch: int = 0
    last_save: float = field(default_factory=time.monotonic)
    last_curves: float = field(default_factory=time.monotonic)  # curves.png last written
    epoch_meter: Meter = field(default_factory=Meter)  # the epoch so far (checkpointed)
    interval_meter: Meter = field(default_factory=Meter)  # since the last progress line
    # The end of an epoch whose checkpoint is saved but whose validation and metrics line are
    # not written yet: {"entry": metrics line without "val", "validate": bool}.
    pending_epoch: Optional[Dict[str, Any]] = None
    history: List[Dict] = field(default_factory=list)
    writer: Any = None
    debug_file: Any = None
    halt: bool = False            # all ranks agreed to stop after the current step
    save_due: bool = False        # all ranks agreed to save after the current step
    loader: Any = None            # pipelines.loaders.TrainLoader: one per run, built at the start
    saved_loader: Optional[Dict[str, Any]] = None  # resumed checkpoint's "loader" (+ "config")
    records: Any = None           # training.records.StepRecords of the steps not read yet


class StopFlag:
    """Set by SIGTERM/SIGUSR1 (SLURM preemption) or a first Ctrl-C (SIGINT): checkpoint at the
    next step boundary. A second Ctrl-C stops at once (KeyboardInterrupt) without saving.
    `uninstall` gives the signals their previous handlers back."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self.signal_name = None
        self._previous = {}

    def install(self) -> None:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, _frame) -> None:
        if signum == signal.SIGINT:
            if self.requested:
                raise KeyboardInterrupt
            print_main("interrupted (Ctrl-C): the run saves a checkpoint at the next step and "
                       "stops; press Ctrl-C again to stop at once without saving",
                       file=sys.stderr, flush=True)
        self.requested, self.signal_name = True, signal.Signals(signum).name


def log(run_or_dist, message: str) -> None:
    dist = run_or_dist.dist if isinstance(run_or_dist, Run) else run_or_dist
    if dist.is_main:
        print(message, flush=True)


def loader_state(run: Run) -> Optional[Dict[str, Any]]:
    """Every rank's DALI pipeline state at the current step, for the checkpoint (all ranks
    call this; a collective): {"position", "world_size", "dali_version", "gpu", "dali": one
    uint8 tensor per rank}, or None without a loader."""
    import nvidia.dali

    mine = None if run.loader is None else run.loader.state()
    states = all_gather_objects(mine)
    if any(state is None for state in states):
        return None
    return {"position": run.epoch * run.steps_per_epoch + run.epoch_step,
            "world_size": run.dist.world_size, "dali_version": nvidia.dali.__version__,
            "gpu": run.dist.device.type == "cuda",
            "dali": [torch.from_numpy(np.frombuffer(state, dtype=np.uint8).copy())
                     for state in states]}


def checkpoint_state(run: Run, loader: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return {"model": run.raw_model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
            "epoch": run.epoch, "step": run.step, "epoch_step": run.epoch_step,
            "steps_per_epoch": run.steps_per_epoch, "world_size": run.dist.world_size,
            "rng": ckpt_io.capture_rng(), "config": run.cfg.to_dict(),
            "classes": list(run.classes), "arch": run.cfg.model.arch,
            "epoch_meter": dataclasses.asdict(run.epoch_meter), "epoch_end": run.pending_epoch,
            "loader": loader, "provenance": provenance()}


def save_checkpoint(run: Run, reason: str) -> None:
    """Rank 0 writes the step checkpoint; the other ranks wait so nobody exits early."""
    loader = loader_state(run)
    if run.dist.is_main:
        path = ckpt_io.save_step_checkpoint(checkpoint_state(run, loader), run.out_dir,
                                            keep=run.cfg.train.keep_checkpoints)
        print(f"saved checkpoint {path} ({reason})", flush=True)
    run.last_save = time.monotonic()
    barrier()


def restore(run: Run, state: Dict[str, Any]) -> None:
    """Load a checkpoint into the run (its classes and architecture were checked by
    `training.resume.starting_state`, before any file was touched)."""
    run.raw_model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler") and run.scaler.is_enabled():
        run.scaler.load_state_dict(state["scaler"])
    run.epoch, run.step, run.epoch_step = state["epoch"], state["step"], state["epoch_step"]
    run.epoch_meter = Meter(**state["epoch_meter"]) if state.get("epoch_meter") else Meter()
    run.pending_epoch = state.get("epoch_end")
    loader = state.get("loader")
    run.saved_loader = None if loader is None else {**loader, "config": state.get("config")}
    if state.get("steps_per_epoch", run.steps_per_epoch) != run.steps_per_epoch:
        log(run, f"warning: the checkpoint had {state['steps_per_epoch']} steps per epoch, this "
                 f"run has {run.steps_per_epoch} (other data or world size); the resumed run "
                 "will not replay the original data order, and an epoch already past its new "
                 "length ends at once")
        run.epoch_step = min(run.epoch_step, run.steps_per_epoch)
    ckpt_io.restore_rng(state["rng"])
    log(run, f"resumed from {state.get('path')} at epoch {run.epoch + 1}, step {run.step}")


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (for cross-rank and resume comparisons; the
    `checkpoint.WEIGHTS_DIGEST` of final.pt)."""
    return ckpt_io.state_digest(model.state_dict())


def sync_buffers(run: Run) -> None:
    """Copy rank 0's BatchNorm statistics to every rank (DDP keeps them per rank between steps)."""
    if run.dist.is_distributed:
        for buffer in run.raw_model.buffers():
            torch.distributed.broadcast(buffer, src=0)
