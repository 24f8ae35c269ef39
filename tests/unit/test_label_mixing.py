"""Mixup and CutMix against independent computations: the Beta laws of lambda, the images and
soft targets recomputed with numpy, CutMix's label weight against the pasted area counted in the
output, and the distribution of CutMix's corrected weight against the reference procedure
written here with numpy's own Beta sampler."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats
from stats import beta_ok, chi2_uniform_ok

from dali_pixmix.augment.distributions import beta, dirichlet
from dali_pixmix.augment.label_mixing import (
    HOST_CHUNK,
    apply_draw,
    draw_cutmix,
    draw_mixup,
    mix_batch,
    soft_targets,
)

pytestmark = pytest.mark.unit


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("a, b", [(0.2, 0.2), (1.0, 1.0), (4.0, 1.0), (0.5, 3.0)])
def test_beta_draws_follow_the_law(a, b):
    assert beta_ok(beta(a, b, 30000, gen(int(10 * a + b))).numpy(), a, b)


def test_dirichlet_marginals_and_sums():
    w = dirichlet(1.0, 30000, 3, gen(2)).numpy()
    assert np.allclose(w.sum(axis=1), 1.0)
    for k in range(3):  # marginal of Dirichlet(1, 1, 1): Beta(1, 2)
        assert beta_ok(w[:, k], 1.0, 2.0)
    w = dirichlet(0.3, 30000, 4, gen(3)).numpy()
    assert beta_ok(w[:, 0], 0.3, 0.9)


def test_same_generator_same_draws():
    assert torch.equal(beta(0.2, 0.2, 50, gen(1)), beta(0.2, 0.2, 50, gen(1)))
    assert not torch.equal(beta(0.2, 0.2, 50, gen(1)), beta(0.2, 0.2, 50, gen(2)))


def test_mixup_lambda_is_beta_and_partners_a_uniform_permutation():
    g = gen(0)
    draws = [draw_mixup(8, 0.2, g) for _ in range(6000)]
    assert beta_ok([d.lam for d in draws], 0.2, 0.2)
    for d in draws[:50]:
        assert sorted(d.perm.tolist()) == list(range(8))
    assert chi2_uniform_ok([int(d.perm[0]) for d in draws], 8)  # partner of sample 0


def test_mixup_images_and_targets_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 5, 7)).astype(np.float32)
    y = np.array([0, 3, 3, 1, 4, 2])
    images, targets = mix_batch(torch.from_numpy(x), torch.from_numpy(y), "mixup", 0.2, 5, gen(7))
    d = draw_mixup(6, 0.2, gen(7))  # the same draw, from the same generator state
    perm = d.perm.numpy()
    np.testing.assert_allclose(images.numpy(), d.lam * x + (1 - d.lam) * x[perm], atol=1e-6)
    one_hot = np.eye(5, dtype=np.float32)
    np.testing.assert_allclose(targets.numpy(), d.lam * one_hot[y] + (1 - d.lam) * one_hot[y[perm]],
                               atol=1e-6)


def test_cutmix_label_weight_is_the_area_actually_pasted():
    """Every sample is a distinct constant image: the pixels of another sample's value in the
    output are the pasted box; its area fixes the label weight."""
    n, h, w = 5, 13, 9
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, h, w).contiguous()
    y = torch.arange(n)
    g = gen(0)
    for _ in range(200):
        state = g.get_state()
        images, targets = mix_batch(x, y, "cutmix", 1.0, n, g)
        g2 = torch.Generator()
        g2.set_state(state)
        d = draw_cutmix(n, h, w, 1.0, g2)
        foreign = images[:, 0] != x[:, 0]
        area = foreign.float().mean(dim=(1, 2))
        moved = d.perm != torch.arange(n)  # a sample paired with itself shows no foreign box
        assert torch.allclose(area[moved], torch.full((int(moved.sum()),), 1 - d.lam))
        y0, y1, x0, x1 = d.box
        inside = torch.zeros(h, w, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert bool((foreign[moved] == inside).all())
        assert torch.equal(images[:, :, inside], x[d.perm][:, :, inside])
        expected = d.lam * F.one_hot(y, n) + (1 - d.lam) * F.one_hot(y[d.perm], n)
        assert torch.allclose(targets, expected.float())


def reference_cutmix_weight(rng, h, w, alpha):
    """The CutMix reference procedure (rand_bbox), with numpy's own Beta sampler."""
    lam = rng.beta(alpha, alpha)
    cut = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * cut), int(w * cut)
    cy, cx = rng.integers(h), rng.integers(w)
    y0, y1 = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h)
    x0, x1 = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w)
    return 1.0 - (y1 - y0) * (x1 - x0) / (h * w), (y0, y1, x0, x1)


@pytest.mark.parametrize("h, w", [(64, 64), (30, 17)])
def test_cutmix_weights_and_boxes_follow_the_reference_procedure(h, w):
    g, rng, n = gen(h), np.random.default_rng(h), 8000
    ours = [draw_cutmix(4, h, w, 1.0, g) for _ in range(n)]
    ref = [reference_cutmix_weight(rng, h, w, 1.0) for _ in range(n)]
    two_sample = scipy_stats.ks_2samp([d.lam for d in ours], [r[0] for r in ref])
    assert two_sample.statistic < 1.95 * math.sqrt(2 / n)
    box_sides = np.array([(d.box[1] - d.box[0], d.box[3] - d.box[2]) for d in ours])
    ref_sides = np.array([(b[1] - b[0], b[3] - b[2]) for _, b in ref])
    for k in range(2):
        assert scipy_stats.ks_2samp(box_sides[:, k], ref_sides[:, k]).statistic < \
            1.95 * math.sqrt(2 / n)


def test_soft_targets_sum_to_one_and_handle_self_pairs():
    labels = torch.tensor([2, 2, 0])
    t = soft_targets(labels, torch.tensor([1, 0, 2]), 0.3, 4)
    assert torch.allclose(t.sum(1), torch.ones(3))
    assert torch.allclose(t[2], torch.tensor([1.0, 0, 0, 0]))  # paired with itself
    assert torch.allclose(t[0], torch.tensor([0, 0, 1.0, 0]))  # partner of the same class


def test_channels_last_batches_keep_their_layout_and_values():
    x = torch.randn(4, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 1])
    cl = x.to(memory_format=torch.channels_last)
    for kind in ("mixup", "cutmix"):
        a, ta = mix_batch(x, y, kind, 1.0, 3, gen(3))
        b, tb = mix_batch(cl, y, kind, 1.0, 3, gen(3))
        assert b.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a, b) and torch.equal(ta, tb)


def test_cpu_mixing_in_chunks_is_the_whole_batch_computation_bit_for_bit():
    """The CPU gathers partners HOST_CHUNK samples at a time, single-threaded: the same values,
    bit for bit, as one whole-batch expression in the same order; torch's thread count is
    restored."""
    n = 2 * HOST_CHUNK + 3  # a partial last chunk
    x = torch.randn(n, 3, 10, 12, generator=gen(4))
    y = torch.arange(n) % 5
    threads = torch.get_num_threads()
    for d in (draw_mixup(n, 0.4, gen(5)), draw_cutmix(n, 10, 12, 1.0, gen(6))):
        got, _ = apply_draw(x, y, d, 5)
        if d.box is None:
            expected = x.mul(d.lam).add_(x[d.perm], alpha=1.0 - d.lam)
        else:
            y0, y1, x0, x1 = d.box
            expected = x.clone()
            expected[:, :, y0:y1, x0:x1] = x[d.perm][:, :, y0:y1, x0:x1]
        assert torch.equal(got, expected)
        assert torch.get_num_threads() == threads


def test_bad_arguments():
    x, y = torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="label mixing must be one of"):
        mix_batch(x, y, "cutout", 1.0, 2, gen(0))
    with pytest.raises(ValueError, match="Beta parameters"):
        beta(0.0, 1.0, 3, gen(0))
