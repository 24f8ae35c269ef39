"""ImageNet class lists shipped with the package (no network needed)."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import List


def _read_lines(name: str) -> List[str]:
    text = resources.files("dali_pixmix").joinpath("assets", name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


@lru_cache(maxsize=None)
def imagenet_wnids() -> tuple:
    """The 1000 ImageNet-1k wnids in sorted order: the class index order of torchvision models."""
    return tuple(_read_lines("imagenet_synsets.txt"))
