"""Evaluator.predict_arrays: uint8 arrays and memory maps through the runner, with the
evaluator's normalisation, in order, cached under the arrays' identity."""
import os

import numpy as np
import pytest
import torch

from dali_pixmix.data.cifar import CIFAR_MEAN, CIFAR_STD
from dali_pixmix.data.normalise import IMAGENET_MEAN, IMAGENET_STD
from dali_pixmix.distributed import DistInfo
from dali_pixmix.evaluation import cache
from dali_pixmix.evaluation.runner import Evaluator

pytestmark = pytest.mark.unit


def channel_means_model():
    """Logits = the mean of each input channel: 3 classes whose scores a test can compute."""
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


def pictures(n, seed=0, size=8):
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200, (n, 1, 1, 3))
    noise = rng.integers(-20, 21, (n, size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8), rng.integers(0, 3, n)


def expected(images, labels, mean=IMAGENET_MEAN, std=IMAGENET_STD, sign=1):
    """The predictions' numbers computed in float64 numpy from the definitions (sign -1: of
    the negated model)."""
    x = (images.astype(np.float64) / 255 - np.array(mean)) / np.array(std)
    logits = sign * x.mean(axis=(1, 2))
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return {"top1": logits.argmax(axis=1), "confidence": np.exp(log_p).max(axis=1),
            "nll": -log_p[np.arange(len(labels)), labels],
            "energy": -np.log(np.exp(logits).sum(axis=1)), "maxlogit": -logits.max(axis=1)}


def evaluator(tmp_path=None, model=None, **kw):
    return Evaluator(model or channel_means_model(), ["a", "b", "c"], batch_size=4,
                     dist=DistInfo(), progress=False, out=tmp_path,
                     model_key=None if tmp_path is None else "m", **kw)


@pytest.mark.parametrize("norm", [(CIFAR_MEAN, CIFAR_STD), (IMAGENET_MEAN, IMAGENET_STD)])
def test_predictions_follow_the_evaluators_normalisation(tmp_path, norm):
    images, labels = pictures(11)  # batches of 4: the last one partial
    ev = evaluator(tmp_path, normalisation=norm)
    preds = ev.predict_arrays(images, labels, task="t", cell="c")
    want = expected(images, labels, *norm)
    np.testing.assert_array_equal(preds.labels, labels)
    np.testing.assert_array_equal(preds.top5[:, 0], want["top1"])
    np.testing.assert_array_equal(preds.top5[:, 3:], -1)  # 3 classes: no 4th, 5th
    for name in ("confidence", "nll", "energy", "maxlogit"):
        np.testing.assert_allclose(getattr(preds, name), want[name], rtol=1e-5, atol=1e-6)


def test_the_two_normalisations_differ_on_these_pictures():
    """So the test above would fail if the keyword were ignored."""
    images, labels = pictures(11)
    cifar = expected(images, labels, CIFAR_MEAN, CIFAR_STD)
    imagenet = expected(images, labels, IMAGENET_MEAN, IMAGENET_STD)
    assert (cifar["top1"] != imagenet["top1"]).any()
    assert np.abs(cifar["confidence"] - imagenet["confidence"]).min() > 1e-3


def test_generated_pictures_use_the_normalisation_too(tmp_path):
    images, _ = pictures(6, seed=3)
    ev = evaluator(tmp_path, normalisation=(CIFAR_MEAN, CIFAR_STD))
    preds = ev.predict_generated(lambda idx: images[idx], 6, task="t", cell="g", key="k")
    want = expected(images, np.zeros(6, int), CIFAR_MEAN, CIFAR_STD)
    np.testing.assert_array_equal(preds.top5[:, 0], want["top1"])
    np.testing.assert_allclose(preds.confidence, want["confidence"], rtol=1e-5)


def test_memory_map_cells_are_cached_by_file_and_position(tmp_path):
    images, labels = pictures(10)
    path = tmp_path / "c.npy"
    np.save(path, images)
    mm = np.load(path, mmap_mode="r")
    first, second = mm[:5], mm[5:]
    assert cache.array_identity(first) == cache.array_identity(np.load(path, mmap_mode="r")[:5])
    assert cache.array_identity(first) != cache.array_identity(second)  # same shape, other bytes
    preds = evaluator(tmp_path).predict_arrays(second, labels[5:], task="t", cell="s2")
    np.testing.assert_array_equal(preds.top5[:, 0], expected(images[5:], labels[5:])["top1"])
    assert (tmp_path / "cache" / "t" / "s2.npz").is_file()

    # same key and cell: another model's answer would differ, so equal numbers mean a cache hit
    negated = torch.nn.Sequential(channel_means_model(), _Negate())
    again = evaluator(tmp_path, negated).predict_arrays(second, labels[5:], task="t", cell="s2")
    np.testing.assert_array_equal(again.top5, preds.top5)
    # the file rewritten (new contents and mtime): recomputed, with the other model
    np.save(path, images[::-1])
    os.utime(path, ns=(1, 1))
    mm = np.load(path, mmap_mode="r")
    fresh = evaluator(tmp_path, negated).predict_arrays(mm[5:], labels[5:], task="t", cell="s2")
    want = expected(images[::-1][5:], labels[5:], sign=-1)
    np.testing.assert_array_equal(fresh.top5[:, 0], want["top1"])
    np.testing.assert_allclose(fresh.maxlogit, want["maxlogit"], rtol=1e-5)


class _Negate(torch.nn.Module):
    def forward(self, x):
        return -x


def test_in_memory_arrays_are_cached_by_contents(tmp_path):
    images, labels = pictures(6)
    ev = evaluator(tmp_path)
    ev.predict_arrays(images, labels, task="t", cell="x")
    changed = images.copy()
    changed[0] = 255 - changed[0]
    assert cache.array_identity(changed) != cache.array_identity(images)
    negated = torch.nn.Sequential(channel_means_model(), _Negate())
    hit = evaluator(tmp_path, negated).predict_arrays(images, labels, task="t", cell="x")
    miss = evaluator(tmp_path, negated).predict_arrays(changed, labels, task="t", cell="x")
    np.testing.assert_array_equal(hit.top5[:, 0], expected(images, labels)["top1"])  # cached
    np.testing.assert_array_equal(miss.top5[:, 0], expected(changed, labels, sign=-1)["top1"])


def test_bad_arrays_and_normalisations_are_clear_errors():
    images, labels = pictures(4)
    ev = evaluator()
    with pytest.raises(ValueError, match=r"cell: expected uint8 \[N, H, W, 3\].*float32"):
        ev.predict_arrays(images.astype(np.float32), labels, task="t", cell="cell")
    with pytest.raises(ValueError, match="4 pictures but 3 labels"):
        ev.predict_arrays(images, labels[:3], task="t", cell="cell")
    with pytest.raises(ValueError, match="3 positive stds"):
        evaluator(normalisation=((0.5,) * 3, (0.5, 0.0, 0.5)))
    with pytest.raises(ValueError, match="ImageNet's mean/std.*predict_arrays"):
        evaluator(normalisation=(CIFAR_MEAN, CIFAR_STD)).infer(["x.png"], [0])
