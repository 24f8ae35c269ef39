"""The comparison methods on CUDA: AugMix and Cutout as on the CPU (and PIL), label mixing on the
training device without host synchronisation, every per-image method in the GPU pipeline, and
one short training run per method. Skipped without CUDA."""
import numpy as np
import pytest
import torch
from scenes import scenes

from dali_pixmix.augment import pil_oracle as R
from dali_pixmix.augment.augmix import augmix
from dali_pixmix.augment.cutout import cutout
from dali_pixmix.augment.label_mixing import mix_batch
from dali_pixmix.augment.methods import METHOD_NAMES
from dali_pixmix.augment.pixmix import Normalized
from dali_pixmix.config import load_config
from dali_pixmix.distributed import DistInfo
from dali_pixmix.pipelines.loaders import make_train_loader
from dali_pixmix.pipelines.stage import AugMixStage, CutoutStage, PixMixStage
from dali_pixmix.training.loop import train

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda", 0)
CROP = 32
GEOMETRIC = {"rotate", "shear_x", "shear_y", "translate_x", "translate_y"}
FORMAT = Normalized((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "CHW", torch.float16)


def host_gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("strategy", ["grouped", "dense"])
def test_augmix_on_cuda_replays_with_pil_and_matches_cpu(strategy):
    images = scenes(24, 36, 44, 1)
    x = torch.from_numpy(images)
    out, traces = augmix(x.cuda(), severity=3, generator=host_gen(3), trace=True,
                         strategy=strategy)
    assert out.is_cuda and torch.equal(out, augmix(x.cuda(), severity=3, generator=host_gen(3),
                                                   strategy=strategy))
    on_cpu = augmix(x, severity=3, generator=host_gen(3))
    assert (out.cpu() - on_cpu).abs().max() < 0.1
    for i, tr in enumerate(traces):
        diff = np.abs(out[i].cpu().numpy() - R.augmix_replay(images[i], tr))
        geometric = {s[0] for c in tr["chains"] for s in c} & GEOMETRIC
        assert diff.max() < (0.1 if geometric else 1e-5)


def test_cutout_on_cuda_equals_cpu():
    x = torch.from_numpy(scenes(16, 36, 44, 2))
    assert torch.equal(cutout(x.cuda(), 18, host_gen(4), output=FORMAT).cpu(),
                       cutout(x, 18, host_gen(4), output=FORMAT))


def test_label_mixing_on_cuda_equals_cpu():
    images, labels = torch.randn(8, 3, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    for kind in ("mixup", "cutmix"):
        a, ta = mix_batch(images, labels, kind, 1.0, 4, host_gen(5))
        b, tb = mix_batch(images.cuda(), labels.cuda(), kind, 1.0, 4, host_gen(5))
        torch.testing.assert_close(b.cpu(), a)
        torch.testing.assert_close(tb.cpu(), ta)


def test_cuda_batches_of_the_methods_never_wait_for_the_gpu():
    x = torch.from_numpy(scenes(16, 36, 44, 6)).cuda()
    images = torch.randn(16, 3, 36, 44, device=CUDA).to(memory_format=torch.channels_last)
    labels = torch.arange(16, device=CUDA) % 5
    augmix(x, generator=host_gen(0), output=FORMAT)  # warm-up: caches and pinned buffers
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for seed in range(3):
            augmix(x, generator=host_gen(seed), output=FORMAT)
            cutout(x, 18, host_gen(seed), output=FORMAT)
            for kind in ("mixup", "cutmix"):
                mix_batch(images, labels, kind, 1.0, 5, host_gen(seed))
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("stage", ["augmix", "cutout", "pixmix_mix_input", "autoaugment"])
def test_gpu_pipeline_runs_each_per_image_method(tiny_imagenet, stage):
    stages = {"augmix": AugMixStage(crop=CROP), "cutout": CutoutStage(16, crop=CROP),
              "pixmix_mix_input": PixMixStage(None, partner_aug_prob=1.0, crop=CROP),
              "autoaugment": None}
    common = dict(root=tiny_imagenet / "train", batch_size=8, dist=DistInfo(device=CUDA),
                  seed=3, crop=CROP, stage=stages[stage], auto_augment=stage == "autoaugment")
    first, labels = next(iter(make_train_loader(**common)))
    again, _ = next(iter(make_train_loader(**common)))
    plain, plain_labels = next(iter(make_train_loader(
        **{**common, "stage": None, "auto_augment": False})))
    assert first.device == CUDA and first.shape == (8, 3, CROP, CROP)
    assert torch.equal(labels, plain_labels)
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, plain)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_gpu_training_runs_every_method(tiny_imagenet, tiny_mixing_dir, tmp_path, method):
    cfg = load_config(None, [
        f"data.train={tiny_imagenet}/train", f"data.val={tiny_imagenet}/val",
        f"pixmix.mixing_set={tiny_mixing_dir}", "pixmix.bank_size=64",
        f"train.output_dir={tmp_path}", "data.crop=32", "data.val_resize=36", "data.val_crop=32",
        "model.arch=resnet18", "train.batch_size=16", "eval.batch_size=24", "train.epochs=1",
        "train.tensorboard=false", "eval.calibration_bin_size=10", "dist.device=cuda",
        "train.amp=bf16", f"augment.method={method}"])
    result = train(cfg, resume="none")
    assert result["status"] == "finished" and np.isfinite(result["val"]["loss"])
