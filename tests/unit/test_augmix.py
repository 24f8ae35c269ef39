"""Batched AugMix: traced images recomputed by the PIL oracle, the laws of every choice, the
output format and determinism."""
import numpy as np
import pytest
import torch
from scenes import scenes
from stats import beta_ok, chi2_uniform_ok, fair_coin_ok, ks_ok

from dali_pixmix.augment import ops as A
from dali_pixmix.augment import pil_oracle as R
from dali_pixmix.augment.augmix import augmix, draw_augmix_plan
from dali_pixmix.augment.pixmix import Normalized

pytestmark = pytest.mark.unit

GEOMETRIC = {"rotate", "shear_x", "shear_y", "translate_x", "translate_y"}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("strategy", ["grouped", "dense"])
@pytest.mark.parametrize("width, depth, severity, all_ops", [(3, -1, 1, True), (2, 2, 3, True),
                                                             (4, -1, 10, False)])
def test_traced_images_replay_with_pil(strategy, width, depth, severity, all_ops):
    images = scenes(40, 30, 34, seed=severity)
    out, traces = augmix(torch.from_numpy(images), width=width, depth=depth, severity=severity,
                         all_ops=all_ops, generator=gen(severity), trace=True, strategy=strategy)
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    for i, tr in enumerate(traces):
        assert len(tr["chains"]) == width and abs(sum(tr["weights"]) - 1) < 1e-5
        assert all(len(c) == depth for c in tr["chains"]) if depth > 0 else \
            all(1 <= len(c) <= 3 for c in tr["chains"])
        ref = R.augmix_replay(images[i], tr)
        diff = np.abs(out[i].numpy() - ref)
        if {s[0] for c in tr["chains"] for s in c} & GEOMETRIC:
            # a geometric op may truncate one grey level differently from PIL on a few pixels,
            # and a later op of the chain (posterize, equalize) may widen that locally
            assert diff.max() < 0.1, tr
            assert (diff > 1e-5).mean() < 0.05, tr
        else:
            assert diff.max() < 1e-5, tr  # the same uint8 ops bit for bit


def test_plan_laws():
    n = 30000
    plan = draw_augmix_plan(n, 3, -1, 1.0, 1.0, 13, gen(0), "cpu")
    assert chi2_uniform_ok(plan.depth.flatten().numpy() - 1, 3)  # depth uniform on 1..3
    assert chi2_uniform_ok(plan.op.flatten().numpy(), 13)
    assert fair_coin_ok(plan.negate.flatten().numpy())
    assert ks_ok(plan.level.flatten().numpy(), lambda x: (x - 0.1) / 0.9)
    assert beta_ok(plan.m.numpy(), 1.0, 1.0)
    assert np.allclose(plan.weights.sum(0).numpy(), 1.0, atol=1e-6)
    for c in range(3):  # Dirichlet(1, 1, 1) marginals: Beta(1, 2)
        assert beta_ok(plan.weights[c].numpy(), 1.0, 2.0)
    other = draw_augmix_plan(n, 2, 2, 3.0, 0.5, 9, gen(1), "cpu")
    assert bool((other.depth == 2).all()) and chi2_uniform_ok(other.op.flatten().numpy(), 9)
    assert beta_ok(other.m.numpy(), 0.5, 0.5) and beta_ok(other.weights[0].numpy(), 0.5, 0.5)
    assert ks_ok(other.level.flatten().numpy(), lambda x: (x - 0.1) / 2.9)


def test_trace_statistics_follow_the_plan_laws():
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2000, 6, 6, 3),
                                                                    dtype=np.uint8))
    _, traces = augmix(images, generator=gen(4), trace=True)
    depths = [len(c) for t in traces for c in t["chains"]]
    names = [s[0] for t in traces for c in t["chains"] for s in c]
    assert chi2_uniform_ok(np.array(depths) - 1, 3)
    assert chi2_uniform_ok([A.ALL_OPS.index(o) for o in names], 13)
    assert beta_ok([t["m"] for t in traces], 1.0, 1.0)


def test_reference_oracle_follows_the_same_procedure():
    """The PIL reference with its own numpy draws: convex mixes of the image's augmentations."""
    rng = np.random.default_rng(0)
    from PIL import Image

    image = Image.fromarray(scenes(1, 24, 24, seed=3)[0])
    out = R.augmix_pil(image, rng)
    assert out.dtype == np.float32 and out.shape == (24, 24, 3)
    assert 0 <= out.min() and out.max() <= 1


def test_output_format_strategies_workers_and_determinism():
    x = torch.from_numpy(scenes(12, 20, 24, seed=5))
    first = augmix(x, generator=gen(5))
    assert torch.equal(first, augmix(x, generator=gen(5)))
    assert not torch.equal(first, augmix(x, generator=gen(6)))
    assert torch.equal(first, augmix(x, generator=gen(5), host_workers=1))
    assert torch.equal(first, augmix(x, generator=gen(5), host_workers=5))
    assert torch.equal(first, augmix(x, generator=gen(5), host_workers=0))
    dense = augmix(x, generator=gen(5), strategy="dense")
    assert (dense - first).abs().max() < 0.1 and (dense != first).float().mean() < 0.01
    fmt = Normalized(MEAN, STD, "CHW", torch.float16)
    chw = augmix(x, generator=gen(5), output=fmt)
    expected = ((first - torch.tensor(MEAN)) / torch.tensor(STD)).permute(0, 3, 1, 2)
    assert chw.dtype == torch.float16 and chw.shape == (12, 3, 20, 24)
    assert (chw.float() - expected).abs().max() < 1e-2
    with pytest.raises(ValueError, match="uint8"):
        augmix(x.float())
    with pytest.raises(ValueError, match="width >= 1"):
        augmix(x, width=0)
