"""CIFAR-10/100-C, -C-bar and -P as released: one `.npy` per corruption or perturbation.

Layouts (one folder per set, e.g. `CIFAR-10-C/`):
  C, C-bar  <corruption>.npy    uint8 [5 n, 32, 32, 3]: severity 1's n images, then 2's, ... 5's
            labels.npy          integers [5 n] (the n test labels once per severity, as
                                released) or [n]
  P         <perturbation>.npy  uint8 [videos, frames, 32, 32, 3]; no labels. At difficulty
                                d > 1 the noise perturbations read `<name>_<d>.npy`.
The corruption lists are `metrics.cifar`'s. Every file is opened with
`np.load(mmap_mode="r", allow_pickle=False)` and its header (dtype, shape, length) checked when
the set is opened, so a bad file stops the run before any evaluation; pixels are read from disk
only when a cell or a video is used. `.npy` files of other names are left out and listed in
`unknown`, never averaged in. Bad input raises `CifarDataError` (a ValueError: one `error:` line,
exit 2) naming the file and what was expected.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from dali_pixmix.data.cifar import DISPLAY_NAMES, IMAGE_SHAPE, CifarDataError
from dali_pixmix.metrics import cifar as cm
from dali_pixmix.metrics.perturbation import is_noise

__all__ = ["LABELS_FILE", "CorruptionArrays", "PerturbationArrays", "open_corruption_set",
           "open_cifar_c", "open_cifar_cbar", "open_cifar_p", "perturbation_file", "open_npy"]

LABELS_FILE = "labels.npy"


def suite_folder_names(dataset: str) -> Dict[str, Tuple[str, ...]]:
    """The released sets' folder names by the reference's spelling, {"c", "cbar", "p"} ->
    the accepted names, the first the one written (CIFAR-10-C, CIFAR-10-C-Bar or -C-bar,
    CIFAR-10-P; CIFAR-100-...)."""
    tag = DISPLAY_NAMES[dataset]
    return {"c": (f"{tag}-C",), "cbar": (f"{tag}-C-Bar", f"{tag}-C-bar"), "p": (f"{tag}-P",)}


def open_npy(path: Path, what: str) -> np.ndarray:
    """A memory map of the `.npy` file `path` (no pickles); CifarDataError when unreadable."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise CifarDataError(f"{path} is missing; expected the {what} file") from None
    except (ValueError, OSError, EOFError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise CifarDataError(f"{path}: cannot read it as a .npy array ({reason}); the file is "
                             "truncated, corrupt or not a numeric array: download it again"
                             ) from None


def _require_root(root: Path, what: str) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"{what} folder {root} does not exist or is not a folder; pass "
                                f"the folder that holds the {what} .npy files")


def _known_files(root: Path, names: Sequence[str], file_of=lambda n: f"{n}.npy"):
    """(name -> path of the present ones, absent names, unknown .npy file names)."""
    present = {n: root / file_of(n) for n in names if (root / file_of(n)).is_file()}
    known = {file_of(n) for n in names} | {LABELS_FILE}
    unknown = tuple(sorted(p.name for p in root.glob("*.npy") if p.name not in known))
    return present, tuple(n for n in names if n not in present), unknown


def _require_present(root: Path, files: Dict[str, Path], missing: Sequence[str],
                     require_all: bool, what: str, missing_files: Sequence[str],
                     layout: str) -> None:
    """None of the list's files, or (when all are required) not all of them: an error."""
    if files and not (require_all and missing):
        return
    lacking = ", ".join(missing_files[:4]) + (", ..." if len(missing_files) > 4 else "")
    raise CifarDataError(f"{root} lacks {len(missing)} of the {len(files) + len(missing)} {what} "
                         f"files ({lacking}); expected {layout}")


def _check_images(array: np.ndarray, path: Path, leading: str) -> None:
    """uint8 [..., 32, 32, 3] with `leading` named dimensions before the picture."""
    dims = len(leading.split(","))
    if array.dtype != np.uint8 or array.ndim != dims + 3 or array.shape[dims:] != IMAGE_SHAPE \
            or min(array.shape[:dims]) < 1:
        raise CifarDataError(f"{path}: expected uint8 [{leading}, 32, 32, 3] pictures, got "
                             f"{array.dtype} {list(array.shape)}")


# --------------------------------------------------------------------------- C and C-bar
@dataclass(frozen=True)
class CorruptionArrays:
    """The opened files of a CIFAR-C or C-bar folder (only the corruptions present)."""
    what: str                      # "CIFAR-C", "CIFAR-C-bar": names the set in messages
    root: Path
    files: Dict[str, Path]         # corruption -> file, in the list's order
    labels: np.ndarray             # int64 [5 n]: the label of every image of a file
    missing: Tuple[str, ...]       # corruptions of the list without a file
    unknown: Tuple[str, ...]       # other .npy files in the folder (left out)

    @property
    def per_severity(self) -> int:
        return len(self.labels) // cm.SEVERITIES

    def images(self, corruption: str) -> np.ndarray:
        """Memory map uint8 [5 n, 32, 32, 3] of one corruption (severity-major)."""
        if corruption not in self.files:
            raise CifarDataError(f"{self.root}: no {corruption}.npy (present: "
                                 f"{', '.join(self.files) or 'none'})")
        return open_npy(self.files[corruption], self.what)

    def cell(self, corruption: str, severity: int) -> Tuple[np.ndarray, np.ndarray]:
        """(images, labels) of one (corruption, severity 1..5) cell: n images, a memory map."""
        if not 1 <= severity <= cm.SEVERITIES:
            raise ValueError(f"severity must be 1..{cm.SEVERITIES}, got {severity}")
        n = self.per_severity
        part = slice((severity - 1) * n, severity * n)
        return self.images(corruption)[part], self.labels[part]


def _read_labels(root: Path, what: str, num_classes: Optional[int]) -> np.ndarray:
    path = root / LABELS_FILE
    if not path.is_file():
        raise CifarDataError(f"{root} has no {LABELS_FILE}; expected the {what} layout: "
                             f"<corruption>.npy (5 severities x n images) and {LABELS_FILE}")
    labels = open_npy(path, what)
    if labels.ndim != 1 or labels.size == 0 or labels.dtype.kind not in "iu":
        raise CifarDataError(f"{path}: expected one integer label per image, got "
                             f"{labels.dtype} {list(labels.shape)}")
    labels = np.asarray(labels, dtype=np.int64)
    top = num_classes if num_classes is not None else np.iinfo(np.int64).max
    if labels.min() < 0 or labels.max() >= top:
        raise CifarDataError(f"{path}: labels run from {labels.min()} to {labels.max()}, but the "
                             f"model has {num_classes} classes; the set belongs to another "
                             "dataset (CIFAR-10 vs CIFAR-100?)")
    return labels


def _labels_per_image(labels: np.ndarray, count: int, path: Path) -> np.ndarray:
    """labels.npy as released ([5 n], = `count`) or once per test image ([n])."""
    if count == len(labels) and count % cm.SEVERITIES == 0:
        return labels
    if count == cm.SEVERITIES * len(labels):
        return np.tile(labels, cm.SEVERITIES)
    n = len(labels) // cm.SEVERITIES if len(labels) % cm.SEVERITIES == 0 else len(labels)
    raise CifarDataError(f"{path} holds {count} images but {path.parent / LABELS_FILE} has "
                         f"{len(labels)} labels: expected {cm.SEVERITIES} severities x {n} images "
                         f"= {cm.SEVERITIES * n} images")


def open_corruption_set(root: str | Path, corruptions: Sequence[str], what: str,
                        require_all: bool = False,
                        num_classes: Optional[int] = None) -> CorruptionArrays:
    """Open and check the files of `corruptions` present in `root` (all of them when
    `require_all`), with labels.npy; labels must be < `num_classes` when given."""
    root = Path(root)
    _require_root(root, what)
    files, missing, unknown = _known_files(root, corruptions)
    _require_present(root, files, missing, require_all, what, [f"{c}.npy" for c in missing],
                     f"<corruption>.npy of 5 severities x n images and {LABELS_FILE}")
    labels = _read_labels(root, what, num_classes)
    full = None
    for path in files.values():
        array = open_npy(path, what)
        _check_images(array, path, "5 severities x n images")
        full = _labels_per_image(labels, len(array), path)
    return CorruptionArrays(what, root, files, full, missing, unknown)


def open_cifar_c(root: str | Path, require_all: bool = False,
                 num_classes: Optional[int] = None, extras: bool = False) -> CorruptionArrays:
    """A CIFAR-10-C / CIFAR-100-C folder: the 15 corruptions (plus the 4 extras if `extras`)."""
    names = cm.CIFAR_C_CORRUPTIONS + (cm.CIFAR_C_EXTRAS if extras else ())
    return open_corruption_set(root, names, "CIFAR-C", require_all, num_classes)


def open_cifar_cbar(root: str | Path, require_all: bool = False,
                    num_classes: Optional[int] = None) -> CorruptionArrays:
    """A CIFAR-10-C-bar / CIFAR-100-C-bar folder: its 10 corruptions."""
    return open_corruption_set(root, cm.CIFAR_CBAR_CORRUPTIONS, "CIFAR-C-bar", require_all,
                               num_classes)


# --------------------------------------------------------------------------- P
def perturbation_file(perturbation: str, difficulty: int = 1) -> str:
    """The file of a perturbation: noise at difficulty d > 1 is `<name>_<d>.npy`."""
    if difficulty not in (1, 2, 3):
        raise ValueError(f"CIFAR-P difficulty must be 1, 2 or 3, got {difficulty}")
    if is_noise(perturbation) and difficulty > 1:
        return f"{perturbation}_{difficulty}.npy"
    return f"{perturbation}.npy"


@dataclass(frozen=True)
class PerturbationArrays:
    """The opened files of a CIFAR-P folder (only the perturbations present)."""
    root: Path
    difficulty: int
    files: Dict[str, Path]         # perturbation -> file, in the list's order
    missing: Tuple[str, ...]
    unknown: Tuple[str, ...]

    def videos(self, perturbation: str) -> np.ndarray:
        """Memory map uint8 [videos, frames, 32, 32, 3] of one perturbation."""
        if perturbation not in self.files:
            name = perturbation_file(perturbation, self.difficulty)
            raise CifarDataError(f"{self.root}: no {name} (present: "
                                 f"{', '.join(self.files) or 'none'})")
        return open_npy(self.files[perturbation], "CIFAR-P")


def open_cifar_p(root: str | Path, perturbations: Sequence[str] = cm.CIFAR_P_PERTURBATIONS,
                 difficulty: int = 1, require_all: bool = False) -> PerturbationArrays:
    """Open and check the files of `perturbations` present in a CIFAR-10-P / CIFAR-100-P folder
    (all of them when `require_all`)."""
    root = Path(root)
    _require_root(root, "CIFAR-P")
    files, missing, unknown = _known_files(root, perturbations,
                                           lambda p: perturbation_file(p, difficulty))
    known = {perturbation_file(p, d) for p in cm.CIFAR_P_PERTURBATIONS + cm.CIFAR_P_EXTRAS
             for d in (1, 2, 3)}
    unknown = tuple(name for name in unknown if name not in known)
    _require_present(root, files, missing, require_all, "CIFAR-P",
                     [perturbation_file(p, difficulty) for p in missing],
                     "<perturbation>.npy of [videos, frames, 32, 32, 3]")
    for path in files.values():
        array = open_npy(path, "CIFAR-P")
        _check_images(array, path, "videos, frames")
        if array.shape[1] <= (1 if is_noise(path.stem) else difficulty):
            raise CifarDataError(f"{path}: {array.shape[1]} frames are too few for difficulty "
                                 f"{difficulty}")
    return PerturbationArrays(root, difficulty, files, missing, unknown)
