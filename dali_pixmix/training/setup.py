"""Building a training run: input checks, model, optimizer, mixing bank, loaders, resume."""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from dali_pixmix.training.cifar import build_cifar_validation, is_cifar, read_train_split
from dali_pixmix.training.cifar import loader_factory as cifar_loader
from dali_pixmix.training.schedule import CosineSchedule
from dali_pixmix.training.state import Run, log, restore

from ..augment.methods import method
from ..config import Config, per_rank_batch, save_config
from ..distributed import DistInfo, barrier
from ..models import build_model, load_pretrained_backbone

# `train.deterministic` on GPUs: cuBLAS's deterministic workspace setting (8 buffers of 4 MiB
# per stream), which torch's deterministic mode asks for (docs/training.md, "Determinism").
DETERMINISTIC_CUBLAS_WORKSPACE = ":4096:8"


def check_inputs(cfg: Config) -> Tuple[List[str], List[Tuple[str, int]]]:
    """Clear errors for missing data before any model or pipeline is built; returns the
    training classes and samples (`data.images.class_samples`: the one listing of data.train;
    CIFAR: the train split in memory, `training.cifar.read_train_split`)."""
    from dali_pixmix.data.images import check_val_classes, class_samples

    check_paths(cfg)
    check_tensorboard(cfg)
    if is_cifar(cfg):
        return read_train_split(cfg)
    classes, samples = class_samples(cfg.data.train)
    check_val_classes(cfg.data.val, classes)
    return classes, samples


def check_paths(cfg: Config) -> None:
    """Every configured input path at once: one error naming each missing one (a start-up
    that stops at the first would need a rerun per path)."""
    folders = ([("data.root", cfg.data.root, f"{cfg.data.dataset} data")] if is_cifar(cfg) else
               [("data.train", cfg.data.train, "training"),
                ("data.val", cfg.data.val, "validation")])
    problems = [p for p in (folder_problem(*folder) for folder in folders) if p]
    if method(cfg.augment.method).needs_mixing_set:
        from dali_pixmix.mixing.bank import split_sources

        sources = split_sources(cfg.pixmix.mixing_set) if cfg.pixmix.mixing_set else []
        if not sources:
            problems.append("pixmix.mixing_set is empty: set it to a folder, file list or .npy "
                            "bank, or several comma-separated folders/file lists (or choose an "
                            f"augment.method other than {cfg.augment.method})")
        problems += [f"pixmix.mixing_set: mixing set '{s}' does not exist" for s in sources
                     if not s or not Path(s).exists()]
    if cfg.model.pretrained and not Path(cfg.model.pretrained).is_file():
        problems.append(f"model.pretrained: weights '{cfg.model.pretrained}' not found (a local "
                        "torchvision checkpoint, or null to train from scratch)")
    if problems:
        raise FileNotFoundError(f"{len(problems)} configured path(s) missing: "
                                + "; ".join(problems) + " (set them in the recipe or with "
                                "--set KEY=PATH)")


def check_tensorboard(cfg: Config) -> None:
    """train.tensorboard (off by default) asks for a package that is optional: without it,
    an error on every rank at start-up, never a run that silently writes no scalars."""
    if not cfg.train.tensorboard:
        return
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise ValueError("config key 'train.tensorboard' is true but tensorboard is not "
                         "installed: pip install -e '.[tensorboard]', or set "
                         "train.tensorboard=false") from None


def folder_problem(key: str, path: str, what: str) -> Optional[str]:
    """What is wrong with the folder config key `key` (None: it is a folder)."""
    if not path:
        return f"{key} is empty: set it to the {what} folder"
    if not Path(path).exists():
        return f"{key}: {what} folder {path} does not exist"
    return None if Path(path).is_dir() else f"{key}: {path} is not a folder"


def resolve_amp(cfg: Config, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype (None = full precision). auto: bf16 on GPUs that have it, off on CPU."""
    amp = cfg.train.amp
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def amp_mode(cfg: Config, dtype: Optional[torch.dtype]) -> str:
    """'bf16', 'fp16' or 'off', plus '(train.amp=auto)' when auto chose it: for the log."""
    name = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    return name + (" (train.amp=auto)" if cfg.train.amp == "auto" else "")


def announce_device(cfg: Config, dist: DistInfo) -> None:
    """Rank 0: a visible warning when dist.device=auto found no usable GPU (a GPU recipe then
    trains on the CPU, orders of magnitude slower), and one per part of the CUDA stack that the
    driver cannot run (`cuda_stack.problems`, with the command that fixes it)."""
    from dali_pixmix import cuda_stack

    if not dist.is_main:
        return
    if dist.device.type == "cpu" and cfg.dist.device == "auto":
        log(dist, f"warning: dist.device=auto found no usable GPU ({cuda_stack.why_no_gpu()}): "
                  "training on the CPU. Set dist.device=cpu to choose the CPU, or "
                  "dist.device=cuda to stop instead")
    elif dist.device.type == "cuda":
        for line in cuda_stack.problems(**cuda_stack.this_machine()):
            log(dist, f"warning: {line}")


def use_channels_last(cfg: Config, device: torch.device) -> bool:
    return cfg.model.channels_last == "true" or (cfg.model.channels_last == "auto"
                                                 and device.type == "cuda")


def build_training_model(cfg: Config, classes: List[str], dist: DistInfo):
    """(training module, unwrapped module): pretrained init, channels_last, DDP, compile.

    DDP wraps the plain module and `torch.compile` wraps DDP (PyTorch's recommended order), so
    the compiled graph keeps DDP's gradient buckets and their all-reduce overlaps the backward
    pass. The unwrapped module is the one checkpoints save and load.
    """
    torch.manual_seed(cfg.train.seed)  # identical initialisation on every rank
    model = build_model(cfg.model.arch, len(classes))
    if cfg.model.pretrained:
        fresh = load_pretrained_backbone(model, cfg.model.pretrained)
        log(dist, f"initialised {cfg.model.arch} from {cfg.model.pretrained}; "
                  f"fresh parameters: {fresh or 'none'}")
    raw = model.to(dist.device)
    if use_channels_last(cfg, dist.device):
        raw = raw.to(memory_format=torch.channels_last)
    model = raw
    if dist.is_distributed:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.model.compile:
        model = torch.compile(model)
    return model, raw


def build_optimizer(cfg: Config, model: torch.nn.Module, device: torch.device):
    """SGD (Nesterov) as in the reference: PyTorch's fused kernel on GPU, apex's when asked.

    PyTorch's fused SGD also takes GradScaler's inf check on the device (it supports AMP
    scaling), so an fp16 step never reads it on the host; with apex's FusedSGD, fp16's
    GradScaler reads it every step (one host synchronisation per step)."""
    opt = cfg.optim
    kwargs = dict(lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                  weight_decay=opt.weight_decay)
    if opt.impl == "apex":
        if device.type != "cuda":
            raise ValueError("optim.impl=apex needs a CUDA device; use auto or torch")
        try:
            import apex.optimizers  # optional, never required
        except ImportError:
            raise ValueError("optim.impl=apex but apex is not importable; use auto or "
                             "torch") from None
        return apex.optimizers.FusedSGD(model.parameters(), **kwargs)
    return torch.optim.SGD(model.parameters(), fused=device.type == "cuda" or None, **kwargs)


def build_bank(cfg: Config, dist: DistInfo):
    """The mixing bank on this rank's device (or pinned host memory), built once and cached."""
    if not method(cfg.augment.method).needs_mixing_set:
        return None
    from dali_pixmix.mixing.bank import load_or_build_bank

    cache = cfg.pixmix.bank_cache
    if cache:  # rank 0 builds (or rebuilds, when stale) the cache, the others load it
        if dist.is_main:
            load_or_build_bank(cfg.pixmix.mixing_set, cache, size=cfg.pixmix.bank_size,
                               device="cpu", num_threads=cfg.data.num_threads)
        barrier()
    on_host = cfg.pixmix.bank_on_host or dist.device.type == "cpu"
    return load_or_build_bank(cfg.pixmix.mixing_set, cache, size=cfg.pixmix.bank_size,
                              device="cpu" if on_host else dist.device,
                              pin_memory=on_host and dist.device.type == "cuda",
                              num_threads=cfg.data.num_threads)


def open_train_loader(run: Run):
    """This rank's training loader for the rest of the run, at the run's current step (one
    DALI pipeline, built once; `pipelines.loaders.TrainLoader`). A resumed run restores the random
    ops' state saved in its checkpoint when that state fits this run, else says why not."""
    from dali_pixmix.augment.methods import method
    from dali_pixmix.pipelines.loaders import LoaderStateError, make_train_loader
    from dali_pixmix.training.methods import train_stage, uses_auto_augment

    cfg = run.cfg
    make = (cifar_loader(run) if is_cifar(cfg) else
            partial(make_train_loader, root=cfg.data.train, samples=run.samples,
                    hw_decoder_load=cfg.data.hw_decoder_load))
    if cfg.pixmix.cuda_graph and run.dist.device.type != "cuda" and \
            method(cfg.augment.method).per_image == "pixmix":
        log(run, "note: pixmix.cuda_graph applies on GPUs only; this run on "
                 f"{run.dist.device.type} runs PixMix without it")
    args = dict(epoch=run.epoch, step=run.epoch_step, seed=cfg.train.seed,
                batch_size=per_rank_batch(cfg.train.batch_size, run.dist.world_size),
                dist=run.dist, crop=cfg.data.crop, stage=train_stage(cfg, run.bank),
                auto_augment=uses_auto_augment(cfg), num_threads=cfg.data.num_threads,
                dtype=cfg.data.dtype, channels_last=use_channels_last(cfg, run.dist.device))
    state, why_not = saved_dali_state(run)
    run.saved_loader = None
    if state is not None:
        try:
            return make(**args, dali_state=state)
        except LoaderStateError as err:
            why_not = f"DALI refused it: {err}"
    if why_not:
        log(run, f"note: the data order continues exactly, but the crop/flip draws differ "
                 f"from an uninterrupted run: the checkpoint's loader state is not used "
                 f"({why_not})")
    return make(**args)


def saved_dali_state(run: Run):
    """(this rank's saved DALI state, None) when the checkpoint's loader state fits this run;
    (None, why not) otherwise; (None, None) for a new run."""
    import nvidia.dali

    from dali_pixmix.training.resume import config_changes

    saved = run.saved_loader
    if saved is None:
        return None, ("the checkpoint holds none" if run.step > 0 else None)
    recipe, _ = config_changes(saved["config"] or {}, run.cfg.to_dict())
    device = "GPU" if run.dist.device.type == "cuda" else "CPU"
    checks = (("world size", saved["world_size"], run.dist.world_size),
              ("DALI version", saved["dali_version"], nvidia.dali.__version__),
              ("device", "GPU" if saved["gpu"] else "CPU", device),
              ("batch", saved["position"], run.epoch * run.steps_per_epoch + run.epoch_step))
    for what, then, now in checks:
        if then != now:
            return None, f"saved with {what} {then}, resumed with {now}"
    if recipe:
        return None, "the recipe changed"
    return bytes(saved["dali"][run.dist.rank].numpy().tobytes()), None


def build_validation(run: Run) -> None:
    """The validation images (the one discovery rule, as eval/clean.py lists them) and the
    evaluation runner over the model being trained (the one evaluation path)."""
    from dali_pixmix.evaluation.datasets import class_tree
    from dali_pixmix.evaluation.runner import Evaluator

    if is_cifar(run.cfg):
        return build_cifar_validation(run)
    cfg = run.cfg
    images = class_tree(cfg.data.val, name="validation")
    run.val_files, run.val_labels = list(images.files), images.labels(run.classes).tolist()
    run.evaluator = Evaluator(run.raw_model, run.classes, batch_size=cfg.eval.batch_size,
                              resize=cfg.data.val_resize, crop=cfg.data.val_crop,
                              num_threads=cfg.data.num_threads, dist=run.dist, progress=False,
                              check_headers=cfg.data.check_headers, keep_loaders=True)
    run.evaluator.screen(run.val_files, "validation image")  # at start-up, not after an epoch


def check_training_images(cfg: Config, dist: DistInfo, samples: List) -> None:
    """Before any model or pipeline is built: names a file list cannot hold, images an earlier
    attempt of this run could not decode (still broken: stop now, not at the same step), and,
    with data.check_headers, every header (a file DALI cannot parse would crash it)."""
    from dali_pixmix.data.checks import screen_images

    if is_cifar(cfg):
        return  # pictures in memory, read and checked with the split: nothing to decode
    root = Path(cfg.data.train)
    unlistable = next((rel for rel, _ in samples
                       if "\n" in rel or "\r" in rel or rel != rel.strip()), None)
    if unlistable is not None:
        raise ValueError(f"training image {str(root / unlistable)!r} has a line break or "
                         "leading/trailing spaces in its name, which DALI file lists cannot "
                         "hold; rename it")
    check_recorded_images(cfg, dist)
    if cfg.data.check_headers:
        screen_images([str(root / rel) for rel, _ in samples], "training image", root=root,
                      dist=dist, progress=dist.is_main)


def check_recorded_images(cfg: Config, dist: DistInfo) -> None:
    """Images recorded in bad_images.txt by an earlier attempt must decode now (DALI, one at a
    time); the record is dropped once they do (or are gone)."""
    from dali_pixmix.data.checks import UnreadableImageError, locate_unreadable
    from dali_pixmix.training import outputs

    recorded = outputs.recorded_unreadable(cfg.train.output_dir)
    if not recorded:
        return
    problems = locate_unreadable([f for f in recorded if f.is_file()])
    if problems:
        raise UnreadableImageError(problems, "image", context=(
            f"(found by an earlier attempt of this run, see "
            f"{Path(cfg.train.output_dir) / outputs.BAD_IMAGES})"))
    barrier()  # every rank has read the record before rank 0 drops it
    if dist.is_main:
        outputs.forget_unreadable(cfg.train.output_dir)
        log(dist, f"the {len(recorded)} image(s) an earlier attempt could not decode are fixed")


def setup_run(cfg: Config, dist: DistInfo, classes: List[str], samples: List) -> Run:
    """Check the images, build model/optimizer/bank/validation (in that order: cheap errors
    first) for the training `classes` and `samples` of `check_inputs`."""
    per_rank_batch(cfg.train.batch_size, dist.world_size)
    per_rank_batch(cfg.eval.batch_size, dist.world_size, "eval.batch_size")
    if cfg.train.deterministic:
        if dist.device.type == "cuda":  # cuBLAS reads it when it makes its first handle
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", DETERMINISTIC_CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp_dtype = resolve_amp(cfg, dist.device)
    if cfg.data.dtype == "float16" and amp_dtype is None:
        raise ValueError(f"data.dtype=float16 needs mixed precision, but train.amp={cfg.train.amp} "
                         f"is off on {dist.device}; set train.amp=bf16/fp16 or data.dtype=float32")
    check_training_images(cfg, dist, samples)
    model, raw = build_training_model(cfg, classes, dist)
    run = Run(cfg=cfg, dist=dist, classes=classes, samples=samples,
              out_dir=Path(cfg.train.output_dir), model=model, raw_model=raw,
              optimizer=build_optimizer(cfg, raw, dist.device), amp_dtype=amp_dtype,
              scaler=torch.amp.GradScaler(dist.device.type, enabled=amp_dtype == torch.float16))
    run.bank = build_bank(cfg, dist)
    build_validation(run)
    return run


def open_logs(run: Run) -> None:
    """config.yaml (rank 0), TensorBoard with train.tensorboard (`check_tensorboard` made
    sure it is installed), the optional debug log per rank."""
    run.out_dir.mkdir(parents=True, exist_ok=True)
    if run.dist.is_main:
        save_config(run.cfg, run.out_dir / "config.yaml")
        if run.cfg.train.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            run.writer = SummaryWriter(str(run.out_dir / "tensorboard"))
    if run.cfg.train.debug_log:
        run.debug_file = open(run.out_dir / f"debug_rank{run.dist.rank}.jsonl", "a",
                              encoding="utf-8")


def start(run: Run, state: Optional[Dict]) -> None:
    """Size the schedule from the loader length, then restore `state` (a checkpoint chosen by
    `training.resume.starting_state`) when there is one."""
    cfg = run.cfg
    from dali_pixmix.pipelines.loaders import train_steps_per_epoch

    batch = per_rank_batch(cfg.train.batch_size, run.dist.world_size)
    run.steps_per_epoch = train_steps_per_epoch(len(run.samples), run.dist.world_size, batch)
    if run.steps_per_epoch == 0:
        raise ValueError(f"{cfg.data.train or cfg.data.root} has {len(run.samples)} images: "
                         f"fewer than one global batch of {cfg.train.batch_size}; lower "
                         "train.batch_size")
    warmup = round(cfg.optim.warmup_epochs * run.steps_per_epoch)
    run.scheduler = CosineSchedule(run.optimizer, cfg.optim.lr, cfg.optim.min_lr,
                                   cfg.train.epochs * run.steps_per_epoch, warmup)
    if state is not None:
        restore(run, state)

