"""Throughput: timing helpers (shared with benchmarks/) and the self-check's measurements.

Every measurement is reported beside a baseline measured in the same run and a goal for one
H100/H200 GPU:
  pixmix_stage      the PixMix stage alone, batch 256 at 224 px   > 20,000 img/s
                    (the default strategy vs the other; on CUDA also with a CUDA graph; the
                    dense sequence's op-log traffic per image and the bandwidth it implies)
  train_decode      the training decoder (ROI, nvJPEG) without fancy upsampling vs with it,
                    beside the CPU decoder with the same threads (CUDA only)
  pipeline_pixmix   DALI training pipeline with PixMix vs without  ratio >= 0.9, > 5,000 img/s
  pipeline_cuda_graph  the same pipeline, dense stage from a CUDA graph vs eager (CUDA only)
  train_step        ResNet-50 AMP steps fed by DALI + PixMix vs synthetic batches on the GPU
                                                                   ratio >= 0.9
  eval_infer        evaluation (decode, resize, crop, float16 ResNet-50) vs the model alone
  imagenet_p_video  ImageNet-P frames/s (NVDEC + model) vs the model alone
On a CPU-only machine the same code runs at tiny sizes; goals are not judged there.
Timed sections synchronise the GPU before the clock starts and before it stops.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Iterator, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from dali_pixmix.check import fixtures
from dali_pixmix.check.harness import require, require_cuda
from dali_pixmix.check.settings import Settings
from dali_pixmix.precision import autocast, eval_amp_dtype, precision_name

if TYPE_CHECKING:  # imported where used
    from dali_pixmix.config import Config


# ----------------------------------------------------------------------------- timing helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], calls: int,
               device: torch.device) -> Tuple[float, Optional[float]]:
    """(wall seconds, host CPU seconds or None) for `calls` calls of `fn`. On CUDA the wall
    time comes from CUDA events around the calls (the device is synchronised before and after),
    so it counts the GPU work, not only its launch."""
    if device.type == "cuda":
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(calls):
            fn()
        stop.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(stop) / 1000.0, None
    t_cpu, t0 = time.process_time(), time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - t0, time.process_time() - t_cpu


def endless(loader: Iterable) -> Iterator:
    """Batches of `loader` forever (iterating a DALI loader again starts the next epoch)."""
    while True:
        yield from loader


def timed_rate(batches: Iterator, count: int, drain: int, device: torch.device,
               settle: float) -> Tuple[float, int]:
    """(images/s of the next `count` images, images per batch), after a pause of `settle` s
    and `drain` batches taken untimed.

    The pause lets every other configuration finish refilling its (bounded) prefetch queue, so
    no background work shares the cores with the timed one; draining empties the queue this
    producer filled meanwhile, so the timed batches are produced while the clock runs.
    """
    time.sleep(settle)
    for _ in range(drain):
        next(batches)
    sync(device)
    seen, start = 0, time.perf_counter()
    while seen < count:
        images, _ = next(batches)
        seen += images.shape[0]
    sync(device)
    return seen / (time.perf_counter() - start), int(images.shape[0])


def warm_up(sources: Dict[str, Iterator], batches: int, device: torch.device,
            settle: float) -> None:
    """Take `batches` batches from every source before anything is timed, then pause for
    `settle` s. A pipeline's first batches build its operators, caches and kernels; left for
    later, that work would run in the background beside another source's timed batches and
    slow them (a baseline measured so comes out low and flatters the ratio)."""
    for batches_of_source in sources.values():
        for _ in range(batches):
            next(batches_of_source)
    sync(device)
    time.sleep(settle)


DALI_DRAIN = 3  # batches a DALI loader holds ready: its prefetch queue (2) + the one in flight


def dataloader_drain(workers: int) -> int:
    """Batches a torch DataLoader holds ready: its default prefetch factor (2) per worker, + 1."""
    return 2 * max(1, workers) + 1


REFILL_MARGIN = 1.5  # a queue refills alone at about the rate it was timed at; with room


def interleaved_medians(sources: Dict[str, Tuple[Iterator, int]], rounds: int, count: int,
                        device: torch.device, settle: float,
                        progress: bool = True) -> Dict[str, float]:
    """Median images/s of every source over `rounds` interleaved rounds (A, B, A, B, ...).

    `sources` maps a name to (endless batches, untimed batches to drain before each timed
    window: `DALI_DRAIN`, `dataloader_drain`). Every source is warmed up first (`warm_up`),
    then each round times `count` images of each source in turn (`timed_rate`), so slow drifts
    of the machine's load hit every source alike. Before a source is timed, the pause lasts at
    least `settle` s and as long as the other sources need to refill the queues their last
    windows emptied (their drain at their timed rate, with `REFILL_MARGIN`): a slow source's
    refill (a DataLoader holds 2 batches per worker) would otherwise run beside the next
    source's timed window and count against it."""
    from tqdm import tqdm

    warm_up({name: batches for name, (batches, _) in sources.items()}, 3, device, settle)
    rates = {name: [] for name in sources}
    refill = {name: 0.0 for name in sources}  # seconds each source needs to refill its queue
    for _ in tqdm(range(rounds), desc="rounds", unit="round", disable=not progress):
        for name, (batches, drain) in sources.items():
            pause = max([settle] + [t for other, t in refill.items() if other != name])
            rate, batch = timed_rate(batches, count, drain, device, pause)
            rates[name].append(rate)
            refill[name] = REFILL_MARGIN * drain * batch / rate
    return {name: statistics.median(r) for name, r in rates.items()}


def benchmark_data(cache_dir, images: int, mixing: int) -> Tuple[Path, Optional[Path]]:
    """(training class-folder root, mixing-set folder) for the data-path benchmarks, generated
    once into `cache_dir`: `images` synthetic JPEGs of 300-400 px in 8 classes, and `mixing`
    256 px fractals in one class folder (so torchvision's ImageFolder reads it too; none and
    None for `mixing` 0)."""
    from dali_pixmix.data.synthetic import make_synthetic_imagenet
    from dali_pixmix.mixing.fractals import make_fractals

    cache, classes = Path(cache_dir), 8
    root = make_synthetic_imagenet(cache / f"imagenet_{images}", num_classes=classes,
                                   train_per_class=max(1, images // classes), val_per_class=0,
                                   seed=0, min_size=300, max_size=400, progress=True)
    if mixing == 0:
        return root / "train", None
    folder = cache / f"fractals_{mixing}"
    if len(list((folder / "fractals").glob("*.png"))) < mixing:
        make_fractals(folder / "fractals", n=mixing, size=256, seed=0, progress=True)
    return root / "train", folder


def method_config(name: str, crop: int) -> Config:
    """The default config with `augment.method=name` and `data.crop=crop`."""
    from dali_pixmix.config import Config

    cfg = Config()
    cfg.augment.method, cfg.data.crop = name, crop
    return cfg


def method_batches(root, name: str, *, batch_size: int, device: torch.device, bank,
                   classes: int, num_threads: int, crop: int = 224) -> Iterator:
    """Endless batches of augmentation method `name`'s training data path, as training runs
    it: the run's DALI loader with the method's stage (or AutoAugment), then its label mixing
    (mixup, cutmix) on the loader's device; normalised float32 [B, 3, crop, crop]."""
    from dali_pixmix.augment.label_mixing import mix_batch
    from dali_pixmix.distributed import DistInfo
    from dali_pixmix.pipelines.loaders import make_train_loader
    from dali_pixmix.training.methods import (
        batch_generator,
        label_mixing,
        train_stage,
        uses_auto_augment,
    )

    cfg = method_config(name, crop)
    loader = make_train_loader(root=root, batch_size=batch_size, dist=DistInfo(device=device),
                               crop=crop, stage=train_stage(cfg, bank),
                               auto_augment=uses_auto_augment(cfg), num_threads=num_threads)
    mixing = label_mixing(cfg)
    for step, (images, labels) in enumerate(endless(loader)):
        if mixing is not None:
            images, labels = mix_batch(images, labels, *mixing, classes,
                                       batch_generator(0, 0, 0, step))
        yield images, labels


def make_step(model, optimizer, amp_dtype: Optional[torch.dtype], device: torch.device):
    """One training step, identical for every data source (GradScaler for float16)."""
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def step(images, labels):
        with autocast(device, amp_dtype):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return step


def timed_steps(step, batches: Iterator, steps: int, warmup: int, device: torch.device) -> float:
    """images/s over `steps` training steps after `warmup` steps (data loading included)."""
    count = 0
    for i, (images, labels) in enumerate(batches):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        if i >= warmup:
            count += labels.shape[0]
        step(images, labels)
        if i + 1 == warmup + steps:
            break
    sync(device)
    return count / (time.perf_counter() - start)


def interleaved_steps(step, sources: Dict[str, Iterator], rounds: int, steps: int, warmup: int,
                      device: torch.device, settle: float = 0.5) -> Dict[str, float]:
    """Best images/s of training steps fed by each source over `rounds` interleaved rounds
    (`timed_steps` each), after every source is warmed up (`warm_up`); the best round is
    robust to load from other processes."""
    warm_up(sources, 3, device, settle)
    best = {name: 0.0 for name in sources}
    for _ in range(rounds):
        for name, batches in sources.items():
            best[name] = max(best[name], timed_steps(step, batches, steps, warmup, device))
    return best


def synthetic_batches(batch: int, crop: int, classes: int, device: torch.device,
                      channels_last: bool) -> Iterator:
    """The same random batch forever, already on `device`: the no-loading baseline."""
    images = torch.randn(batch, 3, crop, crop, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, classes, (batch,), device=device)
    while True:
        yield images, labels


def timed_pass(fn: Callable[[], int]) -> float:
    """Items/s of `fn()` (which returns how many items it processed), after one untimed
    warm-up call (pipeline build, cuDNN autotuning)."""
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    count = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


@torch.no_grad()
def time_model_only(model, device: torch.device, frames: int, size: int, batch: int) -> float:
    """Images/s of the model alone (float16 autocast on CUDA, channels_last input) on one
    synthetic batch already on the device: the ceiling of an evaluation path."""
    x = torch.randn(batch, 3, size, size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    sync(device)
    start = time.perf_counter()
    done = 0
    while done < frames:
        with autocast(device, eval_amp_dtype(device)):
            model(x).float().topk(5, dim=1)
        done += batch
    sync(device)
    return done / (time.perf_counter() - start)


def time_video_reader(model, entries, frames: int, device: torch.device, batch: int,
                      workers: int) -> float:
    """Frames/s of ImageNet-P prediction: `VideoReader` (DALI on CUDA, PyAV on CPU) whole
    videos grouped to `batch` frames, normalised on the device, then the model."""
    from dali_pixmix.evaluation.imagenet_p import predict_top5
    from dali_pixmix.evaluation.video import VideoReader

    reader = VideoReader(entries, frames, device, batch_videos=max(1, batch // frames),
                         workers=workers)
    start = time.perf_counter()
    out = predict_top5(model, reader, device, batch, amp=True)
    sync(device)
    return sum(v[1].shape[0] for v in out.values()) / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Goal:
    """What one H100/H200 should reach: a rate and/or a ratio to the baseline."""
    min_rate: Optional[float] = None
    min_ratio: Optional[float] = None

    @property
    def text(self) -> Optional[str]:
        parts = []
        if self.min_ratio is not None:
            parts.append(f"ratio >= {self.min_ratio:g}")
        if self.min_rate is not None:
            parts.append(f"> {self.min_rate:,.0f} img/s")
        return " and ".join(parts) or None

    def met(self, rate: float, ratio: Optional[float]) -> Optional[bool]:
        if self.text is None:
            return None
        ok = self.min_rate is None or rate > self.min_rate
        return bool(ok and (self.min_ratio is None or (ratio or 0.0) >= self.min_ratio))


def measurement(s: Settings, rate: float, baseline: Optional[float], baseline_name: str,
                goal: Goal, detail: str) -> Dict:
    """A throughput result; goals are judged on CUDA only (they are GPU goals)."""
    ratio = rate / baseline if baseline else None
    return {"images_per_s": round(rate, 1),
            "baseline_images_per_s": None if baseline is None else round(baseline, 1),
            "baseline": baseline_name, "ratio": None if ratio is None else round(ratio, 3),
            "goal": goal.text, "met": goal.met(rate, ratio) if s.on_cuda else None,
            "detail": detail if s.on_cuda else f"CPU, tiny sizes (goals are for GPUs): {detail}"}


def _execution(s: Settings) -> str:
    """How the measurements' PixMix stage runs (`--pixmix-strategy`, `--pixmix-cuda-graph`)."""
    graph = " + CUDA graph" if s.pixmix_cuda_graph and s.on_cuda else ""
    return f"PixMix strategy {s.pixmix_strategy}{graph}"


def _device(s: Settings) -> torch.device:
    return torch.device("cuda", 0) if s.on_cuda else torch.device("cpu")


# ----------------------------------------------------------------------------- measurements
def pixmix_stage(s: Settings) -> Dict:
    """The PixMix stage alone (bank draw + PixMix + normalisation) on a batch on the device,
    its plan drawn by a host generator as in the pipeline: the default strategy (dense on CUDA,
    grouped on the CPU) beside the other one, and on CUDA also dense replayed from a CUDA graph
    (`pixmix.cuda_graph`), so one run tells which setting a node should train with. A variant
    that fails is named in the detail; only a failing default fails the row."""
    device = _device(s)
    bank = fixtures.mixing_bank(s, str(device))
    pictures = torch.from_numpy(fixtures.picture_pool(s.crop, 16, 1, seed=2)[0])
    batch = pictures[torch.arange(s.batch) % 16].to(device)
    default, other = ("dense", "grouped") if s.on_cuda else ("grouped", "dense")
    variants = [(default, False), (other, False)] + ([("dense", True)] if s.on_cuda else [])
    rates, failures = {}, {}
    for strategy, graph in variants:
        name = strategy + (" + CUDA graph" if graph else "")
        try:
            rates[name] = _stage_rate(s, bank, batch, strategy, graph)
        except Exception as err:  # noqa: BLE001 - reported, the other variants still run
            failures[name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    timed = ", ".join(f"{name} {rate:,.0f}" for name, rate in rates.items())
    failed = "; ".join(f"{name} failed ({why})" for name, why in failures.items())
    if default in failures:
        raise RuntimeError(f"the default strategy ({default}) failed: {failures[default]}"
                           + (f"; timed: {timed} img/s" if timed else ""))
    fastest = max(rates, key=rates.get)
    detail = (f"batch {s.batch} x {s.crop} px, {s.stage_calls} calls; {default} is the default "
              f"here; img/s: {timed}; fastest: {fastest}" + (f"; {failed}" if failed else "")
              + f"; {dense_traffic(batch, rates)}")
    return measurement(s, rates[default], rates.get(other), f"same stage, {other} strategy",
                       Goal(min_rate=20_000), detail)


def dense_traffic(batch: torch.Tensor, rates: Dict[str, float]) -> str:
    """The dense stage's op-log traffic per image (`dense.sequence_traffic`, ImageNet settings,
    one plan), eager and with CUDA-graph capacities, and the bandwidth each timed dense
    variant needed: to read a GPU rate against the card's memory bandwidth."""
    from dali_pixmix.augment import ops as A
    from dali_pixmix.augment.pixmix import dense

    _, eager, graph = dense.traffic_per_image(batch, batch, 4, 4.0, 1, A.ALL_OPS)
    per_image = {"dense": eager, "dense + CUDA graph": graph}
    needed = [f"{name} {rates[name] * size / 1e9:,.1f} GB/s" for name, size in per_image.items()
              if name in rates]
    return (f"op-log traffic per image: {per_image['dense'] / 1e6:.1f} MB eager, "
            f"{per_image['dense + CUDA graph'] / 1e6:.1f} MB with CUDA-graph capacities"
            + (f" (at the timed rates: {', '.join(needed)})" if needed else ""))


def _stage_rate(s: Settings, bank, batch: torch.Tensor, strategy: str, cuda_graph: bool) -> float:
    """images/s of `PixMixStage.apply` with this strategy, in the pipeline's output format."""
    from dali_pixmix.augment.pixmix import Normalized
    from dali_pixmix.data.normalise import IMAGENET_MEAN, IMAGENET_STD
    from dali_pixmix.pipelines.stage import PixMixStage

    stage = PixMixStage(bank, crop=s.crop, strategy=strategy, cuda_graph=cuda_graph)
    # the pipeline's output format (no DALI needed to time the stage)
    stage.output = Normalized(IMAGENET_MEAN, IMAGENET_STD, "HWC" if s.on_cuda else "CHW")
    for _ in range(3):  # allocator, kernels, cached constants (and the graph's capture)
        stage.apply(batch)
    wall, _ = time_calls(lambda: stage.apply(batch), s.stage_calls, batch.device)
    return s.stage_calls * s.batch / wall


def training_loader(s: Settings, files, labels, stage, device: torch.device,
                    batch: Optional[int] = None):
    """The loader a training run uses (`pipelines.loaders.make_train_loader`: one pipeline fed in
    the run's data order) over `files`, on `device`, batches of `batch` (default `s.batch`)."""
    import os

    from dali_pixmix.distributed import DistInfo
    from dali_pixmix.pipelines.loaders import make_train_loader

    root = os.path.commonpath([os.path.dirname(f) for f in files])
    samples = [(os.path.relpath(f, root), int(label)) for f, label in zip(files, labels)]
    return make_train_loader(root=root, samples=samples, batch_size=batch or s.batch,
                             dist=DistInfo(device=device), crop=s.crop, stage=stage,
                             num_threads=s.threads, channels_last=s.on_cuda)


def _pipeline_batches(s: Settings, device: torch.device, bank=None) -> Iterator:
    """Endless training batches of the DALI pipeline; with PixMix when given a mixing bank."""
    files, labels = fixtures.training_files(s, max(2 * s.batch, s.classes * s.train_per_class))
    stage = None if bank is None else s.pixmix_stage(bank)
    return endless(training_loader(s, files, labels, stage, device))


def interleaved_rates(s: Settings, sources: Dict[str, Iterator],
                      device: torch.device) -> Dict[str, float]:
    """Median images/s of each DALI source over `s.rounds` interleaved rounds (a, b, a, b, ...)
    of `s.pipeline_batches` batches, every source warmed up first (`interleaved_medians`)."""
    return interleaved_medians({name: (batches, DALI_DRAIN) for name, batches in sources.items()},
                               s.rounds, s.pipeline_batches * s.batch, device, settle=0.5,
                               progress=False)


def pipeline_pixmix(s: Settings) -> Dict:
    """The DALI training pipeline with PixMix vs the same pipeline without it."""
    require("nvidia.dali", "DALI", s.on_cuda)
    device = _device(s)
    sources = {"without": _pipeline_batches(s, device),
               "with": _pipeline_batches(s, device, fixtures.mixing_bank(s, str(device)))}
    rates = interleaved_rates(s, sources, device)
    rate, base = rates["with"], rates["without"]
    return measurement(s, rate, base, "same pipeline without PixMix",
                       Goal(min_rate=5_000, min_ratio=0.9),
                       f"batch {s.batch} x {s.crop} px, {s.threads} DALI threads, median of "
                       f"{s.rounds} round(s) of {s.pipeline_batches} batches, "
                       f"{_execution(s)}")


GRAPH_TOLERANCE = 1e-5  # dense eager vs graph replay: the same kernels on the same plan


def pipeline_cuda_graph(s: Settings) -> Dict:
    """The training pipeline with the dense PixMix stage replayed from a CUDA graph vs run
    eagerly (`pixmix.cuda_graph`), fed the same pictures and seeds: their first batches must
    agree, then both are timed. (`pixmix_stage` times the stage alone the same way.)"""
    require("nvidia.dali", "DALI", s.on_cuda)
    require_cuda("a CUDA graph")
    device = _device(s)
    bank = fixtures.mixing_bank(s, str(device))
    sources = {name: _pipeline_batches(dataclasses.replace(s, pixmix_strategy="dense",
                                                           pixmix_cuda_graph=graph), device, bank)
               for name, graph in (("eager", False), ("graph", True))}
    first = {name: next(batches)[0] for name, batches in sources.items()}
    diff = float((first["graph"].float() - first["eager"].float()).abs().max())
    del first
    if diff > GRAPH_TOLERANCE:
        raise RuntimeError(f"the first batches of the dense stage eager and from a CUDA graph "
                           f"differ by up to {diff:.3g} (limit {GRAPH_TOLERANCE:g})")
    rates = interleaved_rates(s, sources, device)
    return measurement(s, rates["graph"], rates["eager"], "same pipeline, dense stage eager",
                       Goal(), f"batch {s.batch} x {s.crop} px, {s.threads} DALI threads, median "
                               f"of {s.rounds} round(s) of {s.pipeline_batches} batches; first "
                               f"batches equal (max |diff| {diff:.2g})")


def decode_pipeline(files, batch: int, threads: int, crop: int, gpu: bool,
                    fancy: bool = False):
    """A built pipeline: read -> the training decoder (`random_crop_decoder_args`, on the GPU
    with `jpeg_fancy_upsampling=fancy`) -> resize to `crop`; nothing else."""
    from nvidia.dali import fn, pipeline_def

    from dali_pixmix.pipelines.graphs import random_crop_decoder_args

    args = random_crop_decoder_args(gpu)
    if gpu:
        args["jpeg_fancy_upsampling"] = fancy

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=0 if gpu else None)
    def decode():
        encoded, _ = fn.readers.file(files=[str(f) for f in files], random_shuffle=True)
        images = fn.decoders.image_random_crop(encoded, **args)
        return fn.resize(images, resize_x=crop, resize_y=crop, antialias=True)

    pipe = decode()
    pipe.build()
    return pipe


def decoded_batches(pipe) -> Iterator:
    """The pipeline's batches forever, as `(stand-in [n, 0] tensor, None)` for the timers,
    which count `images.shape[0]`."""
    while True:
        (images,) = pipe.run()
        yield torch.empty((len(images), 0)), None


def train_decode(s: Settings) -> Dict:
    """The training decoder's images/s with `jpeg_fancy_upsampling` off (training's setting)
    vs on, beside the CPU decoder with the same threads: nvJPEG refuses ROI decodes with fancy
    upsampling (nvJPEG < 13.2) and DALI decodes them on its CPU threads, so "on" near the CPU
    decoder's rate shows that fallback, and "off" well above it shows nvJPEG decoding."""
    require("nvidia.dali", "DALI", s.on_cuda)
    require_cuda("nvJPEG decoding")
    device = _device(s)
    files = fixtures.training_files(s, max(2 * s.batch, s.classes * s.train_per_class))[0]
    sources = {name: decoded_batches(decode_pipeline(files, s.batch, s.threads, s.crop, gpu,
                                                     fancy))
               for name, gpu, fancy in (("off", True, False), ("on", True, True),
                                        ("cpu", False, False))}
    rates = interleaved_rates(s, sources, device)
    gpu_over_cpu = rates["off"] / rates["cpu"]
    return measurement(s, rates["off"], rates["on"], "same decoder, fancy upsampling on",
                       Goal(), f"image_random_crop of {len(files)} JPEGs to {s.crop} px, batch "
                               f"{s.batch}, {s.threads} threads; CPU decoder "
                               f"{rates['cpu']:,.0f} img/s; fancy off / CPU {gpu_over_cpu:.2f}"
                               f", fancy on / CPU {rates['on'] / rates['cpu']:.2f}")


def _training_precision(s: Settings) -> Optional[torch.dtype]:
    """bf16 on GPUs that have it (the recipes' `train.amp: auto`), else fp16 with GradScaler
    (where `auto` would train in float32, the fastest setting such a GPU offers); none on the
    CPU."""
    if not s.on_cuda:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def train_step(s: Settings) -> Dict:
    """Training steps fed by DALI + PixMix vs synthetic batches already on the device."""
    require("nvidia.dali", "DALI", s.on_cuda)
    from dali_pixmix.models import build_model

    device = _device(s)
    amp = _training_precision(s)
    torch.backends.cudnn.benchmark = s.on_cuda
    model = build_model(s.arch, 1000).to(device)
    if s.on_cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    step = make_step(model, optimizer, amp, device)
    sources = {"synthetic": synthetic_batches(s.batch, s.crop, 1000, device, s.on_cuda),
               "dali": _pipeline_batches(s, device, fixtures.mixing_bank(s, str(device)))}
    best = interleaved_steps(step, sources, s.rounds, s.train_steps, s.train_warmup, device)
    precision = precision_name(amp)
    return measurement(s, best["dali"], best["synthetic"], "synthetic batches on the device",
                       Goal(min_ratio=0.9),
                       f"{s.arch} {precision}, batch {s.batch} x {s.crop} px, "
                       f"{s.train_steps} steps after {s.train_warmup}, best of {s.rounds}, "
                       f"{_execution(s)}")


def eval_infer(s: Settings) -> Dict:
    """Evaluation images/s (DALI decode + resize + crop, model) vs the model alone."""
    require("nvidia.dali", "DALI", s.on_cuda)
    from dali_pixmix.check.functional import save_test_checkpoint
    from dali_pixmix.distributed import DistInfo
    from dali_pixmix.evaluation.runner import Evaluator

    device = _device(s)
    files = fixtures.training_files(s, s.eval_images)[0]
    ckpt = save_test_checkpoint(s, s.workdir / "eval_speed.pt", classes=1000)
    resize = s.eval_resize
    # keep_loaders: the timed pass reuses the warm-up's pipeline, as the steady state of a
    # 50,000-image set would; a fresh build per pass of a few hundred images would dominate
    ev = Evaluator.from_checkpoint(ckpt, s.workdir / "eval_speed", dist=DistInfo(device=device),
                                   batch_size=s.batch, resize=resize, crop=s.crop,
                                   num_threads=s.threads, progress=False, keep_loaders=True)
    labels = np.zeros(len(files), dtype=np.int64)
    rate = timed_pass(lambda: len(ev.infer(files, labels)))
    time_model_only(ev.model, device, s.batch, s.crop, s.batch)  # warm-up
    base = time_model_only(ev.model, device, len(files), s.crop, s.batch)
    return measurement(s, rate, base, "the model alone on synthetic batches", Goal(),
                       f"{len(files)} JPEGs, {s.arch}, batch {s.batch}, {resize} -> {s.crop} px, "
                       "second pass through the first pass's pipeline")


def imagenet_p_video(s: Settings) -> Dict:
    """ImageNet-P frames/s (video decode + model) vs the model alone."""
    from dali_pixmix.classes import imagenet_wnids
    from dali_pixmix.evaluation.video import list_videos
    from dali_pixmix.models import build_model

    device = _device(s)
    if s.on_cuda:
        require("nvidia.dali", "DALI", s.on_cuda)
    entries = list_videos(fixtures.video_folder(s), imagenet_wnids()[:s.classes])
    model = build_model(s.arch, 1000).to(device).eval()
    if s.on_cuda:
        model = model.to(memory_format=torch.channels_last)
    batch = 8 * s.video_frames
    time_model_only(model, device, batch, s.video_size, batch)  # warm-up
    total = len(entries) * s.video_frames
    ceiling = time_model_only(model, device, total, s.video_size, batch)
    # warm-up: the first reader loads the decoder (and on CUDA builds its first DALI video
    # pipeline), a one-off cost that an evaluation of 10,000s of videos never sees again
    time_video_reader(model, entries[:2], s.video_frames, device, batch, s.threads)
    ours = time_video_reader(model, entries, s.video_frames, device, batch, s.threads)
    return measurement(s, ours, ceiling, "the model alone on synthetic frames", Goal(),
                       f"{len(entries)} H.264 videos x {s.video_frames} frames of "
                       f"{s.video_size} px, {s.arch}, {batch} frames per batch")
