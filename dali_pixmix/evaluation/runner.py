"""Inference over one evaluation cell, sharded across ranks, with an on-disk prediction cache.

The ONE evaluation path: the eval/*.py scripts (a checkpoint file, `Evaluator.from_checkpoint`)
and validation during training (the model being trained, `Evaluator(model, classes, ...)`) both
predict through `Evaluator.infer`, under the same precision policy (`precision.eval_amp_dtype`),
so they produce the same numbers for the same weights and images.

A *cell* is one set of labelled images evaluated together (ImageNet val, one ImageNet-C
(corruption, severity) folder, ImageNet-R, one OOD set): files read by DALI (`predict`), or
uint8 arrays or memory maps fed as they are (`predict_arrays`: CIFAR and its C/C-bar/P sets;
`predict_generated`: pictures made in memory). Its `Predictions` hold, in file order:
  labels      int64 [N]     label in the model's class space (or in the mask's, when masked)
  top5        int32 [N, 5]  top-5 predicted classes in the same space
  confidence  float32 [N]   max softmax probability
  msp, maxlogit, energy     float32 [N] anomaly scores (higher = more anomalous)
  nll         float32 [N]   cross-entropy of the label (the validation loss)
Caches (`evaluation.cache`) live in `<out>/cache/<task>/<cell>.npz` with a fingerprint of the
checkpoint, preprocessing, mask and file list; a rerun skips finished cells and metrics can be
recomputed from them. Batch sizes are GLOBAL (summed over ranks), like the training config's.
Before DALI reads a file list, every header is checked once (`data.checks.screen_images`): a file
that cannot be decoded stops the evaluation with an `UnreadableImageError` naming it, never a
crash of DALI.
"""
from __future__ import annotations

from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dali_pixmix.config import per_rank_batch
from dali_pixmix.data.normalise import IMAGENET_MEAN, IMAGENET_STD
from dali_pixmix.distributed import (
    DistInfo,
    all_gather_objects,
    barrier,
    broadcast_object,
    init_distributed,
)
from dali_pixmix.evaluation import cache
from dali_pixmix.precision import autocast, eval_amp_dtype

FIELDS = ("labels", "top5", "confidence", "msp", "maxlogit", "energy", "nll")
TABLE_COLUMNS = 10  # batch_tensors: 5 top-5 indices and 5 per-image values


@dataclass
class Predictions:
    labels: np.ndarray
    top5: np.ndarray
    confidence: np.ndarray
    msp: np.ndarray
    maxlogit: np.ndarray
    energy: np.ndarray
    nll: np.ndarray

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


def batch_tensors(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B, 10] float32 on the logits' device: top-5 indices, confidence, msp, maxlogit, energy,
    nll.

    Computed where the logits live so a GPU run copies one small tensor at the end, not one
    per batch. Fewer than 5 classes: missing top-5 slots are -1 (never a label).
    """
    logits = logits.float()
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices.float()
    if k < 5:
        top = torch.cat([top, top.new_full((top.shape[0], 5 - k), -1.0)], dim=1)
    confidence = torch.softmax(logits, dim=1).amax(dim=1)
    nll = F.cross_entropy(logits, labels.to(logits.device), reduction="none")
    scores = [confidence, -confidence, -logits.amax(dim=1), -torch.logsumexp(logits, dim=1), nll]
    return torch.cat([top, torch.stack(scores, dim=1)], dim=1)


class InFlight:
    """Batches kept referenced until the device work queued after them has completed.

    DALI 2.4 hands batches to torch as zero-copy DLPack views whose deleter returns the buffer to
    DALI's pool without waiting for torch's stream: a batch released while its forward pass is
    still queued could be overwritten by the next one DALI produces. `hold` records an event
    after the batch's work and keeps the batch; the oldest of more than `depth` held batches is
    released once its event has completed (the GPU then still has `depth` batches queued). On
    the CPU there are no events: work is done when the call returns.
    """

    def __init__(self, device: torch.device, depth: int = 2):
        self.cuda, self.depth = device.type == "cuda", depth
        self._held = deque()  # (event or None, tensors), oldest first

    def hold(self, *tensors: torch.Tensor) -> None:
        event = None
        if self.cuda:
            event = torch.cuda.Event()
            event.record()
        self._held.append((event, tensors))
        while len(self._held) > self.depth:
            event, _ = self._held.popleft()
            if event is not None:
                event.synchronize()


def to_predictions(table: torch.Tensor, labels: torch.Tensor) -> Predictions:
    """Predictions from stacked `batch_tensors` rows and their labels."""
    table = table.cpu().numpy()
    return Predictions(labels=labels.cpu().numpy().astype(np.int64),
                       top5=table[:, :5].astype(np.int32),
                       confidence=table[:, 5].astype(np.float32),
                       msp=table[:, 6].astype(np.float32),
                       maxlogit=table[:, 7].astype(np.float32),
                       energy=table[:, 8].astype(np.float32),
                       nll=table[:, 9].astype(np.float32))


def batch_predictions(logits: torch.Tensor, labels: torch.Tensor) -> Predictions:
    """Predictions of one batch from logits [B, K] and labels [B]."""
    return to_predictions(batch_tensors(logits, labels), labels)


def load_predictions(path: Path, key: str) -> Optional[Predictions]:
    """Cached predictions when the file is readable and made under `key`, else None."""
    arrays = cache.load(path, key, FIELDS)
    return None if arrays is None else Predictions(**arrays)


def save_predictions(path: Path, preds: Predictions, key: str) -> None:
    cache.save(path, key, {f: getattr(preds, f) for f in FIELDS})


def checked_normalisation(normalisation) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """(mean, std): 3 floats each on [0, 1] pixels, the stds positive."""
    try:
        mean, std = (tuple(float(v) for v in part) for part in normalisation)
    except (TypeError, ValueError):
        mean = std = ()
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"normalisation must be (3 channel means, 3 positive stds) on [0, 1] "
                         f"pixels, got {normalisation!r}")
    return mean, std


def recorded_size(ckpt: dict, resize: Optional[int] = None,
                  crop: Optional[int] = None) -> Tuple[Dict[str, int], str]:
    """({"resize", "crop"}, where the ones not given came from) to evaluate `ckpt` with: given
    values win, else the checkpoint's data.val_resize / data.val_crop (what its own validation
    used), else 256 / 224 (the ImageNet convention, e.g. for a torchvision state dict)."""
    data = (ckpt.get("config") or {}).get("data") or {}
    sizes, sources = {}, []
    for name, given, key, default in (("resize", resize, "val_resize", 256),
                                      ("crop", crop, "val_crop", 224)):
        sizes[name] = given or data.get(key) or default
        if not given:
            sources.append(f"{name} {sizes[name]} (" + (f"the checkpoint's data.{key}"
                                                        if data.get(key) else "the default") + ")")
    return sizes, ", ".join(sources)


def _checked_arrays(images: np.ndarray, labels, desc: str) -> np.ndarray:
    """int64 `labels` [N] (a copy: torch needs it writable) for uint8 pictures `images`
    [N, H, W, 3]; a ValueError naming `desc` otherwise."""
    labels = np.array(labels, dtype=np.int64).reshape(-1)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"{desc}: expected uint8 [N, H, W, 3] pictures, got "
                         f"{images.dtype} {list(images.shape)}")
    if len(images) != len(labels):
        raise ValueError(f"{desc}: {len(images)} pictures but {len(labels)} labels")
    return labels


class Evaluator:
    """A classifier, its class list and the preprocessing settings shared by every task.

    `model` is used as given (training passes the module it trains; its train/eval mode is
    restored after each pass). `batch_size` is GLOBAL and must divide by the world size. `out`
    and `model_key` (what identifies the weights: `from_checkpoint` uses their content) enable
    the prediction cache of `predict`; `infer` never caches. `check_headers=False` skips the
    header check of each new file list (a file DALI cannot parse may then crash it).
    `keep_loaders=True` keeps each file list's DALI loader for the next `infer` of the same
    list (training validates the same images every epoch: one pipeline per run); by default
    every call builds one, as an evaluation of many cells should not hold them all.
    `normalisation` = (mean, std) per channel on [0, 1] pixels, applied to the arrays of
    `predict_arrays` / `predict_generated` (CIFAR: `data.cifar.CIFAR_MEAN, CIFAR_STD`); the DALI
    path of `predict` / `infer` normalises with ImageNet's, so it refuses any other.
    """

    def __init__(self, model: torch.nn.Module, classes: Sequence[str], *,
                 out: Optional[str | Path] = None, model_key=None, batch_size: int = 256,
                 resize: int = 256, crop: int = 224, num_threads: int = 2,
                 dist: Optional[DistInfo] = None, device: str = "auto", amp: bool = True,
                 progress: bool = True, check_headers: bool = True,
                 keep_loaders: bool = False,
                 normalisation: Tuple[Sequence[float], Sequence[float]] = (IMAGENET_MEAN,
                                                                           IMAGENET_STD)):
        self.dist = dist or init_distributed(device)
        self.gpu = self.dist.device.type == "cuda"
        self.model, self.classes, self.model_key = model, list(classes), model_key
        self.out = None if out is None else Path(out)
        self.batch_size = batch_size
        self.rank_batch_size = per_rank_batch(batch_size, self.dist.world_size, "--batch-size")
        self.resize, self.crop, self.num_threads = resize, crop, num_threads
        self.amp_dtype = eval_amp_dtype(self.dist.device, amp)
        self.progress = progress and self.dist.is_main
        self.check_headers = check_headers
        self._screened = set()  # fingerprints of the file lists whose headers were checked
        self.keep_loaders = keep_loaders
        self._loaders = {}  # (file list fingerprint, no_resize) -> loader, with keep_loaders
        self.normalisation = checked_normalisation(normalisation)
        # on the device once: a host-to-device copy per batch would block the host every time
        self._mean, self._std = (torch.tensor(v, dtype=torch.float32, device=self.dist.device)
                                 .view(1, 3, 1, 1) for v in self.normalisation)
        self.checkpoint, self.weights = "", ""  # set by `from_checkpoint` (the rows' model)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, out: str | Path, arch: Optional[str] = None,
                        device: str = "auto", dist: Optional[DistInfo] = None,
                        resizes: bool = True, ckpt: Optional[dict] = None,
                        **settings) -> "Evaluator":
        """An evaluator of the weights in `checkpoint` (ours or a torchvision state dict); a
        `resize`/`crop` left out (or None) is the checkpoint's (`recorded_size`), said in one
        line unless the caller feeds its pictures as they are (`resizes=False`). `ckpt`: the
        file as `read_checkpoint` returned it, when the caller has read it already."""
        from dali_pixmix.checkpoint import read_checkpoint
        from dali_pixmix.models import checkpoint_model

        dist = dist or init_distributed(device)
        ckpt = read_checkpoint(checkpoint) if ckpt is None else ckpt
        # the weights' identity is their content, not the file's time: a rewritten final.pt
        # with the same weights keeps every cache (and a copy elsewhere finds them)
        model, classes, arch, weights = checkpoint_model(ckpt, checkpoint, arch, dist.device)
        sizes, chosen = recorded_size(ckpt, settings.get("resize"), settings.get("crop"))
        settings.update(sizes)
        if dist.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        ev = cls(model, classes, out=out, model_key=(weights, arch),
                 dist=dist, **settings)
        ev.checkpoint, ev.weights = str(checkpoint), weights[:16]
        if chosen and resizes:  # a wrong size costs accuracy silently: say so
            ev.log(f"evaluating with {chosen}")
        return ev

    def model_fields(self) -> dict:
        """{"checkpoint", "weights"} of the evaluated checkpoint, for its result rows ({} for
        a model given as such, e.g. training's validation)."""
        return {"checkpoint": self.checkpoint, "weights": self.weights} if self.weights else {}

    def log(self, message: str) -> None:
        if self.dist.is_main:
            tqdm.write(message)

    def progress_over(self, items, desc: str):
        """tqdm over cells on rank 0, the plain sequence elsewhere (and for no cells)."""
        items = list(items)
        return tqdm(items, desc=desc, unit="cell", disable=not (self.progress and items))

    def cache_path(self, task: str, cell: str) -> Path:
        if self.out is None or self.model_key is None:
            raise ValueError("this evaluator has no output folder or model key: no cache")
        return cache.cache_file(self.out / "cache" / cache.safe_name(task), cell)

    def predict(self, files: Sequence[str], labels: np.ndarray, *, task: str, cell: str,
                no_resize: bool = False, mask: Optional[torch.Tensor] = None) -> Predictions:
        """Predictions for `files` in file order, from the cache when it is up to date.

        With a `mask` (model class indices kept, e.g. ImageNet-R's 200), logits are restricted
        to those columns and `labels` must be positions in the mask.
        """
        path = self.cache_path(task, cell)
        mask_list = None if mask is None else mask.tolist()
        key = cache.fingerprint(self.model_key, self.resize, self.crop, no_resize, mask_list,
                                list(files), np.asarray(labels).tolist())
        return self._cached(path, key, lambda: self.infer(files, labels, no_resize=no_resize,
                                                          mask=mask, desc=cell))

    def _cached(self, path: Path, key: str, compute: Callable[[], Predictions]) -> Predictions:
        """Rank 0 reads the cache and tells the others; on a miss every rank computes."""
        cached = broadcast_object(load_predictions(path, key) if self.dist.is_main else None)
        if cached is not None:
            return cached
        preds = compute()
        if self.dist.is_main:
            save_predictions(path, preds, key)
        barrier()
        return preds

    def screen(self, files: Sequence[str], what: str = "image") -> None:
        """Check the headers of `files` once (all ranks take part); raises
        `UnreadableImageError` naming the files that cannot be decoded."""
        from dali_pixmix.data.checks import screen_images

        files = [str(f) for f in files]
        key = cache.fingerprint(files)
        if self.check_headers and key not in self._screened:
            screen_images(files, what, dist=self.dist, progress=self.progress)
            self._screened.add(key)

    def infer(self, files, labels, *, no_resize=False, mask=None, desc="eval",
              what: str = "image") -> Predictions:
        """Predictions for `files` in file order without the cache (all ranks take part);
        `what` names the images in errors (e.g. "validation image")."""
        labels = np.asarray(labels, dtype=np.int64)
        files = [str(f) for f in files]
        if self.normalisation != (IMAGENET_MEAN, IMAGENET_STD):
            raise ValueError(f"the DALI evaluation graph normalises with ImageNet's mean/std, "
                             f"but this evaluator uses {self.normalisation}: read the pictures "
                             "into arrays and call predict_arrays")
        self.screen(files, what)
        key, loader = None, None
        if self.keep_loaders:
            key = (cache.fingerprint(files, labels.tolist(), what), no_resize)
            loader = self._loaders.pop(key, None)
        if loader is None:
            loader = self.loader(files, labels, no_resize=no_resize, what=what)
        mask = None if mask is None else mask.to(self.dist.device)
        with self.eval_mode():
            local = self._run_batches(loader, mask, desc)
        if self.keep_loaders:  # a whole pass was read: the next one starts at the beginning
            self._loaders[key] = loader
        merged = Predictions.concat(all_gather_objects(local))
        return self._check_exact(merged, labels, desc)

    def loader(self, files: Sequence[str], labels, *, no_resize: bool = False,
               what: str = "image"):
        """This rank's evaluation loader over `files` with the evaluator's preprocessing, dtype
        and memory format (what `infer` reads; headers are not checked here)."""
        from dali_pixmix.pipelines.loaders import make_eval_loader

        return make_eval_loader(files=list(files), labels=np.asarray(labels).tolist(),
                                what=what, batch_size=self.rank_batch_size, dist=self.dist,
                                resize=self.resize, crop=self.crop, no_resize=no_resize,
                                num_threads=self.num_threads,
                                dtype="float16" if self.amp_dtype == torch.float16
                                else "float32", channels_last=self.gpu)

    def release_loaders(self) -> None:
        """Drop the kept loaders (and their DALI pipelines' buffers)."""
        self._loaders.clear()

    @contextmanager
    def eval_mode(self):
        """The model in eval mode for one pass, its previous mode restored afterwards."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def _forward(self, images: torch.Tensor, labels: torch.Tensor, mask) -> torch.Tensor:
        with autocast(self.dist.device, self.amp_dtype):
            logits = self.model(images)
        return batch_tensors(logits if mask is None else logits[:, mask], labels)

    @torch.inference_mode()
    def _run_batches(self, loader, mask, desc) -> Predictions:
        tables, labels_seen = [], []
        in_flight = InFlight(self.dist.device)  # DALI's batches outlive their forward pass
        for images, labels in tqdm(loader, desc=desc, leave=False, disable=not self.progress,
                                   unit="batch"):
            tables.append(self._forward(images, labels, mask))
            labels_seen.append(labels)
            in_flight.hold(images, labels)
        if not tables:  # a rank with an empty shard
            return to_predictions(torch.zeros(0, TABLE_COLUMNS),
                                  torch.zeros(0, dtype=torch.long))
        # (the copy to the host waits for every queued batch before `in_flight` lets go)
        return to_predictions(torch.cat(tables), torch.cat(labels_seen))

    def predict_generated(self, make_images: Callable[[np.ndarray], np.ndarray], count: int, *,
                          task: str, cell: str, key) -> Predictions:
        """Predictions for `count` generated images, fed as they are (no resize or crop) with
        the evaluator's normalisation.

        `make_images(indices)` returns uint8 [B, H, W, 3]; each rank generates its contiguous
        slice of indices; labels are 0. `key` identifies the generator in the cache fingerprint.
        """
        fp = cache.fingerprint(self.model_key, "generated", key, count, self.normalisation)
        labels = np.zeros(count, dtype=np.int64)
        return self._cached(self.cache_path(task, cell), fp,
                            lambda: self._infer_indexed(make_images, labels, cell))

    def predict_arrays(self, images: np.ndarray, labels, *, task: str, cell: str,
                       desc: Optional[str] = None) -> Predictions:
        """Predictions for uint8 pictures `images` [N, H, W, 3] (an array or a memory map, read
        a batch at a time) with int `labels` [N], fed as they are (no resize or crop) with the
        evaluator's normalisation; each rank predicts its contiguous share. Cached like every
        cell; the fingerprint holds the arrays' identity (`cache.array_identity`: a memory
        map's file and position, else the bytes)."""
        labels = _checked_arrays(images, labels, desc or cell)
        fp = cache.fingerprint(self.model_key, "arrays", self.normalisation,
                               cache.array_identity(images), cache.array_identity(labels))
        return self._cached(self.cache_path(task, cell), fp,
                            lambda: self.infer_arrays(images, labels, desc=desc or cell))

    def infer_arrays(self, images: np.ndarray, labels, *, desc: str = "eval") -> Predictions:
        """`predict_arrays` without the cache (all ranks take part), as `infer` is for files:
        training's validation of the weights it is training (CIFAR)."""
        labels = _checked_arrays(images, labels, desc)
        return self._infer_indexed(lambda idx: images[idx[0]:idx[-1] + 1], labels, desc)

    def predict_with(self, compute: Callable[[], Predictions], labels, *, task: str, cell: str,
                     key) -> Predictions:
        """The predictions `compute()` makes for a pass the runner does not make itself (e.g.
        on PGD adversaries; every rank calls it, each computing its share, gathered in order),
        checked against `labels` (every image once, in order) and cached as the cell
        `task`/`cell` under the weights and `key` (what else they depend on)."""
        labels = np.asarray(labels, dtype=np.int64)
        fp = cache.fingerprint(self.model_key, "custom", key)
        return self._cached(self.cache_path(task, cell), fp,
                            lambda: self._check_exact(compute(), labels, cell))

    def _infer_indexed(self, make_images, labels: np.ndarray, desc: str) -> Predictions:
        """Predictions for the pictures `make_images(indices)` of every index of `labels`
        (without the cache; all ranks take part, each on its contiguous slice)."""
        indices = np.arange(*self.rank_range(len(labels)))
        with self.eval_mode():
            local = self._run_indexed(make_images, indices, labels[indices], desc)
        return self._check_exact(Predictions.concat(all_gather_objects(local)), labels, desc)

    def rank_range(self, count: int) -> Tuple[int, int]:
        """[start, stop) of this rank's contiguous share of `count` items (the loaders' rule)."""
        r, w = self.dist.rank, self.dist.world_size
        return count * r // w, count * (r + 1) // w

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] pictures on the device -> float32 [B, 3, H, W] network input with
        the evaluator's normalisation (channels_last on a GPU)."""
        images = (pixels.permute(0, 3, 1, 2).float() / 255 - self._mean) / self._std
        return images.contiguous(memory_format=torch.channels_last) if self.gpu else images

    @torch.inference_mode()
    def _run_indexed(self, make_images, indices: np.ndarray, labels: np.ndarray,
                     desc: str) -> Predictions:
        dev = self.dist.device
        tables = [torch.zeros(0, TABLE_COLUMNS, device=dev)]
        step = self.rank_batch_size
        starts = range(0, len(indices), step)
        for i in tqdm(starts, desc=desc, leave=False, disable=not self.progress, unit="batch"):
            # a copy: a memory map's pages are read here, and torch wants a writable array
            pixels = np.array(make_images(indices[i:i + step]), dtype=np.uint8, order="C")
            images = self.normalise(torch.from_numpy(pixels).to(dev))
            targets = torch.from_numpy(labels[i:i + step]).to(dev)
            tables.append(self._forward(images, targets, None))
        return to_predictions(torch.cat(tables), torch.from_numpy(labels))

    @staticmethod
    def _check_exact(preds: Predictions, labels: np.ndarray, desc: str) -> Predictions:
        """Every image once, in file order: the gathered labels must equal the expected ones."""
        if len(preds) != len(labels):
            raise RuntimeError(f"{desc}: evaluated {len(preds)} images but the cell holds "
                               f"{len(labels)}; the loader did not count each image once")
        if not np.array_equal(preds.labels, labels):
            raise RuntimeError(f"{desc}: gathered labels are out of file order across ranks")
        return preds
