"""ImageNet class lists shipped with the package (no network needed)."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Dict, List


def _read_lines(name: str) -> List[str]:
    text = resources.files("dali_pixmix").joinpath("assets", name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


@lru_cache(maxsize=None)
def imagenet_wnids() -> tuple:
    """The 1000 ImageNet-1k wnids in sorted order: the class index order of torchvision models."""
    return tuple(_read_lines("imagenet_synsets.txt"))


@lru_cache(maxsize=None)
def imagenet_r_wnids() -> tuple:
    """The 200 wnids of ImageNet-R."""
    return tuple(_read_lines("imagenet_r_synsets.txt"))


@lru_cache(maxsize=None)
def imagenet_a_wnids() -> tuple:
    """The 200 wnids of ImageNet-A."""
    return tuple(_read_lines("imagenet_a_synsets.txt"))


@lru_cache(maxsize=None)
def wnid_to_lemma() -> Dict[str, str]:
    """wnid -> human-readable lemma (first name of the synset)."""
    table = {}
    for line in _read_lines("imagenet_synset_to_lemma.txt"):
        wnid, _, lemmas = line.partition("\t")
        table[wnid] = lemmas.split(",")[0].strip()
    return table
