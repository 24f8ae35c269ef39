"""The CIFAR training pipeline (pictures from memory) against the reference's transforms, computed
independently: numpy zero padding + crop + flip for `RandomCrop(32, padding=4)` and
`RandomHorizontalFlip`, the PIL oracle for PixMix on traced samples, a brute-force search for
the mixing pictures' `RandomCrop(32)` windows of the 36 px bank; and its exact resume."""
import numpy as np
import pytest
import torch

from dali_pixmix.augment import pil_oracle as R
from dali_pixmix.augment.pixmix import pixmix
from dali_pixmix.distributed import DistInfo
from dali_pixmix.mixing.bank import MixingBank
from dali_pixmix.pipelines.loaders import LoaderStateError, make_array_train_loader
from dali_pixmix.pipelines.stage import AugMixStage, CutoutStage, PixMixStage
from dali_pixmix.seeds import derive_seed

pytestmark = pytest.mark.integration

N, PAD, SIZE = 96, 4, 32
GEOMETRIC = {"rotate", "shear_x", "shear_y", "translate_x", "translate_y"}


@pytest.fixture(scope="module")
def pictures():
    """Noise pictures (every window distinct) and labels = picture index."""
    images = np.random.default_rng(0).integers(1, 256, (N, SIZE, SIZE, 3), dtype=np.uint8)
    return images, np.arange(N)


@pytest.fixture(scope="module")
def bank():
    gen = torch.Generator().manual_seed(0)
    return MixingBank(torch.randint(0, 256, (5, 36, 36, 3), dtype=torch.uint8, generator=gen))


def loader(pictures, batch_size=N, seed=3, **kwargs):
    images, labels = pictures
    return make_array_train_loader(images, labels, batch_size=batch_size, dist=DistInfo(),
                                   seed=seed, num_threads=1, **kwargs)


def as_pixels(images: torch.Tensor) -> np.ndarray:
    """Normalised CHW batch (mean = std = 0.5) back to uint8 HWC."""
    return np.rint((images.permute(0, 2, 3, 1).numpy() * 0.5 + 0.5) * 255).astype(np.uint8)


def reference_crop(picture, top, left, flip):
    """torchvision's RandomCrop(32, padding=4) window at (top, left) of the zero-padded
    picture, then the horizontal flip."""
    padded = np.pad(picture, ((PAD, PAD), (PAD, PAD), (0, 0)))
    window = padded[top:top + SIZE, left:left + SIZE]
    return window[:, ::-1] if flip else window


def find_window(picture, out):
    """Every (top, left, flip) whose reference crop equals `out`."""
    return [(t, left, f) for t in range(2 * PAD + 1) for left in range(2 * PAD + 1)
            for f in (False, True) if np.array_equal(reference_crop(picture, t, left, f), out)]


def test_crop_and_flip_are_the_reference_random_crop_with_zero_padding(pictures):
    """Each sample is exactly one window of the zero-padded picture (flipped or not); over the
    batch every offset 0..8 occurs on both axes and both flips occur."""
    images, _ = pictures
    batch, labels = next(iter(loader(pictures)))
    assert batch.shape == (N, 3, SIZE, SIZE) and batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1  # mean = std = 0.5 on [0, 1] pixels
    outs = as_pixels(batch)
    found = [find_window(images[i], out) for i, out in zip(labels.tolist(), outs)]
    assert all(len(f) == 1 for f in found), [len(f) for f in found]
    tops, lefts, flips = zip(*[f[0] for f in found])
    assert set(tops) == set(lefts) == set(range(2 * PAD + 1))
    assert 0.25 < np.mean(flips) < 0.75
    assert sorted(labels.tolist()) == list(range(N))  # one epoch: each picture once


def test_pixmix_stage_matches_the_pil_reference_on_traced_samples(pictures, bank):
    """The pipeline's PixMix output (paper's CIFAR settings) equals, per sample, the PIL
    oracle replaying its traced choices on the pipeline's own crops with mixing pictures that
    are RandomCrop(32) windows of the 36 px bank, normalised with mean = std = 0.5."""
    settings = dict(k=4, beta=3.0, severity=3, all_ops=True)
    plain, labels = next(iter(loader(pictures, seed=5)))
    stage = PixMixStage(bank, crop=SIZE, seed=2, **settings)
    mixed, mixed_labels = next(iter(loader(pictures, seed=5, stage=stage)))
    assert torch.equal(labels, mixed_labels)
    crops = as_pixels(plain)
    seed = derive_seed(2, 5, 0)  # the stage's seed in the pipeline of rank 0, seed 5
    gen = torch.Generator()
    mixing = bank.sample(N, SIZE, gen.manual_seed(derive_seed(seed, 1, 0))).numpy()
    _, traces = pixmix(torch.from_numpy(crops), torch.from_numpy(mixing), **settings,
                       generator=torch.Generator().manual_seed(derive_seed(seed, 0, 0)),
                       trace=True)
    got = mixed.permute(0, 2, 3, 1).numpy()
    used_mixing = 0
    for i, tr in enumerate(traces):
        expected = (R.replay(crops[i], mixing[i], tr) - 0.5) / 0.5
        diff = np.abs(got[i] - expected)
        ops = {p[0] for p in [tr["start"]] + [r["partner"] for r in tr["rounds"]]
               if isinstance(p, list)}
        if ops & GEOMETRIC:  # PIL's float64 coordinates may round a few pixels differently
            assert (diff > 2e-5).mean() < 0.01, tr
        else:
            assert diff.max() < 2e-5, tr
        if any(r["partner"] == "mixing" for r in tr["rounds"]):
            used_mixing += 1
            windows = [(p, t, c) for p in range(len(bank)) for t in range(5) for c in range(5)
                       if np.array_equal(bank.images[p, t:t + SIZE, c:c + SIZE].numpy(),
                                         mixing[i])]
            assert windows, i  # a 32 px window of a 36 px bank picture
    assert used_mixing >= N // 4


@pytest.mark.parametrize("method", ["augmix", "cutout", "autoaugment"])
def test_other_methods_run_on_the_same_crops(pictures, method):
    """AugMix and Cutout (torch stages) and AutoAugment (DALI's CIFAR policy) change the
    plain pipeline's crops, which keep their normalised range; Cutout leaves the pixels outside
    its 16 px square as they were."""
    augment = {"augmix": lambda: dict(stage=AugMixStage(severity=3, crop=SIZE, seed=1)),
               "cutout": lambda: dict(stage=CutoutStage(16, crop=SIZE, seed=1)),
               "autoaugment": lambda: dict(auto_augment=True)}[method]()
    plain, _ = next(iter(loader(pictures, batch_size=16)))
    out, _ = next(iter(loader(pictures, batch_size=16, **augment)))
    assert out.shape == plain.shape and not torch.equal(out, plain)
    assert out.min() >= -1 and out.max() <= 1
    if method == "cutout":
        same = ((out - plain).abs() < 1e-6).all(dim=1).flatten(1).float().mean(dim=1)
        assert torch.all(same >= 1 - 16 * 16 / SIZE ** 2 - 1e-6)


def test_array_loader_resumes_from_its_state_exactly(pictures, bank):
    """A loader made from `state()` at batch k of epoch 1 yields bit-identical batches (the
    padded crops, flips and PixMix) to the one that went on; without the state only the order
    is equal."""
    common = dict(batch_size=16, seed=4, stage=PixMixStage(bank, crop=SIZE, severity=3,
                                                           beta=3.0))
    going = loader(pictures, **common)
    for _ in going:  # epoch 0
        pass
    batches = iter(going)
    for _ in range(2):
        next(batches)
    state, position = going.state(), going.position
    ahead = [(x.clone(), y.clone()) for _ in range(2) for x, y in going]  # into epoch 2
    at = dict(epoch=position // len(going), step=position % len(going))
    restored = loader(pictures, **common, **at, dali_state=state)
    again = [(x, y) for _ in range(2) for x, y in restored][:len(ahead)]
    assert len(again) == len(ahead) == 2 * len(going) - 2
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ahead, again))
    fresh = [(x, y) for x, y in loader(pictures, **common, **at)]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(ahead, fresh))
    assert not torch.equal(ahead[0][0], fresh[0][0])
    plain = {**common, "stage": None, "auto_augment": False}
    with pytest.raises(LoaderStateError, match="checkpoint"):
        loader(pictures, **plain, **at, dali_state=state)  # another graph


def test_ranks_read_disjoint_shards_in_lockstep(pictures):
    images, labels = pictures
    seen = []
    for r in range(2):
        dist = DistInfo(rank=r, local_rank=r, world_size=2)
        one = make_array_train_loader(images, labels, batch_size=16, dist=dist, num_threads=1)
        assert len(one) == N // 2 // 16
        seen.append(torch.cat([y for _, y in one]).tolist())
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) == len(seen[1]) == N // 2


def test_bad_arrays_are_refused(pictures):
    images, labels = pictures
    with pytest.raises(ValueError, match=r"uint8 \[N, S, S, 3\]"):
        make_array_train_loader(images.astype(np.float32), labels, batch_size=8, dist=DistInfo())
    with pytest.raises(ValueError, match="96 training pictures but 95 labels"):
        make_array_train_loader(images, labels[:-1], batch_size=8, dist=DistInfo())
    with pytest.raises(ValueError, match="too few"):
        make_array_train_loader(images, labels, batch_size=128, dist=DistInfo())
