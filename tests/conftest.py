"""Shared test configuration: tiers by marker, CPU thread limits, GPU skip."""
import os

import pytest
import torch

# Two cores on CI: keep intra-op parallelism small so DALI workers and torch share them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


# ------------------------------------------------------------------------------------------
# Shared generated data (session scope: each is written once per test run)
# ------------------------------------------------------------------------------------------
TINY_IMAGENET_CLASSES = 6


@pytest.fixture(scope="session")
def tiny_imagenet(tmp_path_factory):
    """ImageNet-style tree root/{train,val}/<wnid>/*.JPEG: 6 classes, 8 train + 4 val each,
    48..96 px.

    Class k is the k-th ImageNet wnid, so folder order equals the class index.
    """
    from dali_pixmix.data.synthetic import make_synthetic_imagenet

    root = tmp_path_factory.mktemp("tiny_imagenet")
    return make_synthetic_imagenet(root, num_classes=TINY_IMAGENET_CLASSES, train_per_class=8,
                                   val_per_class=4, seed=0, min_size=48, max_size=96,
                                   progress=False)


@pytest.fixture(scope="session")
def tiny_mixing_dir(tmp_path_factory):
    """12 fractal pictures of 64 px in nested sub-folders (11 PNG, 1 JPEG): a mixing set root."""
    from PIL import Image

    from dali_pixmix.mixing.fractals import make_fractals

    root = tmp_path_factory.mktemp("tiny_mixing")
    paths = make_fractals(root / "fractals" / "images", n=12, size=64, seed=0, progress=False)
    for i, path in enumerate(paths):
        sub = root / ("fractals/images" if i < 6 else "more/nested/deeper" if i < 9 else "more")
        sub.mkdir(parents=True, exist_ok=True)
        if i == 11:  # one JPEG among the PNGs, as in real mixed folders
            Image.open(path).convert("RGB").save(sub / "fractal_00011.jpg", quality=92)
            path.unlink()
            continue
        if sub != path.parent:
            path.rename(sub / path.name)
    return root
