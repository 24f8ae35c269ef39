"""The training side of `augment.method` (see `augment.methods`).

- `train_stage(cfg, bank)`: the batch-level per-image stage of the DALI pipeline (PixMix and its
  variants, AugMix, Cutout), or None; `uses_auto_augment(cfg)`: DALI's AutoAugment instead.
- `mix_batch(run, images, labels)`: the label mixing of mixup, cutmix and pixmix_cutmix on the
  training device, before the forward pass; it returns soft targets (float32 [B, classes]),
  which `F.cross_entropy` takes as class probabilities. The other methods get their batch
  back unchanged (integer labels). Draws come from a CPU generator seeded from
  (train.seed, epoch, rank, step in the epoch), so a run resumed at any step draws what the
  uninterrupted run drew there, without storing any generator state.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from dali_pixmix.augment.methods import method
from dali_pixmix.config import Config
from dali_pixmix.seeds import LABEL_MIXING_STREAM, derive_seed


def train_stage(cfg: Config, bank=None):
    """The `pipelines.stage.BatchStage` of `cfg.augment.method` (None: no batch-level stage)."""
    from dali_pixmix.pipelines.stage import AugMixStage, CutoutStage, PixMixStage

    m, aug, crop, seed = method(cfg.augment.method), cfg.augment, cfg.data.crop, cfg.train.seed
    if m.per_image == "pixmix":
        pix = cfg.pixmix
        return PixMixStage(bank, k=pix.k, beta=pix.beta, severity=pix.severity,
                           all_ops=pix.all_ops, seed=seed, crop=crop,
                           partner_aug_prob=m.partner_aug_prob, strategy=pix.strategy,
                           cuda_graph=pix.cuda_graph)
    if m.per_image == "augmix":
        return AugMixStage(width=aug.augmix_width, depth=aug.augmix_depth,
                           severity=aug.augmix_severity, alpha=aug.augmix_alpha,
                           all_ops=aug.augmix_all_ops, seed=seed, crop=crop)
    if m.per_image == "cutout":
        return CutoutStage(cutout_size(cfg), seed=seed, crop=crop)
    return None


def cutout_size(cfg: Config) -> int:
    """Side of the Cutout square in pixels: `augment.cutout_fraction` of `data.crop`."""
    return max(1, round(cfg.augment.cutout_fraction * cfg.data.crop))


def uses_auto_augment(cfg: Config) -> bool:
    return method(cfg.augment.method).per_image == "autoaugment"


def label_mixing(cfg: Config) -> Optional[Tuple[str, float]]:
    """(kind, alpha) of the method's label mixing, or None."""
    kind = method(cfg.augment.method).label_mixing
    if kind is None:
        return None
    return kind, cfg.augment.mixup_alpha if kind == "mixup" else cfg.augment.cutmix_alpha


def batch_generator(seed: int, epoch: int, rank: int, epoch_step: int) -> torch.Generator:
    """The host generator of one training step's label mixing (stream ``(seed,
    LABEL_MIXING_STREAM, epoch, rank, epoch_step)``, see ``dali_pixmix.seeds``)."""
    return torch.Generator().manual_seed(
        derive_seed(seed, LABEL_MIXING_STREAM, epoch, rank, epoch_step))


def mix_batch(run, images: torch.Tensor, labels: torch.Tensor):
    """(inputs, targets) for this step of `run` (call before `run.epoch_step` advances)."""
    mixing = label_mixing(run.cfg)
    if mixing is None:
        return images, labels
    from dali_pixmix.augment.label_mixing import mix_batch as mix

    kind, alpha = mixing
    gen = batch_generator(run.cfg.train.seed, run.epoch, run.dist.rank, run.epoch_step)
    return mix(images, labels, kind, alpha, len(run.classes), gen)
