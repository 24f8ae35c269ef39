"""PyTorch-facing loaders over the DALI pipelines: `(images, labels)` batches per rank.

Training loaders drop the last partial batch and every rank runs the same number of steps
(`train_steps_per_epoch`: the SMALLEST shard in whole batches), so DDP ranks stay in lockstep.
One training loader exists, `make_train_loader` (`TrainLoader`): ONE DALI pipeline per rank
serves the whole run. Its external source (`TrainStream`) feeds every batch's file paths in
the order of `epoch_order(N, seed, epoch)`, so no pipeline is rebuilt per epoch, and DALI's
pipeline checkpoint (`TrainLoader.state()`, a few hundred bytes per rank, a few KB with
AutoAugment) carries the random ops' state into a training checkpoint. Why this design:
- the data order stays ours (a numpy permutation per (seed, epoch), the same on every rank,
  sharded as DALI's readers shard), not a reader's own reshuffle, and any batch of the run can
  be the first one a pipeline reads: a resumed run starts reading at its step, nothing is
  replayed, and the decoders' pinned and device buffers are allocated once per run (a reader
  per epoch would allocate them every epoch, and resume mid-epoch by decoding and discarding
  the batches already trained);
- DALI's random ops (crop window, flip, AutoAugment's choices) keep a Philox state that
  advances per batch: DALI's own checkpointing restores it exactly (tried against an
  uninterrupted pipeline in the tests); the torch stages (PixMix, AugMix, Cutout), whose state
  DALI does not know, reseed themselves per batch from the batch's index instead
  (`pipelines.stage.BatchStage`), so prefetching cannot shift their draws;
- what a checkpoint cannot restore (another world size or DALI version, a changed recipe, a
  checkpoint without the state) falls back to a fresh pipeline at the same position: the same
  data order, other crop/flip draws (the trainer says so).
Evaluation loaders are exact: every picture is seen once across ranks, the padding DALI adds to
keep ranks in step is removed, and `num_samples` is this rank's exact share. Class-folder roots
are listed by `data.images` (the package's one discovery rule), never by DALI's own scan.
CIFAR training reads its pictures from memory through the same loader: `make_array_train_loader`
feeds `TrainLoader` from an `ArrayStream` (the same data order and sharding, the pictures
themselves instead of their paths) into `graphs.array_train_pipeline`.

Images are float32/float16 `[B, 3, H, W]` on the rank's device (channels_last memory format when
asked), labels int64 `[B]`. Iterating a loader again starts the next epoch; leaving a loop early
and iterating again continues the unfinished epoch (DALI's position is not rewound).
In evaluation mode ranks may run one batch more or fewer than each other: per-batch collectives
must not be used; gather the results after the loop.
A file DALI cannot read stops the iteration with `data.checks.UnreadableImageError` naming it
(found from DALI's message, or among the files of the failing batches), never a raw DALI error;
an error raised by the training stage (`BatchStage`) inside DALI is raised as itself.
"""
from __future__ import annotations

import math
import os
from functools import partial
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from dali_pixmix.data.checks import common_folder, dali_reason, decode_failure
from dali_pixmix.data.decoding import HW_DECODER_LOAD
from dali_pixmix.data.file_lists import read_file_list
from dali_pixmix.data.images import class_folders, list_samples
from dali_pixmix.distributed import DistInfo
from dali_pixmix.pipelines.graphs import (
    array_train_pipeline,
    eval_pipeline,
    stream_train_pipeline,
)
from dali_pixmix.pipelines.stage import BatchStage


class DaliLoader:
    """Iterable of `(images, labels)` over one rank's shard of a built DALI pipeline.

    `files` is the list the reader reads, in its order (all shards); with it a DALI failure is
    reported as an `UnreadableImageError` naming the file, `what` saying which images they are.
    """

    def __init__(self, pipe, *, batch_size: int, train: bool, channels_last: bool = False,
                 files: Optional[Sequence] = None, what: str = "image"):
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        meta = pipe.reader_meta("Reader")
        self.pipe, self.batch_size, self.train = pipe, batch_size, train
        self.channels_last, self.files, self.what = channels_last, files, what
        self.dataset_size = int(meta["epoch_size"])
        self.num_shards, self.shard_id = int(meta["number_of_shards"]), int(meta["shard_id"])
        if train and len(self) == 0:
            raise ValueError(f"the training set has {self.dataset_size} images: too few for "
                             f"{self.num_shards} rank(s) x batch {batch_size}; lower the batch "
                             "size")
        policy = LastBatchPolicy.DROP if train else LastBatchPolicy.PARTIAL
        self._batches_read = 0  # of the current epoch, to find the files of a failing batch
        try:  # the iterator runs the first batch already
            self._iterator = DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader",
                                                 last_batch_policy=policy, auto_reset=True)
        except RuntimeError as err:
            raise self._failure(err) from None

    @property
    def shard_size(self) -> int:
        """Pictures in this rank's shard (DALI's split: [N*r//S, N*(r+1)//S))."""
        n, s, r = self.dataset_size, self.num_shards, self.shard_id
        return n * (r + 1) // s - n * r // s

    @property
    def num_samples(self) -> int:
        """Samples this rank yields per epoch (exact share in evaluation mode)."""
        if self.train:
            return len(self) * self.batch_size
        return self.shard_size

    def __len__(self) -> int:
        if self.train:
            return train_steps_per_epoch(self.dataset_size, self.num_shards, self.batch_size)
        return math.ceil(self.shard_size / self.batch_size)

    def _failure(self, err: RuntimeError) -> Exception:
        """The error naming the file behind a DALI failure in the batch being read.

        DALI reports an error with the batch that hit it; the batch after it is searched too.
        """
        if self.files is None:
            return err
        start = self.dataset_size * self.shard_id // self.num_shards
        end = start + self.shard_size
        first = start + self._batches_read * self.batch_size
        suspects = list(self.files[first:min(first + 2 * self.batch_size, end)])
        root = getattr(self.files, "root", None) or common_folder(self.files)
        return decode_failure(err, suspects, self.what, root=root)

    def _next_batches(self):
        """DALI's batches, a failure turned into an error that names the file. The count of
        batches read goes on when a loop left early is iterated again (the epoch continues)."""
        iterator = iter(self._iterator)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                self._batches_read = 0  # the next iteration starts a new epoch
                return
            except RuntimeError as err:
                raise self._failure(err) from None
            self._batches_read += 1
            yield batch

    def __iter__(self):
        for batch in self._next_batches():
            if batch[0]["labels"].shape[0] == 0:
                # DALI gives ranks with a smaller evaluation shard an empty last batch.
                continue
            yield as_torch(batch, self.channels_last)


def train_steps_per_epoch(num_samples: int, world_size: int, batch_size: int) -> int:
    """Steps every rank runs per training epoch: the smallest shard (DALI's split gives it
    `num_samples // world_size` samples) in whole per-rank batches."""
    return (num_samples // world_size) // batch_size


# --------------------------------------------------------------------------- input checks
def check_files(files: Sequence, labels: Optional[Sequence[int]]) -> None:
    if not files:
        raise ValueError("the list of files to read is empty")
    if labels is not None and len(labels) != len(files):
        raise ValueError(f"got {len(files)} files but {len(labels)} labels")
    for f in files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"picture {f} does not exist")


def check_sources(file_root, file_list, files, labels) -> None:
    """Validate the input before DALI runs, so errors name the bad file or folder."""
    if files is not None:
        check_files(files, labels)
    elif file_list is not None:
        read_file_list(file_list, file_root, "file_root=")  # names a missing file's list line
    elif file_root is not None:
        class_folders(file_root)  # names an empty class folder
    else:
        raise ValueError("give a file_root (class folders), a file_list or files")


# --------------------------------------------------------------------------- factories
def make_eval_loader(*, file_root=None, file_list=None, files=None, labels=None,
                     batch_size: int, dist: DistInfo, resize: int = 256, crop: int = 224,
                     no_resize: bool = False, num_threads: int = 2, dtype: str = "float32",
                     channels_last: bool = False, what: str = "image") -> DaliLoader:
    """Exact evaluation loader for this rank (PARTIAL policy, padding removed).

    Headers are not checked here (`data.checks.screen_images` does it once per file list, as
    the evaluation runner does): a file with a broken header may crash DALI.
    """
    check_sources(file_root, file_list, files, labels)
    pipe = eval_pipeline(file_root=file_root, file_list=file_list, files=files, labels=labels,
                         batch_size=batch_size, resize=resize, crop=crop, no_resize=no_resize,
                         device_id=dist.dali_device_id, shard_id=dist.rank,
                         num_shards=dist.world_size, num_threads=num_threads, dtype=dtype,
                         layout="HWC" if channels_last else "CHW")
    return DaliLoader(pipe, batch_size=batch_size, train=False, channels_last=channels_last,
                      files=None if files is None else list(files), what=what)


# --------------------------------------------------------------------------- training
def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The global permutation of sample indices for `epoch` (identical on every rank)."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


class TrainStream:
    """Which files every training batch of one rank holds, for a whole run.

    Batch n of the run is batch `n % steps_per_epoch` of epoch `n // steps_per_epoch`: the
    epoch's global order `epoch_order(len(samples), seed, epoch)` is split into shards as
    DALI's readers split a list (rank r reads `[N*r//W, N*(r+1)//W)`), and each shard is read
    in whole batches; the rest of a shard is dropped, so every rank runs the same steps.
    Called by DALI as the pipeline's external source, it returns the next batch's paths (the
    encoded path as uint8, for `fn.io.file.read`) and labels (int32 [1] each), starting at
    batch `step` of `epoch` (`next_batch`). DALI calls it once per batch, in order, ahead of
    consumption.
    """

    def __init__(self, root, samples: Sequence[Tuple[str, int]], *, seed: int,
                 batch_size: int, shard_id: int = 0, num_shards: int = 1, epoch: int = 0,
                 step: int = 0):
        self.root, self.samples = str(root), samples
        self._order([label for _, label in samples], seed=seed, batch_size=batch_size,
                    shard_id=shard_id, num_shards=num_shards, epoch=epoch, step=step)
        # made once: a batch then costs a gather and one string join per picture
        self._prefix = os.path.join(self.root, "")

    def _order(self, labels, *, seed, batch_size, shard_id, num_shards, epoch, step) -> None:
        """The data order's settings, and the labels as int32 [N, 1] (what DALI is fed)."""
        self.seed, self.num_samples = seed, len(labels)
        self.batch_size, self.shard_id, self.num_shards = batch_size, shard_id, num_shards
        self.steps_per_epoch = train_steps_per_epoch(self.num_samples, num_shards, batch_size)
        self.next_batch = epoch * self.steps_per_epoch + step
        self._shards = {}  # epoch -> this rank's part of the epoch's order (the last two kept)
        self._labels = np.asarray(labels, dtype=np.int32).reshape(-1, 1)

    def shard(self, epoch: int) -> np.ndarray:
        """Sample indices of this rank's shard of `epoch`, in reading order."""
        if epoch not in self._shards:
            n, r, w = self.num_samples, self.shard_id, self.num_shards
            self._shards = {e: v for e, v in self._shards.items() if e >= epoch - 1}
            self._shards[epoch] = epoch_order(n, self.seed, epoch)[n * r // w:n * (r + 1) // w]
        return self._shards[epoch]

    def batch(self, n: int) -> np.ndarray:
        """Sample indices of batch `n` of the run."""
        epoch, index = divmod(n, self.steps_per_epoch)
        return self.shard(epoch)[index * self.batch_size:(index + 1) * self.batch_size]

    def files(self, n: int) -> List[str]:
        """Paths of the pictures of batch `n` of the run."""
        return [self._path(i) for i in self.batch(n)]

    def _path(self, index: int) -> str:
        return self._prefix + self.samples[index][0]

    def __call__(self, _batch_info):
        indices = self.batch(self.next_batch)
        self.next_batch += 1
        paths = [np.frombuffer(os.fsencode(self._path(i)), dtype=np.uint8)
                 for i in indices.tolist()]
        return paths, self._labels[indices]


class ArrayStream(TrainStream):
    """A `TrainStream` over pictures held in memory (CIFAR): the same data order and shards,
    and batch n is the pictures themselves, `images[batch(n)]` (uint8 [B, H, W, 3]), with
    their labels; nothing is read from files (`files(n)` is empty)."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], *, seed: int,
                 batch_size: int, shard_id: int = 0, num_shards: int = 1, epoch: int = 0,
                 step: int = 0):
        images = np.ascontiguousarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 \
                or images.shape[1] != images.shape[2]:
            raise ValueError(f"in-memory training pictures must be uint8 [N, S, S, 3], got "
                             f"{images.dtype} {images.shape}")
        if len(labels) != len(images):
            raise ValueError(f"got {len(images)} training pictures but {len(labels)} labels")
        self.root, self.images = None, images  # pictures from memory: no folder
        self._order(labels, seed=seed, batch_size=batch_size, shard_id=shard_id,
                    num_shards=num_shards, epoch=epoch, step=step)

    @property
    def size(self) -> int:
        """Side of the square pictures."""
        return int(self.images.shape[1])

    def files(self, n: int) -> List[str]:
        return []

    def __call__(self, _batch_info):
        indices = self.batch(self.next_batch)
        self.next_batch += 1
        return self.images[indices], self._labels[indices]


class LoaderStateError(RuntimeError):
    """A saved DALI pipeline state that this pipeline cannot take (another DALI version or
    graph); the message is DALI's."""


class TrainLoader:
    """One rank's training batches for a whole run, from ONE DALI pipeline built at start.

    `iter(loader)` yields `(images, labels)` for the rest of the current epoch (from
    `epoch_step`) and stops; iterating again goes on with the next epoch, and leaving a loop
    early and iterating again continues where it stopped. `position` counts the batches
    handed out since the start of the run (`epoch * len(loader) + epoch_step`). `state()` is
    the pipeline's DALI checkpoint at `position` (the random ops' state); a loader made with it
    at the same position draws exactly what this one would have (`make_train_loader`).
    A file DALI cannot read stops the iteration with an `UnreadableImageError` naming it.
    """

    SUSPECT_BATCHES = 3  # the batch being read and the ones DALI has prefetched

    def __init__(self, stream: TrainStream, pipe, *, channels_last: bool = False):
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        self.stream, self.pipe, self.channels_last = stream, pipe, channels_last
        self.batch_size, self.position = stream.batch_size, stream.next_batch
        self.dataset_size = stream.num_samples
        try:  # the iterator runs the first batches already
            self._iterator = DALIGenericIterator(pipe, ["images", "labels"])
        except RuntimeError as err:
            raise self._failure(err) from None

    def __len__(self) -> int:
        return self.stream.steps_per_epoch

    @property
    def num_samples(self) -> int:
        return len(self) * self.batch_size

    @property
    def epoch(self) -> int:
        return self.position // len(self)

    @property
    def epoch_step(self) -> int:
        return self.position % len(self)

    def __iter__(self):
        return self.rest_of_epoch(self.epoch)

    def rest_of_epoch(self, epoch: int):
        """`(images, labels)` from `position` to the end of `epoch` (none once past it)."""
        end = (epoch + 1) * len(self)
        while self.position < end:
            try:
                batch = next(self._iterator)
            except RuntimeError as err:
                raise self._failure(err) from None
            self.position += 1
            yield as_torch(batch, self.channels_last)

    def state(self) -> bytes:
        """The pipeline's DALI checkpoint at `position` (a few hundred bytes)."""
        return self._iterator.checkpoints()[0]

    def _failure(self, err: RuntimeError) -> Exception:
        failure = BatchStage.take_failure(err)
        if failure is not None:  # the per-image method failed, not a file: its own error
            return failure
        batches = range(self.position, self.position + self.SUSPECT_BATCHES)
        suspects = dict.fromkeys(f for n in batches for f in self.stream.files(n))  # an epoch
        return decode_failure(err, list(suspects), "training image",  # may end among them
                              root=self.stream.root)


def as_torch(batch, channels_last: bool):
    """`(images, labels)` of a DALIGenericIterator batch; int64 [B] labels."""
    images, labels = batch[0]["images"], batch[0]["labels"]
    if channels_last:  # HWC storage viewed as NCHW = channels_last memory format
        images = images.permute(0, 3, 1, 2)
    return images, labels.reshape(-1).long()


def make_train_loader(*, root: str | Path, batch_size: int, dist: DistInfo, epoch: int = 0,
                      step: int = 0, seed: int = 0,
                      samples: Optional[Sequence[Tuple[str, int]]] = None, crop: int = 224,
                      stage: Optional[BatchStage] = None, auto_augment: bool = False,
                      num_threads: int = 2, dtype: str = "float32", channels_last: bool = False,
                      dali_state: Optional[bytes] = None,
                      hw_decoder_load: float = HW_DECODER_LOAD) -> TrainLoader:
    """This rank's training loader, positioned at batch `step` of `epoch` (built once per run).

    `samples` are `(path relative to root, label)` pairs (default: `list_samples(root)`); the
    data order is `TrainStream`'s. The per-image method is `stage` (or DALI's AutoAugment,
    `auto_augment`). DALI's random ops are seeded with `seed + rank` and the stage as in
    `graphs.train_pipeline`; `dali_state` (a `TrainLoader.state()` saved at this position by
    the same rank and pipeline) restores the random ops' state, else they start afresh. Raises
    `LoaderStateError` when DALI refuses `dali_state`. `hw_decoder_load` is the share of the
    JPEGs nvJPEG's hardware decoder takes on GPUs that have one (`data.hw_decoder_load`).
    """
    samples = list_samples(root) if samples is None else samples
    stream = TrainStream(root, samples, seed=seed, batch_size=batch_size, shard_id=dist.rank,
                         num_shards=dist.world_size, epoch=epoch, step=step)
    build = partial(stream_train_pipeline, hw_decoder_load=hw_decoder_load)
    return open_train_loader(stream, build, dist=dist, crop=crop, stage=stage,
                             auto_augment=auto_augment, num_threads=num_threads, dtype=dtype,
                             channels_last=channels_last, dali_state=dali_state)


def make_array_train_loader(images: np.ndarray, labels: Sequence[int], *, batch_size: int,
                            dist: DistInfo, epoch: int = 0, step: int = 0, seed: int = 0,
                            crop: int = 32, stage: Optional[BatchStage] = None,
                            auto_augment: bool = False, num_threads: int = 2,
                            dtype: str = "float32", channels_last: bool = False,
                            dali_state: Optional[bytes] = None) -> TrainLoader:
    """This rank's training loader over in-memory pictures (CIFAR: uint8 [N, 32, 32, 3] and
    their labels), positioned at batch `step` of `epoch`, built once per run like
    `make_train_loader` (the same data order, seeds, `dali_state` and errors), running
    `graphs.array_train_pipeline`: `RandomCrop(crop, padding=4)` with zero padding, flip, the
    per-image method, CIFAR's normalisation.
    """
    stream = ArrayStream(images, labels, seed=seed, batch_size=batch_size, shard_id=dist.rank,
                         num_shards=dist.world_size, epoch=epoch, step=step)
    build = partial(array_train_pipeline, size=stream.size)
    return open_train_loader(stream, build, dist=dist, crop=crop, stage=stage,
                             auto_augment=auto_augment, num_threads=num_threads, dtype=dtype,
                             channels_last=channels_last, dali_state=dali_state)


def open_train_loader(stream: TrainStream, build, *, dist: DistInfo, crop: int, stage,
                      auto_augment: bool, num_threads: int, dtype: str, channels_last: bool,
                      dali_state: Optional[bytes]) -> TrainLoader:
    """A `TrainLoader` of `stream` over the pipeline `build(stream, ...)` makes (a training
    pipeline builder of `graphs`), started at the stream's next batch, restoring `dali_state`
    (`LoaderStateError` when DALI refuses it)."""
    if stream.steps_per_epoch == 0:
        raise ValueError(f"the training set has {stream.num_samples} images: too few for "
                         f"{dist.world_size} rank(s) x batch {stream.batch_size}; lower the "
                         "batch size")
    try:
        pipe = build(stream, batch_size=stream.batch_size, crop=crop,
                     device_id=dist.dali_device_id, shard_id=dist.rank, seed=stream.seed,
                     num_threads=num_threads, stage=stage, auto_augment=auto_augment,
                     dtype=dtype, layout="HWC" if channels_last else "CHW",
                     start=stream.next_batch, checkpoint=dali_state)
    except RuntimeError as err:
        if dali_state is None:
            raise
        raise LoaderStateError(dali_reason(err)) from None
    return TrainLoader(stream, pipe, channels_last=channels_last)
