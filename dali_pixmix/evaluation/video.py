"""Whole-video decoding for ImageNet-P: DALI/NVDEC on the GPU, PyAV (FFmpeg) on the CPU.

Layout: `<root>/<perturbation>/<wnid>/<name>.mp4`, H.264, 224x224, 31 frames per video (41 for
translate). DALI decodes H.264 only on the GPU (its CPU video backend handles VP8/VP9/MJPEG), so
a CPU run decodes with PyAV. Both backends sit behind one interface, `VideoReader`: an iterator
of `VideoClip(name, label, frames)` where `name` is `<wnid>/<file stem>`, `label` the index of the
wnid in the model's class list, and `frames` either uint8 [T, H, W, 3] or, with
`normalize=True`, float [T, 3, H, W] normalised with ImageNet mean/std (no resize, no crop),
on the reader's device.

A video that fails to decode or has the wrong number of frames is not yielded: it is appended to
`VideoReader.skipped` as `(name, reason)` and logged, so callers report it by name and count.
"""
from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from dali_pixmix.data.normalise import normalise_imagenet

log = logging.getLogger(__name__)

VIDEO_SUFFIX = ".mp4"
DEFAULT_FRAMES = 31
TRANSLATE_FRAMES = 41


def expected_frames(perturbation: str) -> int:
    """Frames per ImageNet-P video: 41 for translate (and its difficulty folders), else 31."""
    return TRANSLATE_FRAMES if perturbation.split("_")[0] == "translate" else DEFAULT_FRAMES


@dataclass(frozen=True)
class VideoEntry:
    path: Path
    name: str       # "<wnid>/<file stem>": unique within a perturbation folder
    label: int      # index of the wnid in the model's class list


class VideoClip(NamedTuple):
    name: str
    label: int
    frames: torch.Tensor


def list_videos(folder: str | Path, classes: Sequence[str]) -> List[VideoEntry]:
    """Videos of one perturbation folder, sorted by name; validates the class folders."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"ImageNet-P folder not found: {folder} (expected "
                                "<root>/<perturbation>/<wnid>/<name>.mp4; check --root)")
    wnids = sorted(p.name for p in folder.iterdir() if p.is_dir())
    position = {w: i for i, w in enumerate(classes)}
    unknown = [w for w in wnids if w not in position]
    if unknown:
        raise ValueError(f"{folder}: {len(unknown)} class folders are not in the model's "
                         "class list "
                         f"(e.g. {unknown[:3]}); the dataset and checkpoint disagree")
    entries = [VideoEntry(path, f"{wnid}/{path.stem}", position[wnid])
               for wnid in wnids for path in sorted((folder / wnid).glob("*" + VIDEO_SUFFIX))]
    if not entries:
        raise ValueError(f"{folder}: no {VIDEO_SUFFIX} videos in <wnid>/ sub-folders")
    return entries


def shard(entries: Sequence[VideoEntry], rank: int, world_size: int) -> List[VideoEntry]:
    """The videos of one global rank (strided, so every rank gets a balanced share)."""
    return list(entries[rank::world_size])


def decode_pyav(path: str | Path) -> np.ndarray:
    """All frames of a video as uint8 [T, H, W, 3] RGB, decoded by FFmpeg through PyAV."""
    import av  # imported here: only CPU decoding needs it

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise ValueError("no frames decoded")
    return np.stack(frames)


def normalize_frames(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> `dtype` [T, 3, H, W] with ImageNet mean/std, on the same device."""
    return normalise_imagenet(frames.permute(0, 3, 1, 2), scale=255, dtype=dtype)


def resolve_device(device: torch.device | str) -> torch.device:
    """`device` with an explicit index: a bare "cuda" becomes the caller's current GPU. Decoding
    runs in worker threads, whose current CUDA device is their own (0), not the caller's."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def prefetch_map(func: Callable, items: Iterable, workers: int, depth: int) -> Iterator:
    """`map(func, items)` in order, computed by `workers` threads up to `depth` items ahead."""
    items = iter(items)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque(pool.submit(func, item) for item in islice(items, depth))
        while pending:
            result = pending.popleft().result()
            for item in islice(items, 1):
                pending.append(pool.submit(func, item))
            yield result


Decoded = Tuple[VideoEntry, Optional[torch.Tensor], str]   # (entry, uint8 frames or None, error)


class VideoReader:
    """Iterate `VideoClip`s of `entries`; see the module docstring for the contract.

    backend: "auto" (DALI on CUDA, PyAV on CPU), "dali" (NVDEC on CUDA; on the CPU DALI
    decodes VP8/VP9/MJPEG only, not ImageNet-P's H.264) or "pyav" (CPU decode, frames then
    moved to `device`). `batch_videos` videos go to DALI at once (the next batch decodes while
    the caller uses this one); `workers` PyAV threads decode ahead on the CPU (DALI: its CPU
    threads).
    """

    def __init__(self, entries: Sequence[VideoEntry], num_frames: int,
                 device: torch.device | str = "cpu", normalize: bool = True,
                 backend: str = "auto", batch_videos: int = 8, workers: int = 2):
        self.entries = list(entries)
        self.num_frames = num_frames
        self.device = resolve_device(device)
        self.normalize = normalize
        self.backend = resolve_backend(backend, self.device)
        self.batch_videos = max(1, batch_videos)
        self.workers = max(1, workers)
        self.skipped: List[Tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[VideoClip]:
        for entry, frames, error in self._decoded():
            if frames is not None and frames.shape[0] != self.num_frames:
                error = f"has {frames.shape[0]} frames, expected {self.num_frames}"
            if error:
                log.warning("skipping video %s (%s): %s", entry.name, entry.path, error)
                self.skipped.append((entry.name, error))
                continue
            if frames.is_cuda:  # made on the decoder's stream: keep it alive for ours
                frames.record_stream(torch.cuda.current_stream(frames.device))
            frames = frames.to(self.device, non_blocking=True)
            if self.normalize:
                frames = normalize_frames(frames)
            yield VideoClip(entry.name, entry.label, frames)

    def _decoded(self) -> Iterator[Decoded]:
        if self.backend == "pyav":
            return prefetch_map(_decode_entry_pyav, self.entries, self.workers, 2 * self.workers)
        decoder = DaliVideoDecoder(self.device, self.batch_videos, self.workers)
        batches = [self.entries[i:i + self.batch_videos]
                   for i in range(0, len(self.entries), self.batch_videos)]
        # One thread: DALI decodes the next batch while the caller runs the model on this one.
        return (item for batch in prefetch_map(decoder.decode, batches, 1, 1) for item in batch)


def resolve_backend(backend: str, device: torch.device) -> str:
    """auto -> DALI on CUDA, PyAV on CPU. DALI on the CPU only decodes VP8/VP9/MJPEG, not H.264."""
    if backend == "auto":
        return "dali" if device.type == "cuda" else "pyav"
    if backend not in ("dali", "pyav"):
        raise ValueError(f"unknown video backend '{backend}': use auto, dali or pyav")
    return backend


def _decode_entry_pyav(entry: VideoEntry) -> Decoded:
    try:
        return entry, torch.from_numpy(decode_pyav(entry.path)), ""
    except Exception as err:  # corrupt container or stream: reported by name, not raised
        return entry, None, f"decode failed: {type(err).__name__}: {short_error(err)}"


class DaliVideoDecoder:
    """Batches of encoded files -> uint8 [T, H, W, 3] tensors via DALI's `fn.decoders.video`.

    On CUDA the "mixed" backend decodes with NVDEC (H.264, HEVC, AV1, ...); on the CPU
    (`device_id=None`) DALI's FFmpeg build decodes VP8/VP9/MJPEG only, which the tests use to
    exercise this class without a GPU.
    """

    def __init__(self, device: torch.device, batch_videos: int, num_threads: int = 2):
        self.device = resolve_device(device)  # here, in the caller's thread
        self.batch_videos = batch_videos
        self.num_threads = num_threads
        self._pipe = None
        self._copy_stream = None

    def _build(self, batch_size: int):
        from nvidia.dali import fn, pipeline_def, types

        on_gpu = self.device.type == "cuda"
        device_id = self.device.index if on_gpu else None

        @pipeline_def(batch_size=batch_size, num_threads=self.num_threads, device_id=device_id,
                      prefetch_queue_depth=1, exec_pipelined=False, exec_async=False)
        def video_pipeline():
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            return fn.decoders.video(encoded, device="mixed" if on_gpu else "cpu")

        pipe = video_pipeline()
        pipe.build()
        return pipe

    def _run(self, pipe, entries: Sequence[VideoEntry]) -> List[torch.Tensor]:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        pipe.feed_input("encoded", [np.fromfile(e.path, dtype=np.uint8) for e in entries])
        (videos,) = pipe.run()
        if self.device.type != "cuda":
            return [feed_ndarray(videos[i], torch.empty(videos[i].shape(), dtype=torch.uint8))
                    for i in range(len(entries))]
        # Copy out on a private stream (DALI reuses its output buffers on the next run) and wait
        # for it here, in the decode thread; consumers call record_stream on their own stream.
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._copy_stream):
            out = [torch.empty(videos[i].shape(), dtype=torch.uint8, device=self.device)
                   for i in range(len(entries))]
            for i, tensor in enumerate(out):
                feed_ndarray(videos[i], tensor, cuda_stream=self._copy_stream)
        self._copy_stream.synchronize()
        return out

    def decode(self, entries: Sequence[VideoEntry]) -> List[Decoded]:
        """Decode a batch; if DALI fails, decode one by one to name the broken videos."""
        if self._pipe is None:
            self._pipe = self._build(self.batch_videos)
        try:
            return [(e, v, "") for e, v in zip(entries, self._run(self._pipe, entries))]
        except Exception:
            self._pipe = None  # a DALI pipeline that raised is no longer usable
        results = []
        for entry in entries:
            try:
                results.append((entry, self._run(self._build(1), [entry])[0], ""))
            except Exception as err:
                results.append((entry, None, f"decode failed: {short_error(err)}"))
        return results


def short_error(err: Exception) -> str:
    """The informative line of a (multi-line) DALI error, for a one-line skip report."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("Assert") or "ailed" in line:
            return line[:300]
    return (lines[-1] if lines else type(err).__name__)[:300]
