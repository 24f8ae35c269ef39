"""Image folders and DALI file lists.

A DALI file list is a text file with one ``relative/path label`` line per sample; the label is a
non-negative integer after the LAST whitespace (so paths may contain spaces), and paths are
relative to the list's own folder unless the reader is given ``file_root``. These helpers find
images, write and read such lists, and can decode every file first so that a broken file is
reported by name instead of crashing a training run hours later.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from dali_pixmix.data.images import class_images, find_broken_images, scan_images


def _check_entry(rel: str, label: int, index: int) -> None:
    # Cheap string tests: this runs for every entry of a list.
    if not rel or rel != rel.strip() or "\n" in rel or "\r" in rel:
        raise ValueError(f"file list entry {index}: path {rel!r} is empty or has line breaks or "
                         f"leading/trailing spaces, which the list format cannot hold")
    if os.path.isabs(rel):
        raise ValueError(f"file list entry {index}: path {rel!r} must be relative")
    if type(label) is not int or label < 0:
        raise ValueError(f"file list entry {index}: label {label!r} must be an integer >= 0")


def write_file_list(out_path, entries: Sequence[Tuple[str, int]]) -> Path:
    """Write ``relative/path label`` lines (POSIX separators) to ``out_path``; returns the path.

    The file is written to a temporary name and renamed, so a reader never sees half a list.
    """
    out_path = Path(out_path)
    lines = []
    for index, (rel, label) in enumerate(entries):
        rel = rel.replace(os.sep, "/") if isinstance(rel, str) else Path(rel).as_posix()
        _check_entry(rel, label, index)
        lines.append(f"{rel} {label}\n")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, out_path)
    return out_path


def _parse_line(line: str, where: str) -> Tuple[str, int]:
    parts = line.rsplit(None, 1)
    if len(parts) != 2:
        raise ValueError(f"{where}: expected 'relative/path label', got {line.strip()!r}")
    rel, label_text = parts[0].strip(), parts[1]
    try:
        label = int(label_text)
    except ValueError:
        raise ValueError(f"{where}: label {label_text!r} is not an integer") from None
    if label < 0:
        raise ValueError(f"{where}: label {label} is negative; labels must be >= 0")
    return rel, label


def read_file_list(path, root=None, root_name: Optional[str] = "root=",
                   ) -> Tuple[List[Path], List[int]]:
    """Read a DALI file list; returns (files, labels) with files resolved against ``root``
    (default: the list's folder). Blank lines are skipped; a bad line or a missing file raises
    ValueError / FileNotFoundError naming the list and the line number. ``root_name``: how the
    caller's user sets ``root`` (a flag, a keyword), named in the missing-file message; None
    where they cannot."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file list {path} does not exist; check the path")
    base = Path(root) if root is not None else path.parent
    files, labels = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        rel, label = _parse_line(line, where)
        file = base / rel
        if not file.is_file():
            raise FileNotFoundError(f"{where}: {file} does not exist "
                                    f"({relative_to(base, root_name)})")
        files.append(file)
        labels.append(label)
    if not files:
        raise ValueError(f"file list {path} has no entries")
    return files, labels


def relative_to(base: Path, root_name: Optional[str]) -> str:
    """Where a file list's paths are looked for, and how to change it."""
    if root_name is None:
        return f"paths are relative to {base}, the list's folder; write them relative to it"
    return f"paths are relative to {base}; set {root_name} if they are relative to another folder"


def _labelled_files(folder: Path, labels: str) -> Tuple[List[Path], Optional[List[int]], List[str]]:
    """(files, labels or None for all-zero, class names) for the 'folder' / 'zero' labelling."""
    if labels == "zero":
        return scan_images(folder), None, []
    if labels != "folder":
        raise ValueError(f"labels must be 'folder' or 'zero', got {labels!r}")
    classes, files, targets = class_images(folder)
    return files, targets, classes


def make_file_list(folder, out, root=None, labels: str = "folder", verify: bool = False,
                   progress: bool = True, root_name: str = "root=") -> Dict:
    """List the images of ``folder`` into the DALI file list ``out``; returns a summary dict.

    labels='folder': class k = k-th sub-folder in lexicographic order, with the images at any
    depth inside it (torchvision ImageFolder convention; DALI's own ``file_root`` mode reads only
    the top level of each class folder); labels='zero': every image (any depth) gets label 0,
    e.g. for OOD or mixing sets. Paths are written relative to ``root``
    (default: the folder of ``out``, DALI's convention); ``folder`` must lie inside it. With
    ``verify`` every file is decoded and broken ones are left out and reported by name in
    ``summary['broken']`` (relative paths), never dropped silently. `root_name` is how errors
    name the root setting (a command-line tool passes its flag, e.g. "--root").
    """
    folder, out = Path(folder), Path(out)
    base = Path(root) if root is not None else out.parent
    files, targets, classes = _labelled_files(folder, labels)
    if targets is None:
        targets = [0] * len(files)
    try:
        rels = [os.path.relpath(f, base) for f in files]
    except ValueError:  # different drives on Windows
        raise ValueError(f"{folder} cannot be expressed relative to {base}; pass "
                         f"{root_name.rstrip('=')}") from None
    if any(Path(r).parts[0] == ".." for r in rels):
        default = "" if root is not None else " (the list's folder, the default root)"
        raise ValueError(f"{folder} is not inside {base}{default}; pass {root_name.rstrip('=')} "
                         "a folder that contains it")
    broken = set(find_broken_images(files, progress)) if verify else set()
    entries = [(r, t) for f, r, t in zip(files, rels, targets) if f not in broken]
    if not entries:
        raise ValueError(f"every image under {folder} failed to decode; nothing to list")
    write_file_list(out, entries)
    return {"out": str(out), "root": str(base), "num_files": len(entries),
            "num_classes": len(classes) if labels == "folder" else 1, "classes": classes,
            "labels": labels, "verified": verify,
            "num_broken": len(broken), "broken": sorted(os.path.relpath(b, base) for b in broken)}
