"""PyTorch-facing loaders over the DALI pipelines: `(images, labels)` batches per rank.

Training loaders drop the last partial batch and every rank runs the same number of steps
(`train_steps_per_epoch`: the SMALLEST shard in whole batches), so DDP ranks stay in lockstep.
One training loader exists, `make_train_loader`: each epoch's loader is built from (seed,
epoch), which makes a resumed run replay exactly the data order of an uninterrupted one.
Evaluation loaders are exact: every picture is seen once across ranks, the padding DALI adds to
keep ranks in step is removed, and `num_samples` is this rank's exact share. Class-folder roots
are listed by `data.images` (the package's one discovery rule), never by DALI's own scan.

Images are float32/float16 `[B, 3, H, W]` on the rank's device (channels_last memory format when
asked), labels int64 `[B]`. Iterating the loader again starts the next epoch; leaving a loop early
and iterating again continues the unfinished epoch (DALI's reader position is not rewound).
In evaluation mode ranks may run one batch more or fewer than each other: per-batch collectives
must not be used; gather the results after the loop.
A file DALI cannot read stops the iteration with `data.checks.UnreadableImageError` naming it
(found from DALI's message, or among the files of the failing batches), never a raw DALI error.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from dali_pixmix.data.checks import common_folder, decode_failure
from dali_pixmix.data.file_lists import read_file_list, write_file_list
from dali_pixmix.data.graphs import eval_pipeline, train_pipeline
from dali_pixmix.data.images import class_folders, list_samples
from dali_pixmix.data.stage import BatchStage
from dali_pixmix.distributed import DistInfo


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
                             f"{self.num_shards} rank(s) x batch {batch_size}; lower the batch size")
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
        """DALI's batches, a failure turned into an error that names the file."""
        self._batches_read = 0
        iterator = iter(self._iterator)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except RuntimeError as err:
                raise self._failure(err) from None
            self._batches_read += 1
            yield batch

    def __iter__(self):
        for batch in self._next_batches():
            images, labels = batch[0]["images"], batch[0]["labels"]
            if labels.shape[0] == 0:
                # DALI gives ranks with a smaller evaluation shard an empty last batch.
                continue
            if self.channels_last:  # HWC storage viewed as NCHW = channels_last memory format
                images = images.permute(0, 3, 1, 2)
            yield images, labels.reshape(-1).long()


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
        read_file_list(file_list, root=file_root)  # names the list line of a missing file
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


# --------------------------------------------------------------------------- training epochs
def epoch_seed(seed: int, epoch: int) -> int:
    """Seed for one epoch's pipeline (kept below 2**30 so `+ rank` stays a valid int32)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]) % (1 << 30)


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The global permutation of sample indices for `epoch` (identical on every rank)."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def make_train_loader(*, root: str | Path, batch_size: int, dist: DistInfo, epoch: int = 0,
                      seed: int = 0, samples: Optional[Sequence[Tuple[str, int]]] = None,
                      crop: int = 224, stage: Optional[BatchStage] = None,
                      auto_augment: bool = False, num_threads: int = 2,
                      dtype: str = "float32", channels_last: bool = False) -> DaliLoader:
    """This rank's DALI training loader of `epoch` (drops the last partial batch).

    `samples` are `(path relative to root, label)` pairs (default: `list_samples(root)`); the
    epoch reads them in the global order `epoch_order(len(samples), seed, epoch)`, sharded by
    rank, with DALI and the per-image `stage` (or DALI's AutoAugment, `auto_augment`) seeded
    from `epoch_seed(seed, epoch)`.
    """
    samples = list_samples(root) if samples is None else samples
    order = epoch_order(len(samples), seed, epoch)
    handle, path = tempfile.mkstemp(prefix="dali_pixmix_epoch_", suffix=".txt")
    os.close(handle)
    try:
        write_file_list(path, [samples[i] for i in order])
        pipe = train_pipeline(file_root=str(root), file_list=path, batch_size=batch_size,
                              crop=crop, device_id=dist.dali_device_id, shard_id=dist.rank,
                              num_shards=dist.world_size, seed=epoch_seed(seed, epoch),
                              num_threads=num_threads, stage=stage,
                              auto_augment=auto_augment, dtype=dtype,
                              layout="HWC" if channels_last else "CHW", random_shuffle=False)
    finally:
        os.unlink(path)  # the reader has parsed the list when the pipeline is built
    return DaliLoader(pipe, batch_size=batch_size, train=True, channels_last=channels_last,
                      files=EpochFiles(root, samples, order), what="training image")


class EpochFiles:
    """The paths of an epoch's samples in reading order, made only when sliced (a failing
    batch needs a few; listing a million paths every epoch would cost seconds)."""

    def __init__(self, root, samples: Sequence[Tuple[str, int]], order: np.ndarray):
        self.root, self.samples, self.order = Path(root), samples, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: slice):
        return [str(self.root / self.samples[i][0]) for i in self.order[index]]
