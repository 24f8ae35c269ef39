"""Synthetic ImageNet tree and procedural fractals: folders, determinism, learnable cues,
structure."""
import json

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from dali_pixmix.classes import imagenet_wnids
from dali_pixmix.data.synthetic import MARKER_NAME, make_synthetic_imagenet, synthetic_object_image
from dali_pixmix.mixing.fractals import FRACTAL_FAMILIES, fractal_image, make_fractals
from dali_pixmix.mixing.preview import contact_sheet, write_contact_sheet

pytestmark = pytest.mark.unit


def test_object_image_shape_dtype_and_seeded():
    a = synthetic_object_image(3, np.random.default_rng(7), 50, 70)
    b = synthetic_object_image(3, np.random.default_rng(7), 50, 70)
    c = synthetic_object_image(3, np.random.default_rng(8), 50, 70)
    assert a.shape == (50, 70, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError):
        synthetic_object_image(-1, np.random.default_rng(0), 8, 8)


def _hue_histogram(img: np.ndarray) -> np.ndarray:
    """Hue histogram of saturated pixels, computed by PIL (independent of our HSV code)."""
    hsv = np.asarray(Image.fromarray(img).convert("HSV")).reshape(-1, 3).astype(np.float64)
    hist = np.histogram(hsv[hsv[:, 1] > 150, 0], bins=36, range=(0, 256))[0].astype(np.float64)
    return hist / max(hist.sum(), 1.0)


def test_twenty_classes_separable_after_random_resized_crop_and_flip():
    # Nearest class centroid on a hue histogram alone must classify held-out crops: the class
    # cue survives RandomResizedCrop + flip (shape and texture cues come on top of this).
    torch.manual_seed(0)
    augment = T.Compose([T.RandomResizedCrop(32, scale=(0.25, 1.0)), T.RandomHorizontalFlip()])
    classes, per_class, n_train = 20, 12, 8
    feats, labels = [], []
    for k in range(classes):
        for i in range(per_class):
            img = synthetic_object_image(k, np.random.default_rng([k, i]), 64, 64)
            feats.append(_hue_histogram(np.asarray(augment(Image.fromarray(img)))))
            labels.append(k)
    feats, labels = np.array(feats), np.array(labels)
    train = np.arange(len(labels)) % per_class < n_train
    centroids = np.stack([feats[train & (labels == k)].mean(0) for k in range(classes)])
    dist = ((feats[~train, None] - centroids[None]) ** 2).sum(-1)
    accuracy = (dist.argmin(1) == labels[~train]).mean()
    assert accuracy > 0.85, accuracy  # chance is 0.05


def test_tiny_imagenet_folders_counts_and_varied_sizes(tiny_imagenet):
    wnids = list(imagenet_wnids()[:6])
    sizes = set()
    for split, count in (("train", 8), ("val", 4)):
        assert sorted(p.name for p in (tiny_imagenet / split).iterdir()) == wnids
        for wnid in wnids:
            files = sorted((tiny_imagenet / split / wnid).iterdir())
            assert [f.name for f in files] == sorted(f"{wnid}_{i}.JPEG" for i in range(count))
            for f in files:
                with Image.open(f) as img:
                    assert img.format == "JPEG" and img.mode == "RGB"
                    assert 48 <= min(img.size) and max(img.size) <= 96
                    sizes.add(img.size)
    assert len(sizes) > 30  # sizes vary ...
    assert len({round(w / h, 2) for w, h in sizes}) > 20  # ... and so do aspect ratios
    assert json.loads((tiny_imagenet / MARKER_NAME).read_text())["num_classes"] == 6


def _small(root, **kw):
    args = dict(num_classes=2, train_per_class=2, val_per_class=1, seed=3, min_size=24,
                max_size=40, progress=False)
    args.update(kw)
    return make_synthetic_imagenet(root, **args)


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*.JPEG"))}


def test_synthetic_imagenet_deterministic_skips_and_refuses_mixing(tmp_path):
    a, b, c = _small(tmp_path / "a"), _small(tmp_path / "b"), _small(tmp_path / "c", seed=4)
    assert len(_tree_bytes(a)) == 6
    assert _tree_bytes(a) == _tree_bytes(b)
    assert _tree_bytes(a) != _tree_bytes(c)
    probe = next(a.rglob("*.JPEG"))
    probe.write_bytes(b"sentinel")  # a matching marker means nothing is rewritten
    _small(a)
    assert probe.read_bytes() == b"sentinel"
    with pytest.raises(ValueError, match="other parameters"):
        _small(a, num_classes=3)


def test_synthetic_imagenet_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="distinct wnids"):
        _small(tmp_path, wnids=["n1", "n1"])
    with pytest.raises(ValueError, match="min_size"):
        _small(tmp_path, min_size=50, max_size=40)


def _neighbour_correlation(gray: np.ndarray) -> float:
    """Mean correlation of each pixel with its right and lower neighbour."""
    corr = [np.corrcoef(gray[:, :-1].ravel(), gray[:, 1:].ravel())[0, 1],
            np.corrcoef(gray[:-1].ravel(), gray[1:].ravel())[0, 1]]
    return float(np.mean(corr))


def _structure_stats(img: np.ndarray):
    lit = img.max(axis=-1) > 20
    gray = img.astype(np.float64).mean(axis=-1)
    hsv = np.asarray(Image.fromarray(img).convert("HSV"))
    saturation = float(hsv[..., 1][lit].mean()) if lit.any() else 0.0
    return float(lit.mean()), _neighbour_correlation(gray), saturation


@pytest.mark.parametrize("family", sorted(FRACTAL_FAMILIES))
def test_fractals_are_structured_colourful_not_blank_or_noise(family):
    for seed in range(3):
        img = fractal_image(np.random.default_rng(seed), size=96, family=family)
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8
        lit, corr, saturation = _structure_stats(img)
        assert 0.03 < lit < 0.97, (family, seed, lit)
        assert corr > 0.4, (family, seed, corr)
        assert saturation > 40, (family, seed, saturation)


def test_structure_stats_reject_noise_and_blank():
    # The criteria above must actually separate: white noise and a blank picture fail them.
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    lit, corr, _ = _structure_stats(noise)
    assert corr < 0.1 and lit > 0.97
    blank = np.zeros((96, 96, 3), np.uint8)
    assert (blank.max(axis=-1) > 20).mean() == 0.0  # the "lit" fraction of a blank picture


def test_fractal_image_seeded_and_families_checked():
    a = fractal_image(np.random.default_rng(5), size=32)
    assert np.array_equal(a, fractal_image(np.random.default_rng(5), size=32))
    with pytest.raises(ValueError, match="unknown fractal family"):
        fractal_image(np.random.default_rng(0), size=32, family="spiral")


def test_make_fractals_writes_pngs_and_contact_sheet(tmp_path):
    paths = make_fractals(tmp_path / "f", n=3, size=40, seed=1, progress=False)
    assert [p.name for p in paths] == [f"fractal_{i:05d}.png" for i in range(3)]
    images = [np.asarray(Image.open(p)) for p in paths]
    assert all(img.shape == (40, 40, 3) for img in images)
    again = make_fractals(tmp_path / "g", n=3, size=40, seed=1, progress=False)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]
    sheet = contact_sheet(images, columns=2, cell=16)
    assert sheet.shape == (32, 32, 3)
    assert (sheet[16:, 16:] == 0).all()  # the unused fourth cell stays empty
    expected = np.asarray(Image.fromarray(images[2]).resize((16, 16), Image.BILINEAR))
    assert np.array_equal(sheet[16:, :16], expected)  # third image: row 1, column 0


def test_contact_sheet_file_samples_at_most_64_pictures_evenly(tmp_path):
    files = []
    for i in range(130):  # picture i is flat grey level i
        files.append(tmp_path / f"{i:03d}.png")
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(files[-1])
    sheet = np.asarray(Image.open(write_contact_sheet(files, tmp_path / "deep" / "s.png",
                                                      cell=4)))
    assert sheet.shape == (32, 32, 3)  # 64 tiles, 8 per row
    assert [int(sheet[4 * (k // 8), 4 * (k % 8), 0]) for k in (0, 1, 63)] == [0, 2, 126]
