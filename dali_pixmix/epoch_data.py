"""Training data per epoch: class list, a global per-epoch shuffle, and the epoch's DALI loader.

Why per-epoch file lists: DALI's reader reshuffles with a seed of its own, so a pipeline rebuilt
for a resumed run would not continue the uninterrupted run's order. Here epoch `e` reads a file
list permuted by `numpy.random.default_rng([seed, e])` (the same on every rank); each rank takes
its contiguous slice of it (DALI `stick_to_shard`), so shards are disjoint and their union is the
whole set, and the loader for any epoch can be rebuilt exactly. DALI's random ops and the PixMix
stage are seeded from `epoch_seed(seed, epoch)` (+ the rank, inside the pipeline).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .distributed import DistInfo
from . import file_lists
from .loader import DaliLoader
from .pipelines import PixMixStage, train_pipeline


def class_folders(root: str | Path) -> List[str]:
    """Sorted class folder names of an ImageNet-layout tree (the class index order)."""
    return [p.name for p in file_lists.class_folders(root)]


def list_samples(root: str | Path, classes: Sequence[str]) -> List[Tuple[str, int]]:
    """(path relative to root, class index) for every picture, in a fixed sorted order."""
    root = Path(root)
    samples = []
    for label, wnid in enumerate(classes):
        files = file_lists.scan_images(root / wnid)
        samples.extend((p.relative_to(root).as_posix(), label) for p in files)
    return samples


def check_val_classes(val_root: str | Path, train_classes: Sequence[str]) -> None:
    """Validation folders must be exactly the training classes (labels follow folder order)."""
    val_classes = class_folders(val_root)
    if val_classes != list(train_classes):
        missing = sorted(set(train_classes) - set(val_classes))[:3]
        extra = sorted(set(val_classes) - set(train_classes))[:3]
        raise ValueError(f"validation folder {val_root} has {len(val_classes)} classes but "
                         f"training has {len(train_classes)} (missing e.g. {missing}, extra e.g. "
                         f"{extra}); both must hold the same class folders")


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed for one epoch's pipeline (kept below 2**30 so `+ rank` stays a valid int32)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]) % (1 << 30)


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The global permutation of sample indices for `epoch` (identical on every rank)."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def write_file_list(samples: Sequence[Tuple[str, int]], order: np.ndarray) -> str:
    """A temporary DALI file list of `samples` in `order`; the caller deletes it."""
    handle, path = tempfile.mkstemp(prefix="dali_pixmix_epoch_", suffix=".txt")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.writelines(f"{samples[i][0]} {samples[i][1]}\n" for i in order)
    return path


def make_epoch_loader(*, train_root: str | Path, samples: Sequence[Tuple[str, int]], epoch: int,
                      seed: int, batch_size: int, dist: DistInfo, crop: int,
                      pixmix: Optional[PixMixStage], num_threads: int, dtype: str,
                      channels_last: bool) -> DaliLoader:
    """The DALI training loader of `epoch` for this rank (drops the last partial batch)."""
    path = write_file_list(samples, epoch_order(len(samples), seed, epoch))
    try:
        pipe = train_pipeline(file_root=str(train_root), file_list=path, batch_size=batch_size,
                              crop=crop, device_id=dist.dali_device_id, shard_id=dist.rank,
                              num_shards=dist.world_size, seed=epoch_seed(seed, epoch),
                              num_threads=num_threads, pixmix=pixmix, dtype=dtype,
                              layout="HWC" if channels_last else "CHW", random_shuffle=False)
    finally:
        os.unlink(path)  # the reader has parsed the list when the pipeline is built
    return DaliLoader(pipe, batch_size=batch_size, train=True, channels_last=channels_last)
