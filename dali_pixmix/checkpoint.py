"""THE checkpoint format and its one reader; training's atomic writes, rotation and lookup.

A step checkpoint `ckpt_e{epoch:04d}_s{step:09d}.pt` is a dict with
  "model"      state_dict of the unwrapped model (no "module."/"_orig_mod." prefixes; loads into
               torchvision's architecture as is),
  "optimizer", "scheduler", "scaler" (None without fp16),
  "epoch"      the epoch in progress (0-based), "step" the number of optimizer steps done,
  "epoch_step" steps done inside that epoch (a resume starts reading the data there),
  "steps_per_epoch", "world_size" (a resume on another world size is flagged),
  "rng"        torch/numpy/python generator states as tensors and plain values,
  "config"     the resolved config as a plain dict, "classes" (wnids in class-index order),
  "arch"       the torchvision model name,
  "provenance" the git revision and library versions that wrote it (`provenance.provenance`),
  "epoch_meter" the running sums of the epoch's training steps so far (its loss and throughput
               cover the whole epoch after a resume),
  "epoch_end"  at the end of an epoch whose validation and metrics line come after the save:
               {"entry": the metrics line without "val", "validate": bool}, else None,
  "loader"     every rank's training-pipeline state at this step (`training.state.loader_state`):
               {"position": batches read since the start (epoch * steps_per_epoch +
               epoch_step), "world_size", "dali_version", "gpu": bool, "dali": [one uint8
               tensor per rank, in rank order: the DALI pipeline checkpoint, i.e. the state of
               its random ops]}; None or absent in older checkpoints.
`final.pt` holds the same keys without optimizer/scheduler/scaler/rng/loader, plus "val" (the
last validation metrics). A torchvision checkpoint is a bare state_dict (or {"state_dict": ...});
its classes are the sorted 1000 ImageNet wnids. The data order needs no state (it is a function
of (seed, epoch)), nor do the torch stages and the label mixing (seeded per batch); a resume
whose "loader" does not fit (another world size, DALI version or device, a changed recipe, none
saved) reads on from the same step with fresh crop/flip draws. Everything is read with
`torch.load(weights_only=True)` (`read_checkpoint`): no user pickles are executed.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from dali_pixmix.oserrors import error_behind, names_file

_NAME = re.compile(r"^ckpt_e(\d+)_s(\d+)\.pt$")
_TMP_NAME = re.compile(r"^\.(ckpt_e\d+_s\d+\.pt|final\.pt)\.tmp\d+$")  # see atomic_save


def checkpoint_name(epoch: int, step: int) -> str:
    return f"ckpt_e{epoch:04d}_s{step:09d}.pt"


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with names_file(path), open(tmp, "wb") as handle:
            save_to(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_to(obj: Any, handle) -> None:
    """torch.save into an open binary file. torch turns a write that fails (a full disk) or is
    interrupted (a second Ctrl-C) into its own RuntimeError raised while handling the real
    one; that real one is raised instead, so the disk is named and Ctrl-C stays Ctrl-C."""
    try:
        torch.save(obj, handle)
    except RuntimeError as err:
        raise (error_behind(err, (KeyboardInterrupt, OSError)) or err) from None


def remove_stale_temporaries(out_dir: str | Path) -> List[Path]:
    """Delete the `.<checkpoint>.tmp<pid>` files of saves that were killed (kill -9, a node
    failure) in `out_dir`; returns them. Call it when no save can be running: at the start of
    a run (only rank 0 of one run writes checkpoints into its folder)."""
    out_dir = Path(out_dir)
    stale = [p for p in out_dir.iterdir() if _TMP_NAME.match(p.name)] if out_dir.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def capture_rng() -> Dict[str, Any]:
    """torch, CUDA, numpy and python RNG states as tensors / plain types (weights_only safe)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss_next": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    """Inverse of `capture_rng`."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():  # the GPUs this process still sees
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def list_checkpoints(out_dir: str | Path) -> List[Path]:
    """Step checkpoints in `out_dir`, oldest first (ordered by step, then epoch)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for path in out_dir.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append(((int(match.group(2)), int(match.group(1))), path))
    return [path for _, path in sorted(found)]


TRAINING_KEYS = ("model", "epoch", "step", "classes")
RESUME_KEYS = ("optimizer", "scheduler", "rng", "epoch_step")  # only step checkpoints hold them


def read_checkpoint(path: str | Path) -> Dict[str, Any]:
    """Load any checkpoint file safely; a bare state_dict is wrapped as {"model": state_dict}.

    FileNotFoundError when missing; ValueError when unreadable (e.g. truncated) or neither a
    dali-pixmix checkpoint nor a torchvision state_dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (pass the path of a .pt/.pth file)")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is an empty file (0 bytes): delete it or pass "
                         "another file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, foreign or malicious file
        raise ValueError(f"{path} is not a loadable checkpoint: {load_failure(err)}") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return obj
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        # {"arch", "state_dict", "epoch", "best_acc1", "optimizer"}: the reference code's files
        arch = obj.get("arch")
        return {"model": obj["state_dict"], **({"arch": arch} if isinstance(arch, str) else {})}
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"model": obj}
    raise ValueError(f"{path} is neither a dali-pixmix checkpoint nor a torchvision state_dict")


def load_failure(err: BaseException) -> str:
    """Why torch.load could not read a file, in a few words on one line. Safe loading
    (`weights_only`) refuses any object that is not a tensor, number, string or container:
    that is said as such, never with torch's advice to load the file unsafely."""
    if isinstance(err, pickle.UnpicklingError):
        found = re.search(r"unsupported GLOBAL ([\w.]+)", str(err), re.IGNORECASE)
        held = f"an object ({found.group(1)[:80]})" if found else "something"
        return (f"it holds {held} other than tensors, numbers, strings and containers, or is "
                "not a checkpoint at all (objects are never unpickled here); pass a "
                "dali-pixmix or torchvision checkpoint")
    first = (str(err).strip().splitlines() or [""])[0].split(". ")[0][:120]
    reason = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return f"{reason}; it may be truncated: delete it or pass another file"


WEIGHTS_DIGEST = "weights_sha256"  # recorded in final.pt: what identifies its weights


def state_digest(state: Dict[str, torch.Tensor]) -> str:
    """sha256 over the names and raw bytes of a state_dict's tensors, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def checkpoint_identity(ckpt: Dict[str, Any]) -> str:
    """What identifies a read checkpoint's weights, whatever its file's name, time or other
    contents: the digest recorded when it was saved, else `state_digest` of its tensors."""
    recorded = ckpt.get(WEIGHTS_DIGEST)
    return recorded if isinstance(recorded, str) else state_digest(ckpt["model"])


def load_checkpoint(path: str | Path) -> Dict[str, Any]:
    """A checkpoint to resume training from: `read_checkpoint` plus the training and resume
    keys. Weights without optimizer state (final.pt, a torchvision file) are refused with the
    way to train on from them (`model.pretrained`)."""
    ckpt = read_checkpoint(path)
    missing = [k for k in TRAINING_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not a dali-pixmix training checkpoint (missing {missing}); "
                         "pass --resume auto, none or the path of a ckpt_*.pt file")
    if any(k not in ckpt for k in RESUME_KEYS):
        raise ValueError(f"{path} holds final weights without optimizer, scheduler and RNG "
                         "state, so training cannot resume from it; resume from a ckpt_*.pt "
                         f"file, or start a new run from these weights with --resume none --set "
                         f"model.pretrained={path}")
    return ckpt


def find_latest_valid(out_dir: str | Path) -> Optional[Dict[str, Any]]:
    """Newest readable step checkpoint in `out_dir` (unreadable ones are skipped with a warning)."""
    for path in reversed(list_checkpoints(out_dir)):
        try:
            ckpt = load_checkpoint(path)
        except ValueError as err:
            warnings.warn(f"skipping unreadable checkpoint: {err}", RuntimeWarning, stacklevel=2)
            continue
        ckpt["path"] = str(path)
        return ckpt
    return None


def resolve_resume(resume: str, out_dir: str | Path) -> Optional[Dict[str, Any]]:
    """`--resume auto|none|PATH` -> the checkpoint dict to continue from, or None."""
    if resume == "none":
        return None
    if resume == "auto":
        return find_latest_valid(out_dir)
    ckpt = load_checkpoint(resume)
    ckpt["path"] = str(resume)
    return ckpt


def save_step_checkpoint(state: Dict[str, Any], out_dir: str | Path, keep: int) -> Path:
    """Write `state` as the checkpoint of (epoch, step) and delete all but the newest `keep`."""
    path = atomic_save(state, Path(out_dir) / checkpoint_name(state["epoch"], state["step"]))
    for old in list_checkpoints(out_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path
