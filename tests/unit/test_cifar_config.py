"""CIFAR recipes and the data.dataset / data.root keys: the paper's CIFAR settings (section 4.2,
reference cifar.py) in every shipped recipe, and the checks that tie the data keys to the
dataset."""
import re
from pathlib import Path

import pytest

from dali_pixmix.augment.methods import METHOD_NAMES
from dali_pixmix.config import load_config
from dali_pixmix.training.cli import check_script

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def recipe(name):
    return load_config(REPO / "configs" / f"{name}.yaml")


def test_cifar_recipes_carry_the_papers_settings():
    pix = recipe("cifar10_pixmix")
    assert (pix.data.dataset, pix.data.crop, pix.model.arch) == ("cifar10", 32, "wrn40_4")
    assert (pix.train.epochs, pix.train.batch_size, pix.model.pretrained) == (100, 128, None)
    assert (pix.optim.lr, pix.optim.min_lr, pix.optim.momentum) == (0.1, 1e-6, 0.9)
    assert pix.optim.nesterov and pix.optim.weight_decay == 5e-4
    assert pix.optim.warmup_epochs == 0
    assert (pix.pixmix.k, pix.pixmix.beta, pix.pixmix.severity) == (4, 3.0, 3)
    assert pix.pixmix.all_ops and pix.pixmix.bank_size == 36  # Resize(36), RandomCrop(32)
    assert pix.dist.device == "cuda"  # a GPU recipe never falls back to the CPU silently
    for dataset in ("cifar10", "cifar100"):
        for name in METHOD_NAMES:
            cfg = recipe(f"{dataset}_{name}")
            assert (cfg.data.dataset, cfg.augment.method) == (dataset, name)
            assert cfg.train.output_dir == f"runs/{dataset}_{name}"
            same = recipe(f"cifar10_{name}")
            same.data.dataset, same.train.output_dir = dataset, cfg.train.output_dir
            assert cfg == same  # the CIFAR-100 twin differs in the dataset and folder only
            if name != "mixup":
                assert (cfg.optim, cfg.pixmix, cfg.model) == (pix.optim, pix.pixmix, pix.model)
    assert recipe("cifar10_mixup").optim.weight_decay == 1e-4  # as the paper trains Mixup
    assert recipe("cifar10_mixup").augment.mixup_alpha == 1.0
    assert recipe("cifar10_cutmix").augment.cutmix_alpha == 1.0
    assert recipe("cifar10_cutout").augment.cutout_fraction == 0.5  # 16 px
    aug = recipe("cifar10_augmix").augment
    assert (aug.augmix_width, aug.augmix_depth, aug.augmix_severity, aug.augmix_alpha,
            aug.augmix_all_ops) == (3, -1, 3, 1.0, False)
    demo = recipe("cifar_demo")
    assert demo.demo.enabled and demo.data.dataset == "cifar10" and not demo.data.root
    assert demo.augment.method == "pixmix" and demo.pixmix.bank_size == 36


@pytest.mark.parametrize("overrides, message", [
    (["data.dataset=cifar5"], "'data.dataset' must be one of imagenet, cifar10, cifar100"),
    (["data.root=/data/cifar"], "'data.root'='/data/cifar' is read for CIFAR only"),
    (["data.dataset=cifar10", "data.crop=32", "data.train=/x"],
     "'data.train' is an ImageNet folder, but data.dataset=cifar10 reads"),
    (["data.dataset=cifar100", "data.crop=32", "data.val=/x"], "'data.val' is an ImageNet"),
    (["data.dataset=cifar10"], "'data.crop' must be 32 for data.dataset=cifar10"),
])
def test_data_keys_must_fit_the_dataset(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(None, overrides)


def test_each_training_script_trains_its_datasets():
    check_script(recipe("cifar100_pixmix"), "train_cifar.py", "x.yaml")
    check_script(recipe("imagenet_pixmix"), "train_imagenet.py", "x.yaml")
    with pytest.raises(ValueError, match="x.yaml trains data.dataset=cifar10: run it with "
                                         r"train_cifar.py \(this is train_imagenet.py\)"):
        check_script(recipe("cifar10_baseline"), "train_imagenet.py", "x.yaml")
    with pytest.raises(ValueError, match="run it with train_imagenet.py"):
        check_script(recipe("imagenet_pixmix"), "train_cifar.py", "x.yaml")
