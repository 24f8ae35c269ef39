"""The training augmentation methods (``augment.method``): what each one runs, and where.

Every method starts from the same base augmentation (random-resized-crop + horizontal flip in
the DALI pipeline) and may add

* a per-image step, run inside the DALI pipeline on the pipeline's device: ``pixmix``,
  ``augmix`` and ``cutout`` as the batch-level torch stage (``pipelines.stage``), ``autoaugment``
  as DALI's own ``nvidia.dali.auto_aug`` graph;
* a batch-level label-mixing step, run on the training device before the forward pass:
  ``mixup`` or ``cutmix`` (``augment.label_mixing``); these methods train on soft targets.

This module only describes the methods (no torch import), so the configuration can validate a
name without loading anything heavy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Method:
    """One row of the comparison: its per-image step, its label mixing and its source."""
    name: str
    title: str                       # row name in tables (the paper's wording)
    per_image: Optional[str] = None  # pixmix | augmix | cutout | autoaugment
    label_mixing: Optional[str] = None  # mixup | cutmix
    partner_aug_prob: float = 0.5    # PixMix: P(a round's partner is an augmented copy)
    source: str = ""

    @property
    def uses_pixmix(self) -> bool:
        return self.per_image == "pixmix"

    @property
    def needs_mixing_set(self) -> bool:
        """PixMix variants that can draw a mixing-set picture as a partner."""
        return self.uses_pixmix and self.partner_aug_prob < 1.0


_PIXMIX = "Hendrycks et al., PixMix, CVPR 2022"
METHODS = {m.name: m for m in (
    Method("baseline", "Baseline", source="random-resized-crop + flip only"),
    Method("cutout", "Cutout", per_image="cutout",
           source="DeVries & Taylor, arXiv 1708.04552, 2017"),
    Method("mixup", "Mixup", label_mixing="mixup", source="Zhang et al., ICLR 2018"),
    Method("cutmix", "CutMix", label_mixing="cutmix", source="Yun et al., ICCV 2019"),
    Method("autoaugment", "AutoAugment", per_image="autoaugment",
           source="Cubuk et al., CVPR 2019 (ImageNet policy)"),
    Method("augmix", "AugMix", per_image="augmix", source="Hendrycks et al., ICLR 2020"),
    Method("pixmix", "PixMix", per_image="pixmix", source=_PIXMIX),
    Method("pixmix_cutmix", "PixMix + CutMix", per_image="pixmix", label_mixing="cutmix",
           source=_PIXMIX + ", Table 6"),
    Method("pixmix_mix_input", "PixMix, partners: augmented image only", per_image="pixmix",
           partner_aug_prob=1.0, source=_PIXMIX + ", Table 5"),
    Method("pixmix_mix_aug", "PixMix, partners: mixing set only", per_image="pixmix",
           partner_aug_prob=0.0, source=_PIXMIX + ", Table 5"),
)}
METHOD_NAMES = tuple(METHODS)
# The methods of the paper's Table 9 (its ImageNet rows): what tools/compare_methods.py compares
# by default.
TABLE9_METHODS = ("baseline", "augmix", "pixmix")


def method(name: str) -> Method:
    """The method called ``name``; a ValueError lists the valid names."""
    if name not in METHODS:
        raise ValueError(f"unknown augmentation method {name!r}; use one of "
                         f"{', '.join(METHOD_NAMES)}")
    return METHODS[name]
