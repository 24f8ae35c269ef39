"""Folder trees of the safety benchmarks, validated up front with clear messages.

Trees (spec/evaluation.md):
  class tree (ImageNet val, ImageNet-R):  <root>/<wnid>/<image>
  ImageNet-C / C-bar:                      <root>/<corruption>/<severity>/<wnid>/<image>
  image set (OOD):                         a folder (images at any depth) or a text file list
                                           (one path per line, relative to the list's folder)
Images are found by the package's one discovery rule (`data.images`: any depth below the class
folder, the same extensions, hidden files skipped), so evaluation sees exactly the images that
training and its validation see. Severity folders are 1..5; C-bar folders may instead carry their
float parameter (e.g. `2.35`), which are sorted numerically and mapped to 1..5. Every listing is
sorted, so runs are reproducible and shardable. Inside `listed_once()` (eval/run_all.py, which
validates every set before inference and then evaluates it) each folder is listed only once.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dali_pixmix.data.images import class_images, scan_images, subfolders
from dali_pixmix.metrics.corruption import EXTRA_CORRUPTIONS, TEST_CORRUPTIONS

CBAR_CORRUPTIONS = (
    "blue_noise_sample", "brownish_noise", "caustic_refraction", "checkerboard_cutout",
    "cocentric_sine_waves", "inverse_sparkles", "perlin_noise", "plasma_noise",
    "single_frequency_greyscale", "sparkles")


_LISTED: Optional[dict] = None  # listings made inside `listed_once`, by call


@contextmanager
def listed_once():
    """Within the block, a listing function called again with the same arguments returns its
    first result instead of walking the folders again (ImageNet-C holds 3.75 M files)."""
    global _LISTED
    outer = _LISTED
    _LISTED = {} if outer is None else outer
    try:
        yield
    finally:
        _LISTED = outer


def _once(listing):
    """`listing` remembered inside `listed_once` (hashable arguments only)."""
    @functools.wraps(listing)
    def remembered(*args, **kwargs):
        try:
            key = (listing.__name__, args, tuple(sorted(kwargs.items())))
            hash(key)
        except TypeError:  # e.g. `only` given as a list
            key = None
        if _LISTED is None or key is None:
            return listing(*args, **kwargs)
        if key not in _LISTED:
            _LISTED[key] = listing(*args, **kwargs)
        return _LISTED[key]
    return remembered


@dataclass(frozen=True)
class LabelledSet:
    """Images with the wnid of the class folder each came from (sorted by path)."""
    name: str
    files: Tuple[str, ...]
    wnids: Tuple[str, ...]

    @property
    def classes(self) -> Tuple[str, ...]:
        return tuple(sorted(set(self.wnids)))

    def labels(self, model_classes: Sequence[str]) -> np.ndarray:
        """Labels as indices into `model_classes` (folder order is not the model's order)."""
        position = {w: i for i, w in enumerate(model_classes)}
        unknown = sorted(set(self.wnids) - set(position))
        if unknown:
            raise ValueError(f"{self.name}: {len(unknown)} class folders are unknown to the model "
                             f"(e.g. {unknown[:3]}); use a checkpoint trained on these classes")
        return np.array([position[w] for w in self.wnids], dtype=np.int64)


@dataclass(frozen=True)
class CorruptionCell:
    """One (corruption, severity) folder of ImageNet-C or C-bar."""
    corruption: str
    severity: int          # 1..5
    folder: str            # the folder's own name, e.g. "3" or "2.35"
    images: LabelledSet

    @property
    def key(self) -> str:
        return f"{self.corruption}/{self.severity}"


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} (pass the folder that holds it)")
    return path


@_once
def class_tree(root: str | Path, name: Optional[str] = None) -> LabelledSet:
    """<root>/<wnid>/<images at any depth>: every class folder must hold at least one image."""
    root = _require_dir(Path(root), "class-folder dataset")
    classes, files, labels = class_images(root)
    return LabelledSet(name or str(root), tuple(str(f) for f in files),
                       tuple(classes[k] for k in labels))


def severity_map(folders: Sequence[str], where: str) -> Dict[str, int]:
    """Severity folder names -> 1..5: integers 1..5 as is, else 5 floats sorted numerically."""
    if sorted(folders) == ["1", "2", "3", "4", "5"]:
        return {f: int(f) for f in folders}
    try:
        values = {f: float(f) for f in folders}
    except ValueError:
        values = None
    if values is None or len(folders) != 5 or len(set(values.values())) != 5:
        raise ValueError(f"{where}: expected 5 severity folders named 1..5 (or 5 numeric "
                         f"parameters), found {sorted(folders)}")
    ordered = sorted(folders, key=values.get)
    return {f: i + 1 for i, f in enumerate(ordered)}


def _check_equal_cells(cells: List[CorruptionCell], root: Path) -> None:
    counts = {c.key: len(c.images.files) for c in cells}
    if len(set(counts.values())) > 1:
        common = max(set(counts.values()), key=list(counts.values()).count)
        odd = {k: v for k, v in counts.items() if v != common}
        raise ValueError(f"{root}: cells hold unequal image counts (most hold {common}; "
                         f"{dict(list(odd.items())[:4])}); a corruption looks partially "
                         "downloaded or extracted")
    classes = {c.images.classes for c in cells}
    if len(classes) > 1:
        raise ValueError(f"{root}: cells hold different class folders; re-extract the dataset")


@_once
def corruption_cells(root: str | Path, known: Sequence[str], dataset: str,
                     only: Optional[Sequence[str]] = None,
                     numeric_severities: bool = False) -> List[CorruptionCell]:
    """Validated cells of <root>/<corruption>/<severity>/<wnid>/<image>, sorted by key.

    `only` restricts to some corruptions (each must exist); unknown corruption folders are an
    error, so nothing is silently averaged in. `numeric_severities` accepts float folder names.
    """
    root = _require_dir(Path(root), f"{dataset} root")
    found = [p.name for p in subfolders(root)]
    unknown = [c for c in found if c not in known]
    if unknown:
        raise ValueError(f"{root}: unknown {dataset} corruption folders {unknown}; expected "
                         f"names from {list(known)}")
    wanted = list(only) if only else found
    missing = [c for c in wanted if c not in found]
    if missing or not wanted:
        raise ValueError(f"{root}: corruption folders missing: {missing or list(known)}")
    cells = []
    for corruption in sorted(wanted, key=list(known).index):
        folder = root / corruption
        names = [p.name for p in subfolders(folder)]
        if numeric_severities:
            mapping = severity_map(names, str(folder))
        elif sorted(names) == ["1", "2", "3", "4", "5"]:
            mapping = {n: int(n) for n in names}
        else:
            raise ValueError(f"{folder}: expected severity folders 1..5, found {sorted(names)}")
        for name, severity in sorted(mapping.items(), key=lambda kv: kv[1]):
            images = class_tree(folder / name, name=f"{corruption}/{name}")
            cells.append(CorruptionCell(corruption, severity, name, images))
    _check_equal_cells(cells, root)
    return cells


def imagenet_c_cells(root: str | Path, only: Optional[Sequence[str]] = None
                     ) -> List[CorruptionCell]:
    """ImageNet-C cells (the 15 test corruptions and the 4 extras, when present)."""
    return corruption_cells(root, TEST_CORRUPTIONS + EXTRA_CORRUPTIONS, "ImageNet-C", only)


def imagenet_cbar_cells(root: str | Path, only: Optional[Sequence[str]] = None
                        ) -> List[CorruptionCell]:
    """ImageNet-C-bar cells; severity folders 1..5 or float parameters mapped to 1..5."""
    return corruption_cells(root, CBAR_CORRUPTIONS, "ImageNet-C-bar", only,
                            numeric_severities=True)


@_once
def image_set(path: str | Path) -> Tuple[str, ...]:
    """An unlabelled image set: a folder (images at any depth) or a text file list."""
    path = Path(path)
    if path.is_dir():
        return tuple(str(p) for p in scan_images(path))
    if not path.is_file():
        raise FileNotFoundError(f"image set not found: {path} (pass a folder or a text file list)")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    files = [str((path.parent / ln).resolve()) for ln in lines if ln and not ln.startswith("#")]
    absent = [f for f in files if not Path(f).is_file()]
    if not files or absent:
        raise ValueError(f"{path}: file list is empty or names missing files (e.g. {absent[:2]}); "
                         "paths are relative to the list's folder")
    return tuple(files)
