"""THE image discovery of the package: which files under a folder are images, and class folders.

One rule for training, validation, evaluation, the mixing bank and the tools: images are files
with an extension in ``IMAGE_EXTENSIONS`` (case-insensitive) at any depth; hidden files and
folders (names starting with '.', e.g. macOS ``._x.JPEG`` resource forks) are skipped; listings
are sorted by relative POSIX path, so every rank and every rerun sees the same order.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple

from PIL import Image, ImageFile
from tqdm import tqdm

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pnm", ".ppm",
                    ".pgm", ".pbm", ".jp2")


def is_hidden(name: str) -> bool:
    """Dot files and folders are never data: they include macOS ``._x.JPEG`` resource forks,
    JPEG-named junk that fails to decode."""
    return name.startswith(".")


def is_image_name(name: str) -> bool:
    """The one rule for an image file name: not hidden, extension in ``IMAGE_EXTENSIONS``."""
    return not is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def _iter_images(root: Path) -> Iterator[Path]:
    """Yield image paths under root at any depth (follows symlinks, skips hidden entries)."""
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink cycle: this folder was already listed
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not is_hidden(d)]
        for name in filenames:
            if is_image_name(name):
                yield Path(dirpath) / name


def _require_dir(root: Path, what: str) -> None:
    if not root.exists():
        raise FileNotFoundError(f"{what} {root} does not exist; check the path")
    if not root.is_dir():
        raise NotADirectoryError(f"{what} {root} is not a folder; pass the folder that holds "
                                 f"the images")


def _sorted_images(root: Path) -> List[Path]:
    return sorted(_iter_images(root), key=lambda p: p.relative_to(root).as_posix())


def scan_images(root) -> List[Path]:
    """All image files under ``root`` at any depth, extension case-insensitive, sorted by path.

    Hidden files and folders (names starting with '.') are skipped. Raises FileNotFoundError
    when the folder is missing and ValueError when it holds no image.
    """
    root = Path(root)
    _require_dir(root, "image folder")
    files = _sorted_images(root)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}; "
                         f"point to the folder that holds the pictures")
    return files


def subfolders(root) -> List[Path]:
    """The non-hidden sub-folders of ``root``, sorted by name."""
    return sorted((p for p in Path(root).iterdir() if p.is_dir() and not is_hidden(p.name)),
                  key=lambda p: p.name)


def class_folders(root) -> List[Path]:
    """The class sub-folders of ``root`` in lexicographic order (class index = position).

    This is the ImageFolder convention. Raises ValueError when there is no sub-folder, when a
    class folder holds no image (it would shift every later label) or when images lie directly
    in ``root`` (outside any class, they would be silently dropped).
    """
    root = Path(root)
    folders = _class_subfolders(root)
    _check_class_folders(root, [f for f in folders if next(_iter_images(f), None) is None])
    return folders


def _class_subfolders(root: Path) -> List[Path]:
    _require_dir(root, "dataset folder")
    folders = subfolders(root)
    if not folders:
        raise ValueError(f"{root} has no class sub-folders; expected root/<class>/<image> "
                         f"(for a flat folder use labels='zero', --labels zero)")
    return folders


def _check_class_folders(root: Path, empty: Sequence[Path]) -> None:
    """The errors of ``class_folders``: classes without images, images outside classes."""
    if empty:
        raise ValueError(f"{root}: {len(empty)} class folder(s) hold no images (e.g. "
                         f"{root / empty[0].name}); remove them or add images (an empty class "
                         f"would shift the labels of later classes)")
    stray = sorted(p.name for p in root.iterdir() if p.is_file() and is_image_name(p.name))
    if stray:
        raise ValueError(f"{root} has images outside class folders (e.g. {stray[0]}); move them "
                         f"into a class folder (or, for an unlabelled set, use labels='zero')")


def class_images(root) -> Tuple[List[str], List[Path], List[int]]:
    """(class names, image files, class index of each file) of a class-folder tree.

    Classes and errors follow ``class_folders``; each class contributes its images at any
    depth, sorted by path. Each class folder is listed once. This is what training,
    validation and evaluation all read.
    """
    root = Path(root)
    folders = _class_subfolders(root)
    found = [_sorted_images(folder) for folder in folders]
    _check_class_folders(root, [f for f, images in zip(folders, found) if not images])
    files = [image for images in found for image in images]
    labels = [index for index, images in enumerate(found) for _ in images]
    return [folder.name for folder in folders], files, labels


def find_broken_images(files: Sequence[Path], progress: bool = True) -> List[Path]:
    """Decode every file fully with PIL; return those that fail (truncated, corrupt, not images)."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # another module may have relaxed it globally
    broken = []
    for file in tqdm(files, desc="verify", unit="img", disable=not progress):
        try:
            with Image.open(file) as img:
                img.load()
        except Exception:  # noqa: BLE001 - any decoder failure means the file is unusable
            broken.append(file)
    return broken


def class_names(root) -> List[str]:
    """Names of the class folders of ``root`` in class-index order (see ``class_folders``)."""
    return [folder.name for folder in class_folders(root)]


def list_samples(root: str | Path) -> List[Tuple[str, int]]:
    """(path relative to root, class index) for every picture of ``class_images(root)``."""
    return class_samples(root)[1]


def class_samples(root: str | Path) -> Tuple[List[str], List[Tuple[str, int]]]:
    """(class names, ``list_samples(root)``) from one listing of ``root``."""
    root = Path(root)
    classes, files, labels = class_images(root)
    return classes, [(p.relative_to(root).as_posix(), label) for p, label in zip(files, labels)]


def check_val_classes(val_root: str | Path, train_classes: Sequence[str]) -> None:
    """Validation folders must be exactly the training classes (labels follow folder order)."""
    val_classes = class_names(val_root)
    if val_classes != list(train_classes):
        missing = sorted(set(train_classes) - set(val_classes))[:3]
        extra = sorted(set(val_classes) - set(train_classes))[:3]
        raise ValueError(f"validation folder {val_root} has {len(val_classes)} classes but "
                         f"training has {len(train_classes)} (missing e.g. {missing}, extra e.g. "
                         f"{extra}); both must hold the same class folders")
