"""A run's output folder: whose files it holds, a new run in a used folder, metrics.jsonl, and
the images a run found it cannot decode.

One folder holds one run. A new run (`--resume none`, or a checkpoint from elsewhere) in a folder
that already holds a run is refused unless the earlier run is archived (moved to
`<folder>/archive/<UTC time>/`) or overwritten (deleted): otherwise `--resume auto` (what a
requeued SLURM job runs) could pick up the earlier run's checkpoints, whose step numbers are
higher, and checkpoint rotation could delete the new run's.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from dali_pixmix import oserrors
from dali_pixmix.checkpoint import list_checkpoints
from dali_pixmix.oserrors import names_file

PREVIOUS_RUN = ("refuse", "archive", "overwrite")  # what a new run does with an earlier one
ARCHIVE = "archive"
METRICS = "metrics.jsonl"
BAD_IMAGES = "bad_images.txt"
# Everything a run writes into its folder (the archive of earlier runs excepted).
RUN_NAMES = ("config.yaml", "final.pt", METRICS, BAD_IMAGES, "tensorboard", "eval")
RUN_PATTERNS = ("ckpt_e*_s*.pt", "debug_rank*.jsonl", "config_before_step*.yaml")


def check_writable(out_dir: str | Path) -> None:
    """Create `out_dir` and write a probe file in it; ValueError naming it when that fails."""
    oserrors.check_writable(out_dir, "train.output_dir")


LOCK = ".train.lock"  # held by the run training in the folder (`folder_lock`)


@contextmanager
def folder_lock(out_dir: str | Path):
    """Hold `<out_dir>/.train.lock` for as long as a run trains there; a second run is
    refused (ValueError naming the holder). An flock is released by the OS when its process
    ends, however it ends (kill -9, a node failure), so a lock is never stale."""
    path = Path(out_dir) / LOCK
    with names_file(path):
        handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ValueError(f"train.output_dir {out_dir} is in use by another training run "
                             f"({holder}); wait for it to end or stop it, or set another "
                             "train.output_dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        yield path
    finally:
        handle.close()  # releases the lock


def metrics_lines(out_dir: str | Path) -> List[Dict]:
    """The epoch lines of `<out_dir>/metrics.jsonl` (unparsable lines are skipped)."""
    path = Path(out_dir) / METRICS
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            continue
    return [line for line in lines if isinstance(line, dict) and "epoch" in line]


def describe_run(out_dir: str | Path) -> Optional[str]:
    """What earlier run `out_dir` holds ('3 checkpoints up to step 120, final.pt, ...'), or
    None when it holds none (a config.yaml alone is a run that never saved anything)."""
    out_dir = Path(out_dir)
    parts = []
    checkpoints = list_checkpoints(out_dir)
    if checkpoints:
        parts.append(f"{len(checkpoints)} checkpoint(s) up to {checkpoints[-1].name}")
    if (out_dir / "final.pt").is_file():
        parts.append("final.pt")
    epochs = metrics_lines(out_dir)
    if epochs:
        parts.append(f"metrics of {len(epochs)} epoch(s)")
    return ", ".join(parts) or None


def run_files(out_dir: str | Path) -> List[Path]:
    """The files and folders of the run in `out_dir`."""
    out_dir = Path(out_dir)
    found = [out_dir / name for name in RUN_NAMES if (out_dir / name).exists()]
    for pattern in RUN_PATTERNS:
        found += sorted(out_dir.glob(pattern))
    return found


def clear_previous_run(out_dir: str | Path, how: str) -> Optional[Path]:
    """Move the earlier run's files to `<out_dir>/archive/<UTC time>/` (how='archive', returns
    that folder) or delete them (how='overwrite')."""
    if how not in ("archive", "overwrite"):
        raise ValueError(f"how must be 'archive' or 'overwrite', got {how!r}")
    out_dir = Path(out_dir)
    target = None
    if how == "archive":
        target = out_dir / ARCHIVE / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        while target.exists():
            target = target.with_name(target.name + "_")
        target.mkdir(parents=True)
    for path in run_files(out_dir):
        if target is not None:
            shutil.move(str(path), str(target / path.name))
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return target


def write_epoch_line(out_dir: str | Path, entry: Dict) -> Path:
    """Write the line of epoch `entry['epoch']` into metrics.jsonl, dropping any line of that
    or a later epoch (left by a run that lost those epochs' checkpoints), atomically."""
    path = Path(out_dir) / METRICS
    kept = [line for line in metrics_lines(out_dir) if line["epoch"] < entry["epoch"]]
    text = "".join(json.dumps(line) + "\n" for line in kept + [entry])
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with names_file(path):
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- unreadable images
def recorded_unreadable(out_dir: str | Path) -> List[Path]:
    """Images an earlier attempt of this run could not decode (`bad_images.txt`)."""
    path = Path(out_dir) / BAD_IMAGES
    if not path.is_file():
        return []
    return [Path(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def record_unreadable(out_dir: str | Path, files: Sequence[str | Path]) -> None:
    """Add `files` to `bad_images.txt` (any rank may call it; names are absolute)."""
    path = Path(out_dir) / BAD_IMAGES
    known = {str(p) for p in recorded_unreadable(out_dir)}
    new = [str(Path(f).resolve()) for f in files if str(Path(f).resolve()) not in known]
    if new:
        with names_file(path), open(path, "a", encoding="utf-8") as handle:
            handle.write("".join(f"{name}\n" for name in new))


def forget_unreadable(out_dir: str | Path) -> None:
    """The recorded images decode now: drop the record."""
    (Path(out_dir) / BAD_IMAGES).unlink(missing_ok=True)
