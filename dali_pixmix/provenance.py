"""Which software produced a result: the git revision and the key library versions.

Computed once per process (`provenance()`), recorded in the training run's `config.yaml`, in
every checkpoint and in every evaluation result row (`software_string()`), so a number can be
traced back to the code and libraries behind it. The git revision is the checkout's HEAD
("+dirty" marks uncommitted changes to tracked files); outside a git checkout, the revision baked
into the package at build time (`assets/git_revision.txt`, written by docker/Dockerfile from its
GIT_REVISION build argument); else "unknown" (e.g. a pip-installed copy).
"""
from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional

PACKAGE_DIR = Path(__file__).resolve().parent
BAKED_REVISION = Path("assets") / "git_revision.txt"  # under PACKAGE_DIR; docker/Dockerfile


def _git(*args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_revision() -> str:
    """HEAD of the checkout this package runs from ("+dirty" if edited), else the revision
    baked in at build time, else "unknown"."""
    return checkout_revision() or baked_revision() or "unknown"


def checkout_revision() -> Optional[str]:
    """HEAD of the git checkout this package runs from ("+dirty" if edited), or None."""
    top = _git("rev-parse", "--show-toplevel")
    # Only our own checkout counts: a pip-installed copy may sit inside someone else's repo.
    if not top or Path(top).resolve() / PACKAGE_DIR.name != PACKAGE_DIR:
        return None
    revision = _git("rev-parse", "HEAD")
    if not revision:
        return None
    changes = _git("status", "--porcelain", "--untracked-files=no")
    return revision + ("+dirty" if changes else "")


def baked_revision() -> Optional[str]:
    """The revision written into the package when its image was built (no .git there), or
    None without one."""
    try:
        text = (PACKAGE_DIR / BAKED_REVISION).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text if text and text != "unknown" else None


def _version(module: str) -> str:
    try:
        return str(__import__(module, fromlist=["__version__"]).__version__)
    except Exception:  # noqa: BLE001 - a missing or broken library is reported, not fatal
        return "not installed"


@lru_cache(maxsize=1)
def provenance() -> Dict[str, str]:
    """{git_revision, dali_pixmix, python, torch, torchvision, dali, numpy}: versions as text."""
    from dali_pixmix import __version__

    return {"git_revision": git_revision(), "dali_pixmix": __version__,
            "python": platform.python_version(), "torch": _version("torch"),
            "torchvision": _version("torchvision"), "dali": _version("nvidia.dali"),
            "numpy": _version("numpy")}


def software_string() -> str:
    """One line, e.g. "dali-pixmix=0.1.0 git=1a2b3c... python=3.11.9 torch=2.4.0 ...", as
    written in each evaluation result row."""
    info = provenance()
    return (f"dali-pixmix={info['dali_pixmix']} git={info['git_revision']} "
            + " ".join(f"{k}={info[k]}" for k in ("python", "torch", "torchvision", "dali",
                                                   "numpy")))
