"""Functional checks of the GPU data path; each returns a result dict or raises Skip/Failed.

On a CUDA machine a missing or unimportable DALI, nvImageCodec or nvJPEG is a failure naming
the exact error (`decode_libraries`, and every check that needs DALI): a node whose GPU path
cannot run must not pass. The training decoder (an ROI decode without fancy upsampling) must
decode the baseline JPEG flavours with nvImageCodec's CPU decoders excluded, or DALI would
silently decode training images on its CPU threads (`nvjpeg_decode`).

Tolerances (stated in every result line):
- nvJPEG vs the CPU decoder: mean |diff| <= 1 grey level and max <= 12 per picture (different
  IDCTs; without matching chroma upsampling colour edges differ by ~30);
- PixMix on CUDA vs CPU from the same host plan: colour ops bit-exact, geometric ops within 1
  grey level; whole samples to float32 rounding (1e-5), or 0.1 when a geometric op took part
  (a 1-level difference amplified by up to k mixing rounds);
- NVDEC vs PyAV: mean |diff| <= 6 grey levels per video (colour conversion), as
  docs/evaluation.md states;
- evaluation on GPU (nvJPEG, float16 autocast, channels_last) vs CPU: normalised pictures
  mean |diff| <= 0.02 and max <= 0.2, top-1 equal except on near-ties (top two logits within
  1% of the logit spread on the CPU).
"""
from __future__ import annotations

import contextlib
import gc
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from dali_pixmix.check import fixtures
from dali_pixmix.check.harness import Failed, Skip, first_line, importable, require, require_cuda
from dali_pixmix.check.settings import Settings

DECODE_MEAN_LIMIT, DECODE_MAX_LIMIT = 1.0, 12
GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
VIDEO_MEAN_LIMIT = 6.0
EVAL_MEAN_LIMIT, EVAL_MAX_LIMIT = 0.02, 0.2
NORMALISED_RANGE = (-2.2, 2.7)  # ImageNet mean/std applied to [0, 1], with float16 slack


def _device(s: Settings) -> torch.device:
    return torch.device("cuda", 0) if s.on_cuda else torch.device("cpu")


# ----------------------------------------------------------------------------- libraries
def decode_libraries(s: Settings) -> Dict:
    """DALI imports, nvImageCodec and (on CUDA) nvJPEG load: versions and the files loaded. On
    CUDA a missing one fails with its exact error; on the CPU the DALI checks skip instead."""
    from dali_pixmix.check.environment import decoding_libraries, missing_decoding

    facts = decoding_libraries()
    missing = missing_decoding(facts, s.on_cuda)
    if missing and s.on_cuda:
        raise Failed(f"on this CUDA machine: {'; '.join(missing)}")
    if missing:
        raise Skip("; ".join(missing))
    return {"detail": f"DALI {facts['dali']}, nvImageCodec {facts['nvimgcodec']}"
                      + (f", nvJPEG {facts['nvjpeg']}" if facts.get("nvjpeg") else "")
                      + " (their files: the environment's decoding line)"}


# ----------------------------------------------------------------------------- a. nvJPEG
# JPEG flavours the GPU must decode in the training decoder's settings (what ImageNet holds
# almost only); the others (progressive, grayscale, CMYK) may go to the CPU: reported only.
GPU_REQUIRED_KINDS = ("baseline_420", "baseline_422", "baseline_444")
NOT_CPU = ("HW_GPU_ONLY", "GPU_ONLY", "HYBRID_CPU_GPU")  # nvImageCodec backends but the CPU's


def roi_decodes(files: List[Path], fancy: bool, backends=NOT_CPU,
                device_id: Optional[int] = 0) -> Dict[str, bool]:
    """Per file (by stem): does nvImageCodec decode the centre half of it with only these
    `backends` and the chroma setting `fancy`? With the CPU backend excluded this is what
    DALI's `mixed` `image_random_crop` gets from the GPU decoders; where they refuse, DALI
    decodes on its CPU threads instead, silently. `device_id=None`: nvImageCodec's CPU-only
    device (tests)."""
    import nvidia.nvimgcodec as codec

    decoder = codec.Decoder(
        device_id=codec.NVIMGCODEC_DEVICE_CPU_ONLY if device_id is None else device_id,
        backends=[codec.Backend(getattr(codec.BackendKind, kind)) for kind in backends],
        options=f":fancy_upsampling={int(fancy)}")
    params = codec.DecodeParams(apply_exif_orientation=False)
    out = {}
    for path in files:
        stream = codec.CodeStream(str(path))
        h, w = stream.height, stream.width
        region = codec.Region(h // 4, w // 4, h // 4 + h // 2, w // 4 + w // 2)
        try:
            image = decoder.decode(stream.get_sub_code_stream(region=region), params=params)
        except RuntimeError:  # reported like a refusal: no decoder of these backends took it
            image = None
        out[path.stem] = image is not None and tuple(image.shape[:2]) == (h // 2, w // 2)
    return out


def gpu_roi_verdict(decoded: Dict[str, bool], refused_fancy: List[str]) -> str:
    """One line on the training decoder: raises Failed when a required flavour needs the CPU."""
    cpu = sorted(stem for stem, ok in decoded.items() if not ok)
    required = [stem for stem in cpu if stem.startswith(GPU_REQUIRED_KINDS)]
    line = (f"training ROI decode (no fancy upsampling), CPU decoders excluded: "
            f"{len(decoded) - len(cpu)} of {len(decoded)} decoded on the GPU"
            + (f", CPU only: {', '.join(cpu)}" if cpu else "")
            + f"; with fancy upsampling the GPU refuses {len(refused_fancy)} of {len(decoded)}")
    if required:
        raise Failed(f"{line}. Baseline JPEGs would be decoded on the CPU threads, not by "
                     f"nvJPEG: {', '.join(required)}")
    return line


def decode_training_crops(files: List[Path], threads: int) -> int:
    """Decode every file once through the training decoder (`image_random_crop` with the
    training arguments, on the GPU); returns how many crops came back as uint8 HxWx3."""
    from nvidia.dali import fn, pipeline_def

    from dali_pixmix.pipelines.graphs import random_crop_decoder_args

    @pipeline_def(batch_size=len(files), num_threads=threads, device_id=0)
    def decode():
        encoded, _ = fn.readers.file(files=[str(f) for f in files], random_shuffle=False)
        return fn.decoders.image_random_crop(encoded, **random_crop_decoder_args(True))

    pipe = decode()
    pipe.build()
    (crops,) = pipe.run()
    crops = crops.as_cpu()
    return sum(np.array(crops[i]).ndim == 3 and np.array(crops[i]).shape[2] == 3
               for i in range(len(files)))


def decode_with_dali(files: List[Path], gpu: bool, threads: int) -> List[np.ndarray]:
    """Every file decoded to uint8 RGB by the package's decoder settings, in order."""
    from nvidia.dali import fn, pipeline_def, types

    from dali_pixmix.data.decoding import decoder_args

    @pipeline_def(batch_size=len(files), num_threads=threads, device_id=0 if gpu else None)
    def decode():
        encoded, _ = fn.readers.file(files=[str(f) for f in files], random_shuffle=False)
        return fn.decoders.image(encoded, **decoder_args(gpu), output_type=types.RGB)

    pipe = decode()
    pipe.build()
    (images,) = pipe.run()
    if gpu:
        images = images.as_cpu()
    return [np.array(images[i]) for i in range(len(files))]


def nvjpeg_decode(s: Settings) -> Dict:
    """a. nvJPEG (`mixed`) decoding of every JPEG flavour agrees with the CPU decoder (full
    images, fancy upsampling), and the training decoder (ROI, no fancy upsampling) decodes on
    the GPU: through DALI's `image_random_crop`, and with nvImageCodec's CPU decoders
    excluded (a CPU fallback of a baseline JPEG fails)."""
    require("nvidia.dali", "DALI", s.on_cuda)
    require_cuda("nvJPEG decoding")
    files = fixtures.jpeg_variants(s)
    require("nvidia.nvimgcodec", "nvImageCodec's Python module", s.on_cuda)
    refused = [stem for stem, ok in roi_decodes(files, fancy=True).items() if not ok]
    training = gpu_roi_verdict(roi_decodes(files, fancy=False), refused)
    crops = decode_training_crops(files, s.threads)
    if crops != len(files):
        raise Failed(f"the training decoder (image_random_crop, mixed) returned {crops} "
                     f"RGB crops for {len(files)} JPEGs; {training}")
    gpu = decode_with_dali(files, True, s.threads)
    cpu = decode_with_dali(files, False, s.threads)
    worst, bad = (0.0, 0), []
    for path, g, c in zip(files, gpu, cpu):
        if g.shape != c.shape:
            raise Failed(f"{path.name}: GPU decoded {g.shape}, CPU {c.shape}")
        diff = np.abs(g.astype(np.int16) - c.astype(np.int16))
        mean, peak = float(diff.mean()), int(diff.max())
        worst = (max(worst[0], mean), max(worst[1], peak))
        if mean > DECODE_MEAN_LIMIT or peak > DECODE_MAX_LIMIT:
            bad.append(f"{path.stem} (mean {mean:.2f}, max {peak})")
    kinds = ", ".join(k for k, _, _ in fixtures.JPEG_KINDS)
    summary = (f"{len(files)} JPEGs ({kinds}): worst mean |GPU-CPU| {worst[0]:.2f}, max "
               f"{worst[1]} grey levels (limits {DECODE_MEAN_LIMIT:g} / {DECODE_MAX_LIMIT})")
    if bad:
        raise Failed(f"{summary}; over the limit: {', '.join(bad[:4])}")
    return {"detail": f"{summary}; {training}", "worst_mean": worst[0], "worst_max": worst[1],
            "fancy_roi_refused": refused}


# ----------------------------------------------------------------------------- b. pipeline
def _expect_batch(images, labels, *, device, batch, crop, dtype, channels_last) -> None:
    what = f"{dtype} {'channels_last' if channels_last else 'CHW'} batch"
    if images.device != device or labels.device != device:
        raise Failed(f"{what} on {images.device}/{labels.device}, expected {device}")
    if tuple(images.shape) != (batch, 3, crop, crop) or images.dtype != getattr(torch, dtype):
        raise Failed(f"{what}: got {images.dtype} {tuple(images.shape)}")
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if not images.is_contiguous(memory_format=layout):
        raise Failed(f"{what}: images are not {layout} in memory")
    if labels.dtype != torch.int64 or tuple(labels.shape) != (batch,):
        raise Failed(f"{what}: labels are {labels.dtype} {tuple(labels.shape)}")
    if not bool(torch.isfinite(images).all()):
        raise Failed(f"{what}: non-finite values after PixMix")
    low, high = float(images.min()), float(images.max())
    if low < NORMALISED_RANGE[0] or high > NORMALISED_RANGE[1]:
        raise Failed(f"{what}: values in [{low:.2f}, {high:.2f}], outside the normalised range")


def _pipeline_outputs(s: Settings) -> str:
    from dali_pixmix.pipelines.graphs import train_pipeline
    from dali_pixmix.pipelines.loaders import DaliLoader

    device = _device(s)
    bank = fixtures.mixing_bank(s, str(device))
    files, labels = fixtures.training_files(s, 2 * s.check_batch)
    for dtype, channels_last in (("float32", True), ("float16", False)):
        pipe = train_pipeline(files=files, labels=labels, batch_size=s.check_batch, crop=s.crop,
                              device_id=device.index, seed=0, num_threads=s.threads,
                              stage=s.pixmix_stage(bank), dtype=dtype,
                              layout="HWC" if channels_last else "CHW")
        loader = DaliLoader(pipe, batch_size=s.check_batch, train=True,
                            channels_last=channels_last)
        images, batch_labels = next(iter(loader))
        _expect_batch(images, batch_labels, device=device, batch=s.check_batch, crop=s.crop,
                      dtype=dtype, channels_last=channels_last)
    return (f"pipeline on {device}: float32 channels_last and float16 CHW batches of "
            f"{s.check_batch} x {s.crop} px ok")


def ops_agree(images: torch.Tensor, device: torch.device) -> str:
    from dali_pixmix.augment import ops as A
    from dali_pixmix.augment.pixmix import op_params

    n, h, w, _ = images.shape
    gen = torch.Generator().manual_seed(0)
    level = 0.1 + 0.9 * torch.rand(n, generator=gen, dtype=torch.float64)
    negate = torch.rand(n, generator=gen) < 0.5
    worst, bad = 0, []
    for name in A.ALL_OPS:  # params on the host, as pixmix passes them
        param = op_params(name, level, negate, h, w)
        diff = (A.apply_op(images.to(device), name, param).cpu().int()
                - A.apply_op(images, name, param).int()).abs()
        peak = int(diff.max())
        if peak > (1 if name in GEOMETRIC_OPS else 0):
            bad.append(f"{name} (max {peak}, {float((diff > 0).float().mean()):.3%} of values)")
        worst = max(worst, peak if name in GEOMETRIC_OPS else 0)
    if bad:
        raise Failed(f"ops differ between {device} and CPU (colour ops must be exact, "
                     f"geometric within 1 grey level): {', '.join(bad)}")
    return f"{len(A.ALL_OPS)} ops on {device} = CPU (colour exact, geometric max {worst} level)"


def _uses_geometric(trace: dict) -> bool:
    ops = [trace["start"]] + [r["partner"] for r in trace["rounds"]]
    return any(isinstance(op, list) and op[0] in GEOMETRIC_OPS for op in ops)


def pixmix_agrees(images: torch.Tensor, mixing: torch.Tensor, device: torch.device) -> str:
    from dali_pixmix.augment.pixmix import pixmix

    def run(x, m):
        return pixmix(x, m, severity=3, generator=torch.Generator().manual_seed(7), trace=True)

    cpu, cpu_trace = run(images, mixing)
    gpu, gpu_trace = run(images.to(device), mixing.to(device))
    if gpu_trace != cpu_trace:
        raise Failed(f"PixMix drew different choices on {device} and CPU from the same host "
                     "seed")
    diff = (gpu.cpu() - cpu).abs().flatten(1).amax(1).tolist()
    geometric = [_uses_geometric(trace) for trace in cpu_trace]
    worst = {g: max([d for d, gi in zip(diff, geometric) if gi == g], default=0.0)
             for g in (False, True)}
    over = [i for i, (d, g) in enumerate(zip(diff, geometric)) if d > (0.1 if g else 1e-5)]
    summary = (f"traced PixMix of {len(cpu_trace)} samples, {device} vs CPU: max difference "
               f"{worst[False]:.2g} colour-only (limit 1e-05), {worst[True]:.2g} with geometric "
               "ops (limit 0.1)")
    if over:
        raise Failed(f"{summary}; {len(over)} sample(s) over the limit, e.g. sample {over[0]}")
    return summary


def _attempt(part: Callable, *args) -> Tuple[bool, str]:
    """(passed, one line) for one part of a check, so that every part gets to run."""
    try:
        return True, part(*args)
    except Failed as fault:
        return False, str(fault)
    except Exception as err:  # noqa: BLE001 - reported as this part's failure
        traceback.print_exc()
        return False, f"{getattr(part, '__name__', 'part')}: {first_line(err)}"


def train_pipeline(s: Settings) -> Dict:
    """b. The training pipeline with PixMix (shapes, dtype, layout, finite values) and the
    same PixMix computed on CUDA and on CPU."""
    parts, notes = [], []
    if importable("nvidia.dali"):
        parts.append(_attempt(_pipeline_outputs, s))
    elif s.on_cuda:  # the GPU pipeline cannot run: a failure, with the import error
        parts.append(_attempt(require, "nvidia.dali", "DALI", True))
    else:
        notes.append("pipeline part skipped: DALI not importable")
    if s.on_cuda:
        images, mixing = map(torch.from_numpy, fixtures.picture_pool(s.crop, 32, 32, seed=1))
        cuda = torch.device("cuda", 0)
        parts += [_attempt(ops_agree, images, cuda), _attempt(pixmix_agrees, images, mixing,
                                                              cuda)]
    else:
        notes.append("CUDA-vs-CPU PixMix skipped: no CUDA")
    if not parts:
        raise Skip("; ".join(notes))
    failed = [text for ok, text in parts if not ok]
    if failed:
        raise Failed("; ".join(failed + [text for ok, text in parts if ok]))
    return {"detail": "; ".join([text for _, text in parts] + notes)}


# ----------------------------------------------------------------------------- c. no sync
class SyncCheckedStage:
    """A PixMix stage that runs under `torch.cuda.set_sync_debug_mode("error")` and records
    the first host-device synchronisation (its place in our code) instead of hiding it.
    `set_mode` replaces torch's switch where there is no CUDA (tests of the plumbing)."""

    def __init__(self, stage, report: Dict, set_mode: Optional[Callable] = None):
        self.stage, self.report = stage, report
        self.set_mode = set_mode or torch.cuda.set_sync_debug_mode
        self.crop, self.seed = stage.crop, stage.seed
        self.runs_in_torch = stage.runs_in_torch  # the graph hands it the crops (PixMix)
        stage.apply = self._recording(stage.apply)  # DALI's capsules can be read only once

    def _recording(self, apply: Callable) -> Callable:
        def apply_and_record(batch: torch.Tensor) -> torch.Tensor:
            self.report["device"] = str(batch.device)
            return apply(batch)
        return apply_and_record

    def for_pipeline(self, seed: int, dtype: str, layout: str,
                     start: int = 0) -> "SyncCheckedStage":
        return SyncCheckedStage(self.stage.for_pipeline(seed, dtype, layout, start), self.report,
                                self.set_mode)

    def __call__(self, samples):
        return self.checked(self.stage, samples)

    def checked(self, fn: Callable, *args):
        """`fn(*args)` under the synchronisation check; a synchronisation is recorded and
        raised again."""
        self.set_mode("error")
        try:
            out = fn(*args)
        except RuntimeError as err:
            self.report.setdefault("error", f"{first_line(err)} at {_our_frame(err)}")
            raise
        finally:
            self.set_mode("default")
        self.report["calls"] = self.report.get("calls", 0) + 1
        return out


def _our_frame(err: BaseException) -> str:
    """`file.py:line (function)` of the innermost frame of this package in the traceback."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "dali_pixmix" in f.filename]
    if not frames:
        return "an unknown place"
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} ({frame.name})"


def run_checked_stage(s: Settings, stage, device_id: Optional[int], runs: int,
                      set_mode: Optional[Callable] = None) -> Dict:
    """Run the training pipeline `runs` times with `stage` wrapped in a `SyncCheckedStage`;
    returns its report: calls, device and the first synchronisation error, if any."""
    from dali_pixmix.pipelines.graphs import train_pipeline as build

    files, labels = fixtures.training_files(s, 2 * s.check_batch)
    report: Dict = {}
    pipe = build(files=files, labels=labels, batch_size=s.check_batch, crop=s.crop,
                 device_id=device_id, seed=0, num_threads=s.threads, layout="HWC",
                 stage=SyncCheckedStage(stage, report, set_mode))
    try:
        for _ in range(runs):  # pipe.run, not an iterator: no torch work on this thread
            pipe.run()
    except Exception:
        if "error" not in report:
            raise
    finally:
        del pipe  # waits for the batches in flight, so no stage call outlives this function
        gc.collect()
    return report


def run_checked_batches(stage, batch: torch.Tensor, runs: int,
                        set_mode: Optional[Callable] = None) -> Dict:
    """Without DALI: the stage's pipeline form applied `runs` times to `batch` (uint8
    [B, H, W, 3]) under the same check, on a side stream when on CUDA (DALI runs the stage on
    its own stream, never torch's default one); returns the same report as
    `run_checked_stage`."""
    report: Dict = {}
    checked = SyncCheckedStage(stage.for_pipeline(0, "float32", "HWC"), report, set_mode)
    side = torch.cuda.Stream(batch.device) if batch.is_cuda else None
    with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
        if side is not None:
            side.wait_stream(torch.cuda.default_stream(batch.device))  # `batch` is ready
        for _ in range(runs):
            try:
                checked.checked(checked.stage.apply, batch)
            except RuntimeError:
                if "error" not in report:
                    raise
                break
    if side is not None:
        side.synchronize()
    return report


def stage_no_sync(s: Settings) -> Dict:
    """c. The PixMix stage never makes the host wait for the GPU: inside the DALI pipeline,
    or, where DALI cannot be imported, called on CUDA batches on a side stream."""
    require_cuda("the host-synchronisation check")
    runs = 6
    stage = s.pixmix_stage(fixtures.mixing_bank(s, "cuda:0"))
    if importable("nvidia.dali"):
        report, where = run_checked_stage(s, stage, 0, runs), "in the DALI pipeline"
    else:
        pictures = torch.from_numpy(fixtures.picture_pool(s.crop, s.check_batch, 1, seed=3)[0])
        report = run_checked_batches(stage, pictures.to("cuda:0"), runs)
        where = "called directly on a side stream (DALI not importable)"
    if "error" in report:
        raise Failed(f"the PixMix stage synchronised the host: {report['error']}")
    if report.get("calls", 0) < runs or report.get("device") != "cuda:0":
        raise Failed(f"the stage ran {report.get('calls', 0)} times on "
                     f"{report.get('device')} for {runs} GPU batches")
    return {"detail": f"{report['calls']} PixMix stage calls on cuda:0 {where} under "
                      "set_sync_debug_mode('error'): no host-device synchronisation"}


# ----------------------------------------------------------------------------- f. video
def video_decode(s: Settings) -> Dict:
    """f. DALI's GPU (NVDEC) decoding of H.264 agrees with PyAV."""
    require("nvidia.dali", "DALI", s.on_cuda)
    require_cuda("NVDEC video decoding")
    from dali_pixmix.classes import imagenet_wnids
    from dali_pixmix.evaluation.video import VideoReader, decode_pyav, list_videos

    entries = list_videos(fixtures.video_folder(s), imagenet_wnids()[:s.classes])[:4]
    reader = VideoReader(entries, s.video_frames, "cuda", normalize=False, backend="dali",
                         batch_videos=2)
    clips = {clip.name: clip.frames for clip in reader}
    if reader.skipped:
        name, reason = reader.skipped[0]
        raise Failed(f"{len(reader.skipped)} of {len(entries)} videos not decoded ({name}: "
                     f"{reason})")
    worst = 0.0
    for entry in entries:
        reference = torch.from_numpy(decode_pyav(entry.path))
        frames = clips[entry.name].cpu()
        if frames.shape != reference.shape:
            raise Failed(f"{entry.name}: NVDEC gave {tuple(frames.shape)}, PyAV "
                         f"{tuple(reference.shape)}")
        worst = max(worst, float((frames.float() - reference.float()).abs().mean()))
    summary = (f"{len(entries)} H.264 videos ({s.video_frames} frames, {s.video_size} px): worst "
               f"mean |NVDEC-PyAV| {worst:.2f} grey levels (limit {VIDEO_MEAN_LIMIT:g})")
    if worst > VIDEO_MEAN_LIMIT:
        raise Failed(summary)
    return {"detail": summary, "worst_mean": worst}


# ----------------------------------------------------------------------------- g. evaluation
def save_test_checkpoint(s: Settings, path: Path, classes: int) -> Path:
    """A seeded, untrained `s.arch` in the training checkpoint format."""
    from dali_pixmix.classes import imagenet_wnids
    from dali_pixmix.models import build_model

    torch.manual_seed(0)
    torch.save({"model": build_model(s.arch, classes).state_dict(), "arch": s.arch,
                "classes": list(imagenet_wnids()[:classes])}, path)
    return path


def near_ties(model: torch.nn.Module, images: torch.Tensor, batch: int) -> torch.Tensor:
    """bool [N]: pictures whose two highest logits are within 1% of the logit spread, where a
    float16-vs-float32 difference may legitimately change the top-1."""
    with torch.inference_mode():
        logits = torch.cat([model(images[i:i + batch]).float()
                            for i in range(0, len(images), batch)])
    top2 = logits.topk(2, dim=1).values
    spread = logits.amax(1) - logits.amin(1)
    return (top2[:, 0] - top2[:, 1]) < 0.01 * spread


def compare_evaluation(s: Settings, device: torch.device, reference: torch.device) -> str:
    """The evaluation path on `device` and on `reference`: the same pictures after decode,
    resize and crop (within the limits) and the same top-1, except for near-ties."""
    from dali_pixmix.distributed import DistInfo
    from dali_pixmix.evaluation.runner import Evaluator

    files = fixtures.evaluation_files(s, 64)
    ckpt = save_test_checkpoint(s, s.workdir / "eval_check.pt", classes=10)
    labels = np.zeros(len(files), dtype=np.int64)
    evaluators = [Evaluator.from_checkpoint(ckpt, s.workdir / "eval_check",
                                            dist=DistInfo(device=where), batch_size=s.check_batch,
                                            resize=s.eval_resize, crop=s.crop,
                                            num_threads=s.threads, progress=False)
                  for where in (device, reference)]
    top1 = [torch.from_numpy(ev.infer(files, labels).top5[:, 0]) for ev in evaluators]
    pictures = [torch.cat([images.float().cpu() for images, _ in ev.loader(files, labels)])
                for ev in evaluators]  # what each evaluator's model saw
    diff = (pictures[0] - pictures[1]).abs()
    flips = top1[0] != top1[1]
    ties = near_ties(evaluators[1].model, pictures[1].to(reference), s.check_batch)
    unexplained = int((flips & ~ties.cpu()).sum())
    summary = (f"{len(files)} pictures: top-1 equal on {len(files) - int(flips.sum())} "
               f"({int((flips & ties.cpu()).sum())} near-tie flip(s) allowed); normalised "
               f"|{device.type}-{reference.type}| mean {float(diff.mean()):.3f}, max "
               f"{float(diff.max()):.2f} (limits {EVAL_MEAN_LIMIT:g} / {EVAL_MAX_LIMIT:g})")
    if diff.mean() > EVAL_MEAN_LIMIT or diff.max() > EVAL_MAX_LIMIT or unexplained:
        raise Failed(f"{summary}; {unexplained} top-1 change(s) that are not near-ties")
    return summary


def eval_gpu_vs_cpu(s: Settings) -> Dict:
    """g. The evaluation path on GPU (nvJPEG, float16 autocast, channels_last) and on CPU."""
    require("nvidia.dali", "DALI", s.on_cuda)
    require_cuda("the GPU-vs-CPU evaluation check")
    return {"detail": compare_evaluation(s, torch.device("cuda", 0), torch.device("cpu"))}
