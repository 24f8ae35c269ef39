"""augment.method -> what training builds: the pipeline stage and its settings, AutoAugment, and
the label mixing of a step (soft targets only for the label-mixing methods)."""
import pytest
import torch

from dali_pixmix.augment.methods import METHOD_NAMES, METHODS, method
from dali_pixmix.config import load_config
from dali_pixmix.mixing.bank import MixingBank
from dali_pixmix.pipelines.stage import AugMixStage, CutoutStage, PixMixStage
from dali_pixmix.training.methods import (
    batch_generator,
    label_mixing,
    mix_batch,
    train_stage,
    uses_auto_augment,
)

pytestmark = pytest.mark.unit

BANK = MixingBank(torch.zeros((2, 40, 40, 3), dtype=torch.uint8))
SOFT = {"mixup", "cutmix", "pixmix_cutmix"}


def cfg_for(name, *extra):
    return load_config(None, [f"augment.method={name}", "data.crop=32", "train.seed=9", *extra])


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_each_method_builds_its_own_steps(name):
    cfg = cfg_for(name)
    stage = train_stage(cfg, BANK)
    expected = {"pixmix": PixMixStage, "augmix": AugMixStage, "cutout": CutoutStage}
    per_image = method(name).per_image
    assert type(stage) is expected.get(per_image, type(None))
    assert uses_auto_augment(cfg) == (name == "autoaugment")
    assert (label_mixing(cfg) is not None) == (name in SOFT)
    if stage is not None:
        assert (stage.seed, stage.crop) == (9, 32)


def test_stage_settings_come_from_the_config():
    pix = train_stage(cfg_for("pixmix_mix_aug", "pixmix.k=2", "pixmix.beta=3"), BANK)
    assert (pix.k, pix.beta, pix.partner_aug_prob) == (2, 3.0, 0.0)
    assert train_stage(cfg_for("pixmix_mix_input"), None).partner_aug_prob == 1.0
    assert train_stage(cfg_for("pixmix"), BANK).partner_aug_prob == 0.5
    aug = train_stage(cfg_for("augmix", "augment.augmix_width=2", "augment.augmix_depth=3",
                              "augment.augmix_severity=2", "augment.augmix_alpha=0.5",
                              "augment.augmix_all_ops=false"))
    assert (aug.width, aug.depth, aug.severity, aug.alpha, aug.all_ops) == (2, 3, 2, 0.5, False)
    assert train_stage(cfg_for("cutout")).size == 16  # half the crop
    assert train_stage(cfg_for("cutout", "augment.cutout_fraction=0.25")).size == 8
    assert label_mixing(cfg_for("mixup", "augment.mixup_alpha=0.4")) == ("mixup", 0.4)
    assert label_mixing(cfg_for("pixmix_cutmix", "augment.cutmix_alpha=2")) == ("cutmix", 2.0)


def test_the_pixmix_strategy_reaches_the_stage_and_changes_how_it_runs():
    """dense and grouped give the same result to float rounding: geometric ops within one grey
    level, not bit for bit, so equal outputs would mean the setting never reached `pixmix`."""
    assert train_stage(cfg_for("pixmix"), BANK).strategy == "auto"
    stages = {s: train_stage(cfg_for("pixmix", f"pixmix.strategy={s}"), bank) for s, bank in
              (("grouped", BANK), ("dense", BANK))}
    assert (stages["dense"].strategy, stages["dense"].cuda_graph) == ("dense", False)
    images = torch.randint(0, 256, (24, 32, 32, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(3))
    out = {s: stage.apply(images) for s, stage in stages.items()}
    assert not torch.equal(out["grouped"], out["dense"])
    assert (out["grouped"] - out["dense"]).abs().max() <= 1.01 / 255


def test_a_stage_refuses_an_unknown_strategy_or_a_graph_of_grouped_kernels():
    with pytest.raises(ValueError, match="PixMix strategy must be one of"):
        PixMixStage(BANK, crop=32, strategy="fast")
    with pytest.raises(ValueError, match="cuda_graph needs the dense strategy"):
        PixMixStage(BANK, crop=32, strategy="grouped", cuda_graph=True)


def test_only_pixmix_methods_with_mixing_partners_need_the_mixing_set():
    needs = {name for name, m in METHODS.items() if m.needs_mixing_set}
    assert needs == {"pixmix", "pixmix_cutmix", "pixmix_mix_aug"}


class RunFields:  # the fields of a training Run that mix_batch reads
    def __init__(self, cfg, epoch, step, rank=0):
        self.cfg, self.epoch, self.epoch_step, self.classes = cfg, epoch, step, ["a", "b", "c"]
        self.dist = type("Dist", (), {"rank": rank})()


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_mix_batch_gives_soft_targets_only_to_label_mixing_methods(name):
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 1])
    out, targets = mix_batch(RunFields(cfg_for(name), 0, 0), images, labels)
    if name in SOFT:
        assert targets.shape == (4, 3) and targets.dtype == torch.float32
        assert torch.allclose(targets.sum(1), torch.ones(4))
    else:
        assert out is images and targets is labels


def test_step_draws_depend_on_seed_epoch_rank_and_step_only():
    cfg = cfg_for("mixup")
    images, labels = torch.randn(8, 3, 4, 4), torch.arange(8) % 3
    first = mix_batch(RunFields(cfg, 1, 5), images, labels)[0]
    assert torch.equal(first, mix_batch(RunFields(cfg, 1, 5), images, labels)[0])
    for other in (RunFields(cfg, 1, 6), RunFields(cfg, 2, 5), RunFields(cfg, 1, 5, rank=1)):
        assert not torch.equal(first, mix_batch(other, images, labels)[0])
    draws = {float(torch.rand(1, generator=batch_generator(0, e, r, s)))
             for e in range(3) for r in range(3) for s in range(3)}
    assert len(draws) == 27
