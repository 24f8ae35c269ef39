"""Every augmentation method through the real DALI CPU pipeline and the real training loop.

- The per-image stages (AugMix, Cutout, PixMix without a bank) emit exactly the normalised result
  of their torch function on the crops the plain pipeline produces.
- AutoAugment: DALI's ImageNet policy is the published one (typed below), and through our graph
  its sub-policies are drawn uniformly and each step runs with its probability (marker ops).
- The demo trains and reports with every method.
"""
import collections
from pathlib import Path

import numpy as np
import pytest
import torch
from stats import chi2_ok

from dali_pixmix.augment.cutout import cutout_boxes
from dali_pixmix.augment.methods import METHOD_NAMES
from dali_pixmix.config import load_config
from dali_pixmix.data.normalise import IMAGENET_MEAN, IMAGENET_STD
from dali_pixmix.pipelines.graphs import auto_augment_images, train_pipeline
from dali_pixmix.pipelines.stage import AugMixStage, CutoutStage, PixMixStage
from dali_pixmix.training.loop import train

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CROP = 32


def train_batch(root, seed, **kwargs):
    pipe = train_pipeline(file_root=root / "train", batch_size=8, crop=CROP, seed=seed, **kwargs)
    images, labels = pipe.run()
    return np.array(images.as_tensor()), np.array(labels.as_tensor()).reshape(-1)


def plain_crops(root, seed):
    plain, labels = train_batch(root, seed, layout="HWC")
    crops = np.rint((plain * IMAGENET_STD + IMAGENET_MEAN) * 255).astype(np.uint8)
    return torch.from_numpy(crops), labels


def normalised(unit_hwc: np.ndarray) -> np.ndarray:
    return ((unit_hwc - np.float32(IMAGENET_MEAN)) * (1 / np.float32(IMAGENET_STD))) \
        .transpose(0, 3, 1, 2)


@pytest.mark.parametrize("stage", [AugMixStage(seed=3, crop=CROP),
                                   AugMixStage(width=2, depth=1, severity=3, seed=4, crop=CROP),
                                   CutoutStage(16, seed=5, crop=CROP),
                                   PixMixStage(None, partner_aug_prob=1.0, seed=6, crop=CROP)],
                         ids=["augmix", "augmix-other-settings", "cutout", "pixmix_mix_input"])
def test_stage_output_is_its_function_on_the_plain_crops(tiny_imagenet, stage):
    crops, plain_labels = plain_crops(tiny_imagenet, seed=7)
    stage_seed = int(np.random.SeedSequence([stage.seed, 7, 0]).generate_state(1)[0])
    got, labels = train_batch(tiny_imagenet, seed=7, stage=stage)
    np.testing.assert_array_equal(labels, plain_labels)
    if isinstance(stage, CutoutStage):  # the crops, normalised, each box set to 0 afterwards
        boxes = cutout_boxes(8, CROP, CROP, 16, stage.reseeded(stage_seed).host_generator(0))
        expected = normalised(crops.numpy() / np.float32(255))
        for image, (y0, y1, x0, x1) in zip(expected, boxes.tolist()):
            image[:, y0:y1, x0:x1] = 0
            assert (y1 - y0) * (x1 - x0) >= 8 * 8
    else:
        expected = normalised(stage.reseeded(stage_seed).apply(crops).numpy())
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert np.abs(got - normalised(crops.numpy() / 255)).max() > 0.1  # the stage did something


@pytest.mark.parametrize("layout, dtype", [("CHW", "float32"), ("HWC", "float16")])
def test_cutout_is_the_plain_pipeline_output_with_each_square_zeroed(tiny_imagenet, layout,
                                                                     dtype):
    """Outside its squares a Cutout batch is bit for bit the baseline pipeline's (the same
    normalisation as every other method), inside them exactly 0; the squares are the ones
    `cutout_boxes` draws from the stage's generator for each batch index, batch after batch."""
    stage = CutoutStage(20, seed=5, crop=CROP)
    stage_seed = int(np.random.SeedSequence([stage.seed, 7, 0]).generate_state(1)[0])
    common = dict(file_root=tiny_imagenet / "train", batch_size=8, crop=CROP, seed=7,
                  layout=layout, dtype=dtype)
    plain_pipe, cut_pipe = train_pipeline(**common), train_pipeline(**common, stage=stage)
    draws = stage.reseeded(stage_seed)
    for index in range(2):
        plain, cut = (np.array(p.run()[0].as_tensor()) for p in (plain_pipe, cut_pipe))
        hwc = (lambda x: x.transpose(0, 2, 3, 1)) if layout == "CHW" else (lambda x: x)
        plain, cut = hwc(plain), hwc(cut)
        boxes = cutout_boxes(8, CROP, CROP, 20, draws.host_generator(index)).tolist()
        for image, original, (y0, y1, x0, x1) in zip(cut, plain, boxes):
            inside = np.zeros((CROP, CROP), dtype=bool)
            inside[y0:y1, x0:x1] = True
            assert (image[inside] == 0).all() and inside.sum() >= 10 * 10
            np.testing.assert_array_equal(image[~inside], original[~inside])


def test_stages_refuse_bad_settings():
    with pytest.raises(ValueError, match="needs a mixing bank"):
        PixMixStage(None, crop=CROP)
    with pytest.raises(ValueError, match=">= 1 pixel"):
        CutoutStage(0, crop=CROP)


def test_auto_augment_pipeline_changes_the_same_crops(tiny_imagenet):
    plain, plain_labels = train_batch(tiny_imagenet, seed=2)
    augmented, labels = train_batch(tiny_imagenet, seed=2, auto_augment=True)
    again, _ = train_batch(tiny_imagenet, seed=2, auto_augment=True)
    np.testing.assert_array_equal(labels, plain_labels)
    np.testing.assert_array_equal(augmented, again)  # seeded by the pipeline
    changed = np.abs(augmented - plain).reshape(8, -1).max(axis=1) > 1e-3
    assert changed.sum() >= 4  # P(a sub-policy applies nothing) is 0.12 on average
    with pytest.raises(ValueError, match="a stage or auto_augment, not both"):
        train_batch(tiny_imagenet, seed=2, auto_augment=True, stage=CutoutStage(4, crop=CROP))


# The AutoAugment ImageNet policy as released with the TensorFlow reference implementation
# (tensorflow/tpu, autoaugment "policy_v0"; DALI's image_net policy), steps with probability 0
# left out: (op, probability, magnitude bin of 0..10 or None).
PUBLISHED_IMAGENET_POLICY = [
    [("equalize", 0.8, None), ("shear_y", 0.8, 4)],
    [("color", 0.4, 9), ("equalize", 0.6, None)],
    [("color", 0.4, 1), ("rotate", 0.6, 8)],
    [("solarize", 0.8, 3), ("equalize", 0.4, None)],
    [("solarize", 0.4, 2), ("solarize", 0.6, 2)],
    [("color", 0.2, 0), ("equalize", 0.8, None)],
    [("equalize", 0.4, None), ("solarize_add", 0.8, 3)],
    [("shear_x", 0.2, 9), ("rotate", 0.6, 8)],
    [("color", 0.6, 1), ("equalize", 1.0, None)],
    [("invert", 0.4, None), ("rotate", 0.6, 0)],
    [("equalize", 1.0, None), ("shear_y", 0.6, 3)],
    [("color", 0.4, 7), ("equalize", 0.6, None)],
    [("posterize", 0.4, 6), ("auto_contrast", 0.4, None)],
    [("solarize", 0.6, 8), ("color", 0.6, 9)],
    [("solarize", 0.2, 4), ("rotate", 0.8, 9)],
    [("rotate", 1.0, 7), ("translate_y", 0.8, 9)],
    [("solarize", 0.8, 4)],
    [("shear_y", 0.8, 0), ("color", 0.6, 4)],
    [("color", 1.0, 0), ("rotate", 0.6, 2)],
    [("equalize", 0.8, None)],
    [("equalize", 1.0, None), ("auto_contrast", 0.6, None)],
    [("shear_y", 0.4, 7), ("solarize_add", 0.6, 7)],
    [("posterize", 0.8, 2), ("solarize", 0.6, 10)],
    [("solarize", 0.6, 8), ("equalize", 0.6, None)],
    [("color", 0.8, 6), ("rotate", 0.4, 5)],
]
OP_NAMES = sorted({op for sub in PUBLISHED_IMAGENET_POLICY for op, _, _ in sub})


def test_dali_image_net_policy_is_the_published_one():
    from nvidia.dali.auto_aug import auto_augment as aa

    policy = aa.get_image_net_policy(use_shape=True)
    assert policy.num_magnitude_bins == 11
    got = [[(aug.name, p, mag) for aug, p, mag in sub] for sub in policy.sub_policies]
    assert got == PUBLISHED_IMAGENET_POLICY


def expected_count_vectors():
    """P(vector of per-op application counts) under the published policy: a uniform choice of
    the sub-policy, then each step independently with its probability."""
    law = collections.Counter()
    for sub in PUBLISHED_IMAGENET_POLICY:
        for mask in range(1 << len(sub)):
            p, counts = 1 / len(PUBLISHED_IMAGENET_POLICY), [0] * len(OP_NAMES)
            for step, (op, prob, _) in enumerate(sub):
                runs = bool(mask >> step & 1)
                p *= prob if runs else 1 - prob
                counts[OP_NAMES.index(op)] += runs
            if p > 0:
                law[tuple(counts)] += p
    return law


def test_auto_augment_draws_sub_policies_with_the_policy_probabilities():
    """Each op of DALI's policy replaced by a marker that counts its applications in one pixel;
    the frequencies of the count vectors over many images must follow the published policy."""
    from nvidia.dali import pipeline_def, types
    from nvidia.dali.auto_aug import auto_augment as aa
    from nvidia.dali.auto_aug.core import Policy, augmentation

    width = len(OP_NAMES)

    def marker(column):
        mask = np.zeros((1, width, 3), dtype=np.uint8)
        mask[0, column, 0] = 1

        def mark(data, _, shape=None, fill_value=None, interp_type=None):
            return data + types.Constant(mask)
        return augmentation(mark, name=f"mark_{OP_NAMES[column]}")

    markers = {name: marker(i) for i, name in enumerate(OP_NAMES)}
    real = aa.get_image_net_policy(use_shape=True)
    policy = Policy("markers", real.num_magnitude_bins,
                    [[(markers[aug.name], p, None) for aug, p, _ in sub]
                     for sub in real.sub_policies])

    @pipeline_def(enable_conditionals=True, batch_size=4000, num_threads=1, device_id=None,
                  seed=11)
    def marked():
        blank = types.Constant(np.zeros((1, width, 3), dtype=np.uint8))
        return auto_augment_images(blank, width, policy)

    pipe = marked()
    pipe.build()
    vectors = np.concatenate([np.array(pipe.run()[0].as_tensor())[:, 0, :, 0]
                              for _ in range(20)])
    rows, times = np.unique(vectors, axis=0, return_counts=True)
    observed = {tuple(int(v) for v in row): int(t) for row, t in zip(rows, times)}
    law, n = expected_count_vectors(), len(vectors)
    assert set(observed) <= set(law)  # no impossible combination of ops
    common = [v for v in law if law[v] * n >= 5]
    rare = [v for v in law if law[v] * n < 5]
    counts = [observed.get(v, 0) for v in common]
    counts += [sum(observed.get(v, 0) for v in rare)] * bool(rare)
    expected = [law[v] * n for v in common] + [sum(law[v] for v in rare) * n] * bool(rare)
    assert chi2_ok(counts, expected)


def test_auto_augment_geometric_ops_sample_the_nearest_pixel():
    """Rotate, shear and translate as the reference AutoAugment (TensorFlow's policy_v0) and
    torchvision's default: every output pixel is an input pixel or the fill (128), never a
    blend of neighbours (DALI's bilinear default would make new grey levels at every edge)."""
    from nvidia.dali import pipeline_def, types
    from nvidia.dali.auto_aug import augmentations as ops
    from nvidia.dali.auto_aug.core import Policy

    size = 32
    checker = ((np.indices((size, size)).sum(0) // 3) % 2 * 255).astype(np.uint8)
    picture = np.repeat(checker[:, :, None], 3, axis=2)
    steps = [(ops.rotate, 10), (ops.shear_x, 10), (ops.shear_y, 6), (ops.translate_x, 3),
             (ops.translate_y, 5)]
    policy = Policy("geometric", 11, [[(op, 1.0, magnitude)] for op, magnitude in steps])

    @pipeline_def(enable_conditionals=True, batch_size=40, num_threads=1, device_id=None,
                  seed=3)
    def geometric():
        return auto_augment_images(types.Constant(picture), size, policy)

    pipe = geometric()
    pipe.build()
    out = np.array(pipe.run()[0].as_tensor())
    assert set(np.unique(out)) <= {0, 128, 255}
    moved = (out != picture).reshape(len(out), -1).mean(axis=1)
    assert (moved > 0.05).all()  # every image was transformed


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return tmp_path_factory.mktemp("demo_methods")


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_the_demo_trains_and_reports_with_every_method(method, demo_root, tmp_path, capsys):
    cfg = load_config(REPO / "configs" / "demo.yaml", [
        f"augment.method={method}", f"demo.root={demo_root}", "demo.num_classes=3",
        "demo.train_per_class=6", "demo.val_per_class=2", "demo.fractals=4", "demo.min_size=36",
        "demo.max_size=48", "pixmix.bank_size=40", "data.crop=32", "data.val_resize=36",
        "data.val_crop=32", "data.num_threads=1", "train.epochs=1", "train.batch_size=8",
        "eval.batch_size=6", "eval.calibration_bin_size=2", f"train.output_dir={tmp_path}",
        "train.tensorboard=false"])
    result = train(cfg, resume="none")
    assert result["status"] == "finished" and result["step"] == 2 and result["val"]["n"] == 6
    out = capsys.readouterr().out
    assert f"augment.method={method}" in out and "| anomaly detection AUROC, msp (%) |" in out
    assert np.isfinite(result["val"]["loss"])
