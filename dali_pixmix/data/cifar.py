"""CIFAR-10 and CIFAR-100 as users have them on disk, in both official formats, read to memory.

A data root holds one (or more) of the folders the official archives and torchvision extract:
  cifar-10-batches-py/   data_batch_1..5, test_batch, batches.meta          (python version)
  cifar-10-batches-bin/  data_batch_1..5.bin, test_batch.bin, batches.meta.txt (binary version)
  cifar-100-python/      train, test, meta                                   (python version)
  cifar-100-binary/      train.bin, test.bin, fine_label_names.txt           (binary version)
The root may also be such a folder itself. When both versions of a dataset are present the
python one is read.

Python version: each file is a pickle (written by Python 2) of a dict with `data` (uint8
[N, 3072], a row = the 1024 red, then green, then blue values of a 32x32 picture, row-major) and
`labels` (CIFAR-10) or `fine_labels` (CIFAR-100, whose `coarse_labels` are not used); the meta
file holds `label_names` / `fine_label_names`. It is read with `restricted_pickle` (numpy arrays,
containers and scalars only): never with `pickle.load`. Binary version: records of 1 label byte
(CIFAR-100: coarse byte, fine byte) + 3072 pixel bytes in the same order; class names one per
line in the text meta file.

Every reader returns images as uint8 [N, 32, 32, 3] (HWC, RGB, C-contiguous), labels as int64
[N] and the class names of the meta file (any count: generated sets may have fewer than 10 or
100 classes). Bad input raises `CifarDataError` (a ValueError, so the command-line entry points
print one `error:` line and exit 2) naming the file and what was expected; a root that does not
exist raises FileNotFoundError.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from dali_pixmix.data.restricted_pickle import NUMPY_ARRAY_GLOBALS, load_restricted
from dali_pixmix.oserrors import names_file

__all__ = ["DATASETS", "SPLITS", "FORMATS", "CIFAR_MEAN", "CIFAR_STD", "IMAGE_SHAPE",
           "PIXELS", "CifarDataError", "CifarLayout", "CifarSplit", "LAYOUTS", "layout",
           "find_cifar", "read_cifar", "cifar_class_names", "planes_to_images",
           "images_to_planes", "write_cifar"]

DATASETS = ("cifar10", "cifar100")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
DISPLAY_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}  # also the sets' folder names
SPLITS = ("train", "test")
FORMATS = ("python", "binary")
# The reference's CIFAR normalisation (cifar.py): mean = std = 0.5 per channel, on [0, 1] pixels.
CIFAR_MEAN = (0.5, 0.5, 0.5)
CIFAR_STD = (0.5, 0.5, 0.5)
IMAGE_SHAPE = (32, 32, 3)
PIXELS = 32 * 32 * 3


class CifarDataError(ValueError):
    """A CIFAR, CIFAR-C/C-bar or CIFAR-P file or folder that cannot be used, and why."""


@dataclass(frozen=True)
class CifarLayout:
    """Where one format of one dataset keeps its files, and how its labels are stored."""
    dataset: str                 # cifar10 | cifar100
    format: str                  # python | binary
    folder: str                  # the folder the archive extracts, e.g. cifar-10-batches-py
    files: Dict[str, Tuple[str, ...]]   # split -> file names, in order
    meta: str                    # file with the class names
    label_key: str               # python: the dict key of the labels
    names_key: str               # python: the meta dict key of the class names
    label_bytes: int             # binary: label bytes before each record's pixels (last = label)

    def all_files(self) -> List[str]:
        """Every file of the layout: the train and test batches, then the meta file."""
        return [n for split in SPLITS for n in self.files[split]] + [self.meta]

    def description(self) -> str:
        """'cifar-10-batches-py/ (data_batch_1, ..., test_batch, batches.meta)'."""
        names = self.all_files()
        shown = names if len(names) <= 3 else [names[0], "...", *names[-2:]]
        return f"{self.folder}/ ({', '.join(shown)})"


def _cifar10(fmt: str, suffix: str, folder: str, meta: str) -> CifarLayout:
    train = tuple(f"data_batch_{i}{suffix}" for i in range(1, 6))
    return CifarLayout("cifar10", fmt, folder, {"train": train, "test": (f"test_batch{suffix}",)},
                       meta, "labels", "label_names", 1)


LAYOUTS: Tuple[CifarLayout, ...] = (
    _cifar10("python", "", "cifar-10-batches-py", "batches.meta"),
    _cifar10("binary", ".bin", "cifar-10-batches-bin", "batches.meta.txt"),
    CifarLayout("cifar100", "python", "cifar-100-python", {"train": ("train",), "test": ("test",)},
                "meta", "fine_labels", "fine_label_names", 2),
    CifarLayout("cifar100", "binary", "cifar-100-binary",
                {"train": ("train.bin",), "test": ("test.bin",)}, "fine_label_names.txt",
                "fine_labels", "fine_label_names", 2),
)


@dataclass(frozen=True)
class CifarSplit:
    """One split of a CIFAR dataset in memory."""
    images: np.ndarray           # uint8 [N, 32, 32, 3]
    labels: np.ndarray           # int64 [N]
    classes: List[str]           # class names, index = label
    layout: CifarLayout
    folder: Path                 # the folder read
    split: str                   # train | test

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def layout(dataset: str, fmt: str) -> CifarLayout:
    """The layout of `dataset` (cifar10 | cifar100) in format `fmt` (python | binary)."""
    _check_choice("dataset", dataset, DATASETS)
    _check_choice("format", fmt, FORMATS)
    return next(lay for lay in LAYOUTS if lay.dataset == dataset and lay.format == fmt)


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise CifarDataError(f"unknown CIFAR {what} '{value}': choose from {', '.join(choices)}")


def find_cifar(root: str | Path, dataset: str,
               fmt: Optional[str] = None) -> Tuple[CifarLayout, Path]:
    """(layout, folder) of `dataset` under `root` (or `root` itself): the format `fmt`
    (python | binary), or when None the python version if present, else the binary one."""
    _check_choice("dataset", dataset, DATASETS)
    if fmt is not None:
        _check_choice("format", fmt, FORMATS)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR data root {root} does not exist or is not a folder; "
                                "pass the folder that holds the extracted CIFAR archive")
    candidates = [lay for lay in LAYOUTS if lay.dataset == dataset and fmt in (None, lay.format)]
    for lay in candidates:
        for folder in (root / lay.folder, root):  # the root may be the (renamed) folder itself
            if folder.is_dir() and _has_any_file(folder, lay):
                _require_files(folder, lay)
                return lay, folder
    expected = " or ".join(lay.description() for lay in candidates)
    others = [lay.folder for lay in LAYOUTS if lay.dataset != dataset and
              (root / lay.folder).is_dir()]
    found = f" (it has {', '.join(others)}: another dataset)" if others else ""
    which = f"the {fmt} format" if fmt else "either official format"
    raise CifarDataError(f"{root} holds no {dataset} data in {which}{found}: "
                         f"expected {expected}, as the official archive or torchvision's "
                         "download extracts it")


def _has_any_file(folder: Path, lay: CifarLayout) -> bool:
    return any((folder / n).is_file() for n in lay.all_files())


def _require_files(folder: Path, lay: CifarLayout) -> None:
    missing = [n for n in lay.all_files() if not (folder / n).is_file()]
    if missing:
        raise CifarDataError(f"{folder} is an incomplete {lay.dataset} {lay.format} version: "
                             f"missing {', '.join(missing)} (expected {lay.description()}); "
                             "extract the archive again")


def read_cifar(root: str | Path, dataset: str, split: str,
               fmt: Optional[str] = None) -> CifarSplit:
    """The `split` (train | test) of `dataset` (cifar10 | cifar100) under `root`, in memory;
    `fmt` as in `find_cifar`."""
    _check_choice("split", split, SPLITS)
    lay, folder = find_cifar(root, dataset, fmt)
    classes = _read_class_names(folder / lay.meta, lay)
    parts = [_read_batch(folder / name, lay, len(classes)) for name in lay.files[split]]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return CifarSplit(images, labels, classes, lay, folder, split)


def cifar_class_names(root: str | Path, dataset: str, fmt: Optional[str] = None) -> List[str]:
    """The class names of `dataset` under `root`, from its meta file (index = label)."""
    lay, folder = find_cifar(root, dataset, fmt)
    return _read_class_names(folder / lay.meta, lay)


# --------------------------------------------------------------------------- pixel layout
def planes_to_images(rows: np.ndarray) -> np.ndarray:
    """uint8 [N, 3072] rows (R, G, B planes of 32x32) -> C-contiguous uint8 [N, 32, 32, 3]."""
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def images_to_planes(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 32, 32, 3] -> the files' uint8 [N, 3072] rows (R, G, B planes)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), PIXELS))


# --------------------------------------------------------------------------- reading files
def _read_class_names(path: Path, lay: CifarLayout) -> List[str]:
    if lay.format == "binary":
        names = [line.strip() for line in _read_text(path).splitlines() if line.strip()]
    else:
        meta = _as_str_keys(load_restricted(path, NUMPY_ARRAY_GLOBALS, what="CIFAR meta file"),
                            path)
        names = meta.get(lay.names_key)
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes))
                                                           for n in names):
            raise CifarDataError(f"{path}: no list of class names under '{lay.names_key}'; "
                                 f"expected the {lay.dataset} meta file")
        names = [_text(n) for n in names]
    if len(names) < 2:
        raise CifarDataError(f"{path} lists {len(names)} class name(s); a CIFAR meta file names "
                             "every class (10 or 100)")
    return names


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise CifarDataError(f"{path} is not a text file of class names (one per line)") from None


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _as_str_keys(obj, path: Path) -> dict:
    if not isinstance(obj, dict):
        raise CifarDataError(f"{path} holds a pickled {type(obj).__name__}, not the dict of a "
                             "CIFAR file")
    return {_text(k): v for k, v in obj.items()}


def _read_batch(path: Path, lay: CifarLayout, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    reader = _read_binary_batch if lay.format == "binary" else _read_python_batch
    images, labels = reader(path, lay)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels.max() if labels.max() >= num_classes else labels.min())
        raise CifarDataError(f"{path}: label {bad} is outside the {num_classes} classes of "
                             f"{lay.meta}; the files come from different datasets")
    return images, labels


def _read_python_batch(path: Path, lay: CifarLayout) -> Tuple[np.ndarray, np.ndarray]:
    batch = _as_str_keys(load_restricted(path, NUMPY_ARRAY_GLOBALS, what="CIFAR batch"), path)
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != PIXELS:
        got = (f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray)
               else type(data).__name__)
        raise CifarDataError(f"{path}: 'data' must be uint8 [N, {PIXELS}] (32x32 RGB planes), "
                             f"got {got}")
    labels = batch.get(lay.label_key)
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data) or \
            not all(isinstance(v, (int, np.integer)) for v in labels):
        raise CifarDataError(f"{path}: '{lay.label_key}' must list one integer label per image "
                             f"({len(data)} images)")
    return planes_to_images(data), np.asarray(labels, dtype=np.int64).reshape(-1)


def _read_binary_batch(path: Path, lay: CifarLayout) -> Tuple[np.ndarray, np.ndarray]:
    record = lay.label_bytes + PIXELS
    size = path.stat().st_size
    if size == 0 or size % record:
        what = "1 label byte" if lay.label_bytes == 1 else "a coarse and a fine label byte"
        raise CifarDataError(f"{path}: {size} bytes is not a whole number of {record}-byte "
                             f"records ({what} + {PIXELS} pixels): the file is truncated or "
                             "not a CIFAR binary batch; extract it again")
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, record)
    labels = raw[:, lay.label_bytes - 1].astype(np.int64)  # CIFAR-100: the fine label
    return planes_to_images(raw[:, lay.label_bytes:]), labels


# --------------------------------------------------------------------------- writing files
COARSE_CLASSES = 20  # CIFAR-100's superclasses


def write_cifar(root: str | Path, dataset: str, fmt: str,
                splits: Mapping[str, Tuple[np.ndarray, np.ndarray]],
                classes: Sequence[str]) -> Path:
    """Write `splits` ({"train": (images, labels), "test": (...)}, uint8 [N, 32, 32, 3] and
    int labels) in the official layout of `dataset` and `fmt` under `root`; returns the folder.

    The files are laid out as the official ones: CIFAR-10's train split is cut into 5 batches
    (as evenly as possible), python files are protocol-2 pickles of the same dicts (with
    `batch_label` and `filenames`), binary files records of label byte(s) + pixel planes.
    CIFAR-100's coarse labels, which the readers ignore, are `label * 20 // len(classes)`.
    """
    lay = layout(dataset, fmt)
    _check_splits(splits, classes)
    folder = Path(root) / lay.folder
    folder.mkdir(parents=True, exist_ok=True)
    write = _write_binary_batch if fmt == "binary" else _write_python_batch
    first = 0
    for split in SPLITS:
        images, labels = splits[split]
        names = lay.files[split]
        for i, (part, part_labels) in enumerate(zip(np.array_split(images, len(names)),
                                                    np.array_split(labels, len(names)))):
            title = f"{'training' if split == 'train' else 'testing'} batch {i + 1} of {len(names)}"
            write(folder / names[i], lay, part, np.asarray(part_labels, np.int64), classes,
                  title, first)
            first += len(part)
    _write_meta(folder, lay, classes, len(np.array_split(splits["train"][1],
                                                          len(lay.files["train"]))[0]))
    return folder


def _check_splits(splits: Mapping[str, Tuple[np.ndarray, np.ndarray]],
                  classes: Sequence[str]) -> None:
    for split in SPLITS:
        images, labels = splits[split]
        if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE or \
                len(images) != len(labels):
            raise CifarDataError(f"{split}: need uint8 [N, 32, 32, 3] images and N labels, got "
                                 f"{images.dtype} {list(images.shape)} and {len(labels)}")
        if len(labels) and (min(labels) < 0 or max(labels) >= len(classes)):
            raise CifarDataError(f"{split}: labels must be in [0, {len(classes)})")
    if not 2 <= len(classes) <= 256:
        raise CifarDataError(f"need 2..256 class names (one label byte), got {len(classes)}")


def _coarse(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return labels * COARSE_CLASSES // num_classes


def _write_python_batch(path: Path, lay: CifarLayout, images: np.ndarray, labels: np.ndarray,
                        classes: Sequence[str], title: str, first: int) -> None:
    batch = {"batch_label": title, lay.label_key: labels.tolist(),
             "data": images_to_planes(images),
             "filenames": [f"{classes[y]}_s_{first + i:06d}.png" for i, y in enumerate(labels)]}
    if lay.dataset == "cifar100":
        batch["coarse_labels"] = _coarse(labels, len(classes)).tolist()
    _write_pickle(path, batch)


def _write_pickle(path: Path, obj) -> None:
    with names_file(path), open(path, "wb") as stream:
        pickle.dump(obj, stream, protocol=2)  # the official files' protocol


def _write_binary_batch(path: Path, lay: CifarLayout, images: np.ndarray, labels: np.ndarray,
                        classes: Sequence[str], title: str, first: int) -> None:
    heads = [labels] if lay.label_bytes == 1 else [_coarse(labels, len(classes)), labels]
    records = np.concatenate([np.stack(heads, axis=1).astype(np.uint8),
                              images_to_planes(images)], axis=1)
    with names_file(path):
        records.tofile(path)


def _write_meta(folder: Path, lay: CifarLayout, classes: Sequence[str], per_batch: int) -> None:
    coarse = [f"superclass_{j:02d}" for j in range(COARSE_CLASSES)]
    if lay.format == "binary":
        with names_file(folder / lay.meta):
            (folder / lay.meta).write_text("\n".join(classes) + "\n")
        if lay.dataset == "cifar100":
            with names_file(folder / "coarse_label_names.txt"):
                (folder / "coarse_label_names.txt").write_text("\n".join(coarse) + "\n")
    elif lay.dataset == "cifar10":
        _write_pickle(folder / lay.meta, {"num_cases_per_batch": per_batch,
                                          "label_names": list(classes), "num_vis": PIXELS})
    else:
        _write_pickle(folder / lay.meta, {"fine_label_names": list(classes),
                                          "coarse_label_names": coarse})
