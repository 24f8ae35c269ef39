"""Distributed fine-tuning with PixMix: setup, training loop, validation, checkpoints, resume.

`train(cfg, resume)` runs one training job in this process (one rank under torchrun/SLURM, or a
plain single process). Conventions:
- `step` counts optimizer steps since the start of training; `epoch` is 0-based internally and
  printed 1-based; the lr follows `schedule.cosine_lr` per step.
- Every epoch's DALI loader is rebuilt from (seed, epoch) (see `epoch_data`), so a resume
  fast-forwards the loader by the steps already done in the epoch and continues exactly where an
  uninterrupted run would be (deterministic on CPU with `train.deterministic`).
- Rank 0 writes checkpoints, `metrics.jsonl`, `config.yaml`, `final.pt` into `train.output_dir`.
- SIGTERM/SIGUSR1 set a flag; all ranks agree on it at the next step boundary, save, and return.
"""
from __future__ import annotations

import gc
import hashlib
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from . import checkpoint as ckpt_io
from .config import Config, per_rank_batch, save_config
from .distributed import DistInfo, all_gather_objects, all_reduce_sum, barrier, cleanup, init_distributed
from .models import build_model, load_pretrained_backbone
from .schedule import CosineSchedule


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a non-finite loss); the message names the step."""


# ----------------------------------------------------------------------------- run state
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
    eval_loader: Any = None
    epoch: int = 0
    step: int = 0
    epoch_step: int = 0
    steps_per_epoch: int = 0
    last_save: float = field(default_factory=time.monotonic)
    history: List[Dict] = field(default_factory=list)
    writer: Any = None
    debug_file: Any = None
    halt: bool = False            # all ranks agreed to stop after the current step


class StopFlag:
    """Set by SIGTERM/SIGUSR1 (SLURM preemption): checkpoint at the next step boundary."""

    def __init__(self):
        self.requested = False
        self.signal_name = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        self.requested, self.signal_name = True, signal.Signals(signum).name


def log(run_or_dist, message: str) -> None:
    dist = run_or_dist.dist if isinstance(run_or_dist, Run) else run_or_dist
    if dist.is_main:
        print(message, flush=True)


# ----------------------------------------------------------------------------- setup
def prepare_demo_data(cfg: Config, dist: DistInfo) -> None:
    """Generate the demo dataset and fractals once (rank 0) and point the config at them."""
    if not cfg.demo.enabled:
        return
    from .synthetic import make_fractals, make_synthetic_imagenet

    root, demo = Path(cfg.demo.root), cfg.demo
    fractal_dir = root / "fractals"
    if dist.is_main:
        make_synthetic_imagenet(root / "imagenet", num_classes=demo.num_classes,
                                train_per_class=demo.train_per_class,
                                val_per_class=demo.val_per_class, seed=0, min_size=demo.min_size,
                                max_size=demo.max_size)
        if len(list(fractal_dir.glob("fractal_*.png"))) < demo.fractals:
            make_fractals(fractal_dir, n=demo.fractals, size=max(cfg.pixmix.bank_size, 64), seed=0)
    barrier()
    cfg.data.train = cfg.data.train or str(root / "imagenet" / "train")
    cfg.data.val = cfg.data.val or str(root / "imagenet" / "val")
    cfg.pixmix.mixing_set = cfg.pixmix.mixing_set or str(fractal_dir)


def check_inputs(cfg: Config) -> List[str]:
    """Clear errors for missing data before any model or pipeline is built; returns the classes."""
    from .epoch_data import check_val_classes, class_folders

    if not cfg.data.train:
        raise ValueError("config key 'data.train' is empty: set it to the training folder")
    classes = class_folders(cfg.data.train)
    if not cfg.data.val:
        raise ValueError("config key 'data.val' is empty: set it to the validation folder")
    check_val_classes(cfg.data.val, classes)
    if cfg.pixmix.enabled:
        source = Path(cfg.pixmix.mixing_set) if cfg.pixmix.mixing_set else None
        if source is None or not source.exists():
            raise FileNotFoundError(f"mixing set '{cfg.pixmix.mixing_set}' does not exist: set "
                                    "pixmix.mixing_set to a folder, file list or .npy bank (or "
                                    "pixmix.enabled=false for the baseline)")
    if cfg.model.pretrained and not Path(cfg.model.pretrained).is_file():
        raise FileNotFoundError(f"pretrained weights '{cfg.model.pretrained}' not found: set "
                                "model.pretrained to a local torchvision checkpoint or null")
    return classes


def resolve_amp(cfg: Config, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype (None = full precision). auto: bf16 on GPUs that have it, off on CPU."""
    amp = cfg.train.amp
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def use_channels_last(cfg: Config, device: torch.device) -> bool:
    return cfg.model.channels_last == "true" or (cfg.model.channels_last == "auto"
                                                 and device.type == "cuda")


def build_training_model(cfg: Config, classes: List[str], dist: DistInfo):
    """(training module, unwrapped module): pretrained init, channels_last, compile, DDP."""
    torch.manual_seed(cfg.train.seed)  # identical initialisation on every rank
    model = build_model(cfg.model.arch, len(classes))
    if cfg.model.pretrained:
        fresh = load_pretrained_backbone(model, cfg.model.pretrained)
        log(dist, f"initialised {cfg.model.arch} from {cfg.model.pretrained}; "
                  f"fresh parameters: {fresh or 'none'}")
    raw = model.to(dist.device)
    if use_channels_last(cfg, dist.device):
        raw = raw.to(memory_format=torch.channels_last)
    model = torch.compile(raw) if cfg.model.compile else raw
    if dist.is_distributed:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model, raw


def build_optimizer(cfg: Config, model: torch.nn.Module, device: torch.device):
    """SGD (Nesterov) as in the reference; apex FusedSGD when asked for or available on GPU."""
    opt = cfg.optim
    kwargs = dict(lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                  weight_decay=opt.weight_decay)
    if opt.impl in ("auto", "apex") and device.type == "cuda":
        try:
            import apex.optimizers  # optional fused kernel, never required
            return apex.optimizers.FusedSGD(model.parameters(), **kwargs)
        except ImportError:
            if opt.impl == "apex":
                raise ValueError("optim.impl=apex but apex is not importable; use auto or torch")
    elif opt.impl == "apex":
        raise ValueError("optim.impl=apex needs a CUDA device; use auto or torch")
    return torch.optim.SGD(model.parameters(), **kwargs)


def build_bank(cfg: Config, dist: DistInfo):
    """The mixing bank on this rank's device (or pinned host memory), built once and cached."""
    if not cfg.pixmix.enabled:
        return None
    from .mixing_bank import load_or_build_bank

    cache = cfg.pixmix.bank_cache
    if cache and not Path(cache).is_file():  # rank 0 builds the cache, the others load it
        if dist.is_main:
            load_or_build_bank(cfg.pixmix.mixing_set, cache, size=cfg.pixmix.bank_size,
                               device="cpu", num_threads=cfg.data.num_threads)
        barrier()
    on_host = cfg.pixmix.bank_on_host or dist.device.type == "cpu"
    return load_or_build_bank(cfg.pixmix.mixing_set, cache, size=cfg.pixmix.bank_size,
                              device="cpu" if on_host else dist.device,
                              pin_memory=on_host and dist.device.type == "cuda",
                              num_threads=cfg.data.num_threads)


def epoch_loader(run: Run, epoch: int):
    """This rank's training loader for `epoch` (rebuilt from the seed; see `epoch_data`)."""
    from .epoch_data import make_epoch_loader
    from .pipelines import PixMixStage

    cfg = run.cfg
    stage = None
    if run.bank is not None:
        stage = PixMixStage(run.bank, k=cfg.pixmix.k, beta=cfg.pixmix.beta,
                            severity=cfg.pixmix.severity, all_ops=cfg.pixmix.all_ops,
                            seed=cfg.train.seed, crop=cfg.data.crop)
    return make_epoch_loader(
        train_root=cfg.data.train, samples=run.samples, epoch=epoch, seed=cfg.train.seed,
        batch_size=per_rank_batch(cfg.train.batch_size, run.dist.world_size), dist=run.dist,
        crop=cfg.data.crop, pixmix=stage, num_threads=cfg.data.num_threads, dtype=cfg.data.dtype,
        channels_last=use_channels_last(cfg, run.dist.device))


def build_eval_loader(cfg: Config, dist: DistInfo):
    from .loader import make_eval_loader

    return make_eval_loader(
        file_root=cfg.data.val, dist=dist, resize=cfg.data.val_resize, crop=cfg.data.val_crop,
        batch_size=per_rank_batch(cfg.eval.batch_size, dist.world_size, "eval.batch_size"),
        num_threads=cfg.data.num_threads, dtype=cfg.data.dtype,
        channels_last=use_channels_last(cfg, dist.device))


# ----------------------------------------------------------------------------- checkpoints
def checkpoint_state(run: Run) -> Dict[str, Any]:
    return {"model": run.raw_model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
            "epoch": run.epoch, "step": run.step, "epoch_step": run.epoch_step,
            "steps_per_epoch": run.steps_per_epoch, "world_size": run.dist.world_size,
            "rng": ckpt_io.capture_rng(), "config": run.cfg.to_dict(),
            "classes": list(run.classes), "arch": run.cfg.model.arch}


def save_checkpoint(run: Run, reason: str) -> None:
    """Rank 0 writes the step checkpoint; the other ranks wait so nobody exits early."""
    if run.dist.is_main:
        path = ckpt_io.save_step_checkpoint(checkpoint_state(run), run.out_dir,
                                            keep=run.cfg.train.keep_checkpoints)
        print(f"saved checkpoint {path} ({reason})", flush=True)
    run.last_save = time.monotonic()
    barrier()


def restore(run: Run, state: Dict[str, Any]) -> None:
    """Load a checkpoint into the run; errors if classes or architecture disagree."""
    if list(state["classes"]) != list(run.classes):
        raise ValueError(f"checkpoint {state.get('path')} was trained on {len(state['classes'])} "
                         f"classes but data.train has {len(run.classes)} (or other names); "
                         "resume with the same dataset or pass --resume none")
    if state.get("arch", run.cfg.model.arch) != run.cfg.model.arch:
        raise ValueError(f"checkpoint {state.get('path')} holds a {state['arch']} but model.arch "
                         f"is {run.cfg.model.arch}")
    run.raw_model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler") and run.scaler.is_enabled():
        run.scaler.load_state_dict(state["scaler"])
    run.epoch, run.step, run.epoch_step = state["epoch"], state["step"], state["epoch_step"]
    if state.get("steps_per_epoch", run.steps_per_epoch) != run.steps_per_epoch:
        log(run, f"warning: the checkpoint had {state['steps_per_epoch']} steps per epoch, this "
                 f"run has {run.steps_per_epoch} (other data or world size); the resumed run "
                 "will not replay the original data order")
    ckpt_io.restore_rng(state["rng"])
    log(run, f"resumed from {state.get('path')} at epoch {run.epoch + 1}, step {run.step}")


# ----------------------------------------------------------------------------- one step
def train_step(run: Run, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Forward/backward/update under autocast; returns the detached loss."""
    with torch.autocast(run.dist.device.type, dtype=run.amp_dtype or torch.float32,
                        enabled=run.amp_dtype is not None):
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


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (for cross-rank and resume comparisons)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def sync_buffers(run: Run) -> None:
    """Copy rank 0's BatchNorm statistics to every rank (DDP keeps them per rank between steps)."""
    if run.dist.is_distributed:
        for buffer in run.raw_model.buffers():
            torch.distributed.broadcast(buffer, src=0)


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
        loss = train_step(run, images, labels)
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
@torch.no_grad()
def evaluate(run: Run) -> Dict[str, Any]:
    """Top-1/top-5/loss/RMS/ECE on the validation set, exact across ranks (each image once)."""
    sync_buffers(run)
    model = run.raw_model.eval()
    parts = []
    for images, labels in run.eval_loader:
        with torch.autocast(run.dist.device.type, dtype=run.amp_dtype or torch.float32,
                            enabled=run.amp_dtype is not None):
            logits = model(images)
        logits = logits.float()
        probs = logits.softmax(dim=1)
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        parts.append(torch.stack([probs.max(dim=1).values,
                                  (probs.argmax(dim=1) == labels).float(),
                                  (top5 == labels[:, None]).any(dim=1).float(),
                                  F.cross_entropy(logits, labels, reduction="none")]).cpu())
    model.train()
    local = torch.cat(parts, dim=1) if parts else torch.zeros(4, 0)
    merged = torch.cat(all_gather_objects(local), dim=1).double().numpy()
    return validation_metrics(merged, run.cfg.eval.calibration_bin_size, len(run.classes))


def validation_metrics(rows, bin_size: int, num_classes: int) -> Dict[str, Any]:
    """Metrics from rows (confidence, correct, top5-correct, loss) x N. Percentages."""
    from .metrics.calibration import expected_calibration_error, rms_calibration_error

    conf, correct, top5, loss = rows
    n = int(conf.size)
    out = {"n": n, "top1": 100 * correct.mean(), "top5": 100 * top5.mean(),
           "loss": float(loss.mean()), "chance_top1": 100 / num_classes,
           "ece15": 100 * expected_calibration_error(conf, correct), "rms": None,
           "rms_note": f"adaptive bins of {bin_size}, last bin dropped as in the reference code"}
    if n >= bin_size:
        out["rms"] = 100 * rms_calibration_error(conf, correct, bin_size, drop_last_bin=True)
    else:
        out["rms_note"] = f"not computed: {n} images < eval.calibration_bin_size={bin_size}"
    return {k: (float(v) if isinstance(v, float) else v) for k, v in out.items()}


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
                             "val": json.loads(json.dumps(val))}, path)
    barrier()
    return path


def demo_anomaly_rows(run: Run, final_path: Path) -> List[tuple]:
    """Demo only: anomaly detection with the evaluation suite, validation images vs generated
    Gaussian/Rademacher/Blobs noise; (name, value) rows of the mean AUROC per score."""
    from .evaluation.runner import Evaluator
    from .evaluation.tasks import run_ood

    cfg = run.cfg
    ev = Evaluator(str(final_path), out=str(run.out_dir / "eval"), arch=cfg.model.arch,
                   batch_size=cfg.eval.batch_size // run.dist.world_size,
                   resize=cfg.data.val_resize, crop=cfg.data.val_crop,
                   workers=cfg.data.num_threads, dist=run.dist, progress=False)
    rows = run_ood(ev, cfg.data.val, {}, synthetic=True)
    return [(f"anomaly detection AUROC, {r.variant} (%)", f"{r.value:.1f}")
            for r in rows if r.dataset == "mean" and r.metric == "auroc"]


def results_table(val: Dict[str, Any], cfg: Config, extra: Sequence[tuple] = ()) -> str:
    """A small Markdown table of the final validation metrics (plus `extra` (name, value) rows)."""
    rms = "n/a" if val["rms"] is None else f"{val['rms']:.2f}"
    rows = [("top-1 accuracy (%)", f"{val['top1']:.2f}"), ("top-5 accuracy (%)", f"{val['top5']:.2f}"),
            ("chance top-1 (%)", f"{val['chance_top1']:.2f}"), ("RMS calibration error (%)", rms),
            ("ECE, 15 bins (%)", f"{val['ece15']:.2f}"), ("validation loss", f"{val['loss']:.4f}"),
            ("validation images", str(val["n"])), *extra]
    head = f"| {cfg.model.arch}, PixMix {'on' if cfg.pixmix.enabled else 'off'} | value |"
    lines = [head, "|---|---|"] + [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + f"\n(RMS: {val['rms_note']})"


# ----------------------------------------------------------------------------- entry point
def setup_run(cfg: Config, dist: DistInfo) -> Run:
    """Check inputs, build model/optimizer/bank/eval loader (in that order: cheap errors first)."""
    classes = check_inputs(cfg)
    per_rank_batch(cfg.train.batch_size, dist.world_size)
    per_rank_batch(cfg.eval.batch_size, dist.world_size, "eval.batch_size")
    from .epoch_data import list_samples

    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp_dtype = resolve_amp(cfg, dist.device)
    if cfg.data.dtype == "float16" and amp_dtype is None:
        raise ValueError(f"data.dtype=float16 needs mixed precision, but train.amp={cfg.train.amp} "
                         f"is off on {dist.device}; set train.amp=bf16/fp16 or data.dtype=float32")
    model, raw = build_training_model(cfg, classes, dist)
    run = Run(cfg=cfg, dist=dist, classes=classes, samples=list_samples(cfg.data.train, classes),
              out_dir=Path(cfg.train.output_dir), model=model, raw_model=raw,
              optimizer=build_optimizer(cfg, raw, dist.device), amp_dtype=amp_dtype,
              scaler=torch.amp.GradScaler(dist.device.type, enabled=amp_dtype == torch.float16))
    run.bank = build_bank(cfg, dist)
    run.eval_loader = build_eval_loader(cfg, dist)
    return run


def open_logs(run: Run) -> None:
    """config.yaml (rank 0), TensorBoard when importable, the optional debug log per rank."""
    run.out_dir.mkdir(parents=True, exist_ok=True)
    if run.dist.is_main:
        save_config(run.cfg, run.out_dir / "config.yaml")
        if run.cfg.train.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                run.writer = SummaryWriter(str(run.out_dir / "tensorboard"))
            except ImportError:
                run.writer = None
    if run.cfg.train.debug_log:
        run.debug_file = open(run.out_dir / f"debug_rank{run.dist.rank}.jsonl", "a", encoding="utf-8")


def start(run: Run, resume: str) -> None:
    """Size the schedule from the loader length, then restore a checkpoint if asked."""
    cfg = run.cfg
    state = ckpt_io.resolve_resume(resume, run.out_dir) if run.dist.is_main or resume != "auto" \
        else None
    if resume == "auto":  # rank 0 decides which file, so every rank loads the same one
        path = broadcast_path(state)
        state = ckpt_io.load_checkpoint(path) if path and not run.dist.is_main else state
        if state is not None:
            state["path"] = path
    batch = per_rank_batch(cfg.train.batch_size, run.dist.world_size)
    run.steps_per_epoch = (len(run.samples) // run.dist.world_size) // batch  # = len(loader)
    if run.steps_per_epoch == 0:
        raise ValueError(f"{cfg.data.train} has {len(run.samples)} images: fewer than one global "
                         f"batch of {cfg.train.batch_size}; lower train.batch_size")
    warmup = round(cfg.optim.warmup_epochs * run.steps_per_epoch)
    run.scheduler = CosineSchedule(run.optimizer, cfg.optim.lr, cfg.optim.min_lr,
                                   cfg.train.epochs * run.steps_per_epoch, warmup)
    if state is not None:
        restore(run, state)


def broadcast_path(state: Optional[Dict]) -> Optional[str]:
    from .distributed import broadcast_object

    return broadcast_object(state.get("path") if state else None)


def fit(run: Run, stop: StopFlag) -> Dict[str, Any]:
    """Epoch loop; returns the status and the last validation metrics."""
    cfg = run.cfg
    if run.epoch < cfg.train.epochs:
        log(run, f"training {cfg.model.arch} on {len(run.samples)} images / {len(run.classes)} "
                 f"classes: {run.dist.world_size} rank(s) x batch "
                 f"{cfg.train.batch_size // run.dist.world_size}, {run.steps_per_epoch} "
                 f"steps/epoch, PixMix {'on' if cfg.pixmix.enabled else 'off'}, amp "
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
