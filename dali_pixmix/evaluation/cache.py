"""On-disk prediction caches of the evaluation: one `.npz` of plain arrays per cell.

Each file holds named numpy arrays plus a `fingerprint` string (a hash of everything the
predictions depend on: checkpoint, preprocessing, file list, ...). Files are written to a
temporary name and renamed, so a crash never leaves half a file; they are read with
`allow_pickle=False`. A file that cannot be used - made under another fingerprint, truncated,
corrupt, foreign, or written by another version without some field - means "recompute": `load`
logs a warning naming the file and returns None; it never stops an evaluation.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)


def fingerprint(*parts) -> str:
    """A stable hash of `parts` (their reprs)."""
    digest = hashlib.sha1()
    for part in parts:
        digest.update(repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def array_identity(array: np.ndarray) -> tuple:
    """What identifies an array's contents in a fingerprint, without reading a memory map: a
    view of a memory-mapped file is (path, size, mtime, first byte in the file, shape, strides,
    dtype), so two cells of one file differ and a rewritten file is new; any other array is its
    shape, dtype and the sha1 of its bytes."""
    root = array
    while isinstance(root, np.memmap) and isinstance(root.base, np.memmap):
        root = root.base
    if isinstance(array, np.memmap) and getattr(root, "filename", None):
        stat = os.stat(root.filename)
        start = root.offset + (array.__array_interface__["data"][0] -
                               root.__array_interface__["data"][0])
        return ("memmap", root.filename, stat.st_size, stat.st_mtime_ns, start, array.shape,
                array.strides, array.dtype.str)
    digest = hashlib.sha1(np.ascontiguousarray(array).data).hexdigest()
    return ("array", array.shape, array.dtype.str, digest)


def safe_name(text: str) -> str:
    """A file-system-safe cell name (corruption/severity -> corruption_severity)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "cell"


def cache_file(cache_dir: str | Path, cell: str) -> Path:
    """`<cache_dir>/<safe cell name>.npz`."""
    return Path(cache_dir) / f"{safe_name(cell)}.npz"


def save(path: str | Path, key: str, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write `arrays` and the fingerprint `key` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, fingerprint=np.array(key), **arrays)
    os.replace(tmp, path)
    return path


def load(path: str | Path, key: str, fields: Sequence[str]) -> Optional[Dict[str, np.ndarray]]:
    """The arrays `fields` of a cache made under fingerprint `key`, else None (recompute)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["fingerprint"]) != key:
                log.warning("cache %s was made by another checkpoint or with other settings: "
                            "recomputing", path)
                return None
            return {name: data[name] for name in fields}
    except Exception as err:  # noqa: BLE001 - any unreadable cache is recomputed, never fatal
        log.warning("cannot read cache %s (%s: %s): recomputing", path, type(err).__name__, err)
        return None
