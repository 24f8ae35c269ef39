"""Inference over one evaluation cell, sharded across ranks, with an on-disk prediction cache.

A *cell* is one set of labelled images evaluated together (ImageNet val, one ImageNet-C
(corruption, severity) folder, ImageNet-R, one OOD set). Its `Predictions` hold, in file order:
  labels      int64 [N]     label in the model's class space (or in the mask's, when masked)
  top5        int32 [N, 5]  top-5 predicted classes in the same space
  confidence  float32 [N]   max softmax probability
  msp, maxlogit, energy     float32 [N] anomaly scores (higher = more anomalous)
Caches live in `<out>/cache/<task>/<cell>.npz` (numpy, read with allow_pickle=False) with a
fingerprint of the checkpoint, preprocessing, mask and file list; a rerun skips finished cells
and metrics can be recomputed from them.
"""
from __future__ import annotations

import hashlib
import re
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from dali_pixmix.distributed import (
    DistInfo,
    all_gather_objects,
    barrier,
    broadcast_object,
    init_distributed,
)
from dali_pixmix.models import load_classifier

FIELDS = ("labels", "top5", "confidence", "msp", "maxlogit", "energy")


@dataclass
class Predictions:
    labels: np.ndarray
    top5: np.ndarray
    confidence: np.ndarray
    msp: np.ndarray
    maxlogit: np.ndarray
    energy: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def correct(self) -> np.ndarray:
        return (self.top5[:, 0] == self.labels).astype(np.float64)

    @property
    def top5_correct(self) -> np.ndarray:
        return np.any(self.top5 == self.labels[:, None], axis=1).astype(np.float64)

    @classmethod
    def concat(cls, parts: Sequence["Predictions"]) -> "Predictions":
        return cls(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in FIELDS})


def batch_tensors(logits: torch.Tensor) -> torch.Tensor:
    """[B, 9] float32 on the logits' device: top-5 indices, confidence, msp, maxlogit, energy.

    Computed where the logits live so a GPU run copies one small tensor at the end, not one
    per batch. Fewer than 5 classes: missing top-5 slots are -1 (never a label).
    """
    logits = logits.float()
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices.float()
    if k < 5:
        top = torch.cat([top, top.new_full((top.shape[0], 5 - k), -1.0)], dim=1)
    confidence = torch.softmax(logits, dim=1).amax(dim=1)
    scores = [confidence, -confidence, -logits.amax(dim=1), -torch.logsumexp(logits, dim=1)]
    return torch.cat([top, torch.stack(scores, dim=1)], dim=1)


def to_predictions(table: torch.Tensor, labels: torch.Tensor) -> Predictions:
    """Predictions from stacked `batch_tensors` rows and their labels."""
    table = table.cpu().numpy()
    return Predictions(labels=labels.cpu().numpy().astype(np.int64),
                       top5=table[:, :5].astype(np.int32),
                       confidence=table[:, 5].astype(np.float32),
                       msp=table[:, 6].astype(np.float32),
                       maxlogit=table[:, 7].astype(np.float32),
                       energy=table[:, 8].astype(np.float32))


def batch_predictions(logits: torch.Tensor, labels: torch.Tensor) -> Predictions:
    """Predictions of one batch from logits [B, K] and labels [B]."""
    return to_predictions(batch_tensors(logits), labels)


def safe_name(text: str) -> str:
    """A file-system-safe cell name (corruption/severity -> corruption_severity)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "cell"


def fingerprint(*parts) -> str:
    digest = hashlib.sha1()
    for part in parts:
        digest.update(repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def save_cache(path: Path, preds: Predictions, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, fingerprint=np.array(key), **{f: getattr(preds, f) for f in FIELDS})
    tmp.replace(path)  # a crash never leaves a half-written cache


def load_cache(path: Path, key: str) -> Optional[Predictions]:
    """Cached predictions when the file exists and its fingerprint matches, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["fingerprint"]) != key:
                return None
            return Predictions(**{f: data[f] for f in FIELDS})
    except (OSError, KeyError, ValueError):
        return None  # unreadable cache: recompute


class Evaluator:
    """A classifier, its class list and the preprocessing settings shared by every task."""

    def __init__(self, checkpoint: str, out: str, arch: Optional[str] = None,
                 batch_size: int = 64, resize: int = 256, crop: int = 224, workers: int = 2,
                 device: str = "auto", dist: Optional[DistInfo] = None, progress: bool = True):
        self.dist = dist or init_distributed(device)
        self.gpu = self.dist.device.type == "cuda"
        self.model, self.classes = load_classifier(checkpoint, arch, self.dist.device)
        if self.gpu:
            self.model = self.model.to(memory_format=torch.channels_last)
        ckpt = Path(checkpoint).resolve()
        stat = ckpt.stat()
        self.model_key = (str(ckpt), stat.st_size, stat.st_mtime_ns, arch)
        self.out, self.batch_size, self.workers = Path(out), batch_size, workers
        self.resize, self.crop = resize, crop
        self.progress = progress and self.dist.is_main

    def log(self, message: str) -> None:
        if self.dist.is_main:
            tqdm.write(message)

    def progress_over(self, items, desc: str):
        """tqdm over cells on rank 0, the plain sequence elsewhere."""
        return tqdm(items, desc=desc, unit="cell", disable=not self.progress)

    def predict(self, files: Sequence[str], labels: np.ndarray, *, task: str, cell: str,
                no_resize: bool = False, mask: Optional[torch.Tensor] = None) -> Predictions:
        """Predictions for `files` in file order, from the cache when it is up to date.

        With a `mask` (model class indices kept, e.g. ImageNet-R's 200), logits are restricted
        to those columns and `labels` must be positions in the mask.
        """
        path = self.out / "cache" / safe_name(task) / f"{safe_name(cell)}.npz"
        mask_list = None if mask is None else mask.tolist()
        key = fingerprint(self.model_key, self.resize, self.crop, no_resize, mask_list,
                          list(files), np.asarray(labels).tolist())
        cached = broadcast_object(load_cache(path, key) if self.dist.is_main else None)
        if cached is not None:
            return cached
        preds = self.infer(files, labels, no_resize=no_resize, mask=mask, desc=cell)
        if self.dist.is_main:
            save_cache(path, preds, key)
        barrier()
        return preds

    def infer(self, files, labels, *, no_resize=False, mask=None, desc="eval") -> Predictions:
        """Predictions for `files` in file order without the cache (all ranks take part)."""
        from dali_pixmix.data.loaders import make_eval_loader

        labels = np.asarray(labels, dtype=np.int64)
        loader = make_eval_loader(files=list(files), labels=labels.tolist(),
                                  batch_size=self.batch_size, dist=self.dist,
                                  resize=self.resize, crop=self.crop, no_resize=no_resize,
                                  num_threads=self.workers,
                                  dtype="float16" if self.gpu else "float32",
                                  channels_last=self.gpu)
        mask = None if mask is None else mask.to(self.dist.device)
        merged = Predictions.concat(all_gather_objects(self._run_batches(loader, mask, desc)))
        return self._check_exact(merged, labels, desc)

    def _forward(self, images: torch.Tensor, mask) -> torch.Tensor:
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.gpu else nullcontext()
        with autocast:
            logits = self.model(images)
        return batch_tensors(logits if mask is None else logits[:, mask])

    @torch.inference_mode()
    def _run_batches(self, loader, mask, desc) -> Predictions:
        tables, labels_seen = [], []
        for images, labels in tqdm(loader, desc=desc, leave=False, disable=not self.progress,
                                   unit="batch"):
            tables.append(self._forward(images, mask))
            labels_seen.append(labels)
        if not tables:  # a rank with an empty shard
            return to_predictions(torch.zeros(0, 9), torch.zeros(0, dtype=torch.long))
        return to_predictions(torch.cat(tables), torch.cat(labels_seen))

    def predict_generated(self, make_images: Callable[[np.ndarray], np.ndarray], count: int, *,
                          task: str, cell: str, key) -> Predictions:
        """Predictions for `count` generated images, fed as they are (no resize or crop).

        `make_images(indices)` returns uint8 [B, H, W, 3]; each rank generates its contiguous
        slice of indices; labels are 0. `key` identifies the generator in the cache fingerprint.
        """
        path = self.out / "cache" / safe_name(task) / f"{safe_name(cell)}.npz"
        fp = fingerprint(self.model_key, "generated", key, count)
        cached = broadcast_object(load_cache(path, fp) if self.dist.is_main else None)
        if cached is not None:
            return cached
        r, w = self.dist.rank, self.dist.world_size
        local = self._run_generated(make_images, np.arange(count * r // w, count * (r + 1) // w),
                                    cell)
        preds = self._check_exact(Predictions.concat(all_gather_objects(local)),
                                  np.zeros(count, dtype=np.int64), cell)
        if self.dist.is_main:
            save_cache(path, preds, fp)
        barrier()
        return preds

    @torch.inference_mode()
    def _run_generated(self, make_images, indices: np.ndarray, desc: str) -> Predictions:
        from dali_pixmix.data.graphs import IMAGENET_MEAN, IMAGENET_STD
        dev = self.dist.device
        mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
        tables = [torch.zeros(0, 9, device=dev)]
        chunks = [indices[i:i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        for chunk in tqdm(chunks, desc=desc, leave=False, disable=not self.progress, unit="batch"):
            pixels = torch.from_numpy(make_images(chunk)).to(dev).permute(0, 3, 1, 2).float()
            images = (pixels / 255 - mean) / std
            if self.gpu:
                images = images.contiguous(memory_format=torch.channels_last)
            tables.append(self._forward(images, None))
        table = torch.cat(tables)
        return to_predictions(table, torch.zeros(table.shape[0], dtype=torch.long))

    @staticmethod
    def _check_exact(preds: Predictions, labels: np.ndarray, desc: str) -> Predictions:
        """Every image once, in file order: the gathered labels must equal the expected ones."""
        if len(preds) != len(labels):
            raise RuntimeError(f"{desc}: evaluated {len(preds)} images but the cell holds "
                               f"{len(labels)}; the loader did not count each image once")
        if not np.array_equal(preds.labels, labels):
            raise RuntimeError(f"{desc}: gathered labels are out of file order across ranks")
        return preds
