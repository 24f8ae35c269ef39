"""Distributions of PixMix's random choices against the method's laws.

Thresholds are chosen so that a correct implementation fails with probability < 1e-3 (fixed
seeds make each run deterministic); a wrong law (e.g. rounds on 0..k-1, a biased coin, a
Beta with swapped parameters) exceeds them by orders of magnitude at these sample sizes.
"""
import math

import numpy as np
import pytest
import torch
from stats import chi2_uniform_ok, fair_coin_ok, ks_ok

from dali_pixmix.augment import ops as A
from dali_pixmix.augment import pil_oracle as R
from dali_pixmix.augment.pixmix import draw_plan, pixmix, sample_ab

pytestmark = pytest.mark.unit


def beta_a1_cdf(beta):   # Beta(beta, 1)
    return lambda x: np.clip(x, 0, 1) ** beta


def beta_1b_cdf(beta):   # Beta(1, beta)
    return lambda x: 1 - (1 - np.clip(x, 0, 1)) ** beta


def check_ab_laws(a, b, beta):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    interp = a < 1
    assert np.array_equal(interp, b > 0), "a < 1 exactly when b > 0 (same branch)"
    assert fair_coin_ok(interp)
    assert ks_ok(a[interp], beta_a1_cdf(beta))
    assert ks_ok(b[interp], beta_1b_cdf(beta))
    assert ks_ok(a[~interp] - 1, beta_1b_cdf(beta))
    assert ks_ok(-b[~interp], beta_1b_cdf(beta))
    for branch in (interp, ~interp):  # a and b are independent draws
        r = np.corrcoef(a[branch], b[branch])[0, 1]
        assert abs(r) < 4 / math.sqrt(branch.sum())


@pytest.mark.parametrize("beta", [4.0, 3.0, 0.7])
def test_sample_ab_follows_the_beta_laws(beta):
    a, b = sample_ab(beta, 40000, torch.Generator().manual_seed(int(beta * 10)))
    check_ab_laws(a.numpy(), b.numpy(), beta)


def test_sample_ab_moments():
    a, b = sample_ab(4.0, 200000, torch.Generator().manual_seed(1))
    interp = a < 1
    # Beta(4, 1): mean 0.8, var 4 / (25 * 6); Beta(1, 4): mean 0.2, same variance.
    assert float(a[interp].mean()) == pytest.approx(0.8, abs=0.003)
    assert float(a[interp].var()) == pytest.approx(4 / 150, rel=0.03)
    assert float(b[interp].mean()) == pytest.approx(0.2, abs=0.003)
    assert float(a[~interp].mean()) == pytest.approx(1.2, abs=0.003)
    assert float(b[~interp].mean()) == pytest.approx(-0.2, abs=0.003)


@pytest.mark.parametrize("k, n_ops", [(4, 13), (4, 9), (3, 13)])
def test_plan_choices_are_uniform(k, n_ops):
    n = 60000
    plan = draw_plan(n, k, 4.0, 3.0, n_ops, torch.Generator().manual_seed(k + n_ops), "cpu")
    assert chi2_uniform_ok(plan.rounds.numpy(), k + 1)
    assert fair_coin_ok(plan.start_aug.numpy())
    for r in range(k):
        assert fair_coin_ok(plan.partner_aug[r].numpy())
        assert fair_coin_ok(plan.multiply[r].numpy())
    for slot in range(k + 1):
        assert chi2_uniform_ok(plan.op[slot].numpy(), n_ops)
        assert fair_coin_ok(plan.negate[slot].numpy())
        assert ks_ok(plan.level[slot].numpy(), lambda x: (x - 0.1) / (3.0 - 0.1))
    check_ab_laws(plan.a.flatten().numpy(), plan.b.flatten().numpy(), 4.0)


def _trace_statistics(traces):
    rounds, starts, partners, mixes, ops, a, b = [], [], [], [], [], [], []
    for t in traces:
        rounds.append(len(t["rounds"]))
        starts.append(t["start"] is not None)
        if t["start"] is not None:
            ops.append(t["start"][0])
        for r in t["rounds"]:
            partners.append(r["partner"] != "mixing")
            if r["partner"] != "mixing":
                ops.append(r["partner"][0])
            mixes.append(r["mix"] == "multiply")
            a.append(r["a"])
            b.append(r["b"])
    return rounds, starts, partners, mixes, ops, a, b


@pytest.mark.parametrize("strategy", ["grouped", "dense"])
@pytest.mark.parametrize("all_ops", [True, False])
def test_pixmix_traces_follow_the_method(all_ops, strategy):
    n = 3000
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8))
    gen = torch.Generator().manual_seed(42)
    _, traces = pixmix(images, images.flip(0), k=4, beta=4.0, severity=1, all_ops=all_ops,
                       generator=gen, trace=True, strategy=strategy)
    rounds, starts, partners, mixes, ops, a, b = _trace_statistics(traces)
    assert chi2_uniform_ok(rounds, 5)
    assert fair_coin_ok(starts) and fair_coin_ok(partners) and fair_coin_ok(mixes)
    names = A.ALL_OPS if all_ops else A.OPS
    assert set(ops) <= set(names)
    assert chi2_uniform_ok([names.index(o) for o in ops], len(names))
    check_ab_laws(a, b, 4.0)


def test_reference_oracle_draws_follow_the_same_laws():
    rng = np.random.default_rng(5)
    a, b = zip(*(R.get_ab(rng, 4.0) for _ in range(20000)))
    check_ab_laws(a, b, 4.0)
    names = [R.sample_op(rng, 1, True, 224, 224)[0] for _ in range(13000)]
    assert chi2_uniform_ok([R.ALL_OPS.index(o) for o in names], 13)


@pytest.mark.parametrize("prob", [1.0, 0.0, 0.25])
def test_partner_probability_of_the_ablations(prob):
    """pixmix_mix_input (1) / pixmix_mix_aug (0): every partner is an augmented copy / a mixing
    picture; the other choices keep their laws."""
    plan = draw_plan(20000, 4, 4.0, 1.0, 13, torch.Generator().manual_seed(3), "cpu",
                     partner_aug_prob=prob)
    assert fair_coin_ok(plan.partner_aug.flatten().numpy(), prob) if 0 < prob < 1 else \
        bool((plan.partner_aug == bool(prob)).all())
    assert fair_coin_ok(plan.start_aug.numpy()) and chi2_uniform_ok(plan.rounds.numpy(), 5)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (200, 6, 6, 3),
                                                                  dtype=np.uint8))
    _, traces = pixmix(images, images.flip(0), generator=torch.Generator().manual_seed(1),
                       trace=True, partner_aug_prob=prob)
    partners = [r["partner"] != "mixing" for t in traces for r in t["rounds"]]
    if prob in (0.0, 1.0):
        assert partners and all(p == bool(prob) for p in partners)
    with pytest.raises(ValueError, match="partner_aug_prob"):
        draw_plan(2, 1, 4.0, 1.0, 13, None, "cpu", partner_aug_prob=1.5)
