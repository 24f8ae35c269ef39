"""ImageNet-P metrics on hand-made prediction sequences with hand-computed answers."""
import numpy as np
import pytest

from dali_pixmix.metrics import perturbation as pm

pytestmark = pytest.mark.unit


def test_flip_probability_noise_compares_with_first_frame():
    # Video 1: reference 3; frames 1..4 = 3,5,3,5 -> flips vs frame 0: 0,1,0,1 -> 2/4.
    # Video 2: 1,1,1,1,2 -> 0,0,0,1 -> 1/4.  Mean over videos: (0.5 + 0.25) / 2.
    preds = np.array([[3, 3, 5, 3, 5], [1, 1, 1, 1, 2]])
    assert pm.flip_probability(preds, noise=True) == pytest.approx(0.375)


def test_flip_probability_temporal_compares_neighbours():
    # Same sequences, consecutive pairs: video 1: (3,3)(3,5)(5,3)(3,5) -> 3/4;
    # video 2: 0,0,0,1 -> 1/4. Mean 0.5 -- differs from the noise convention (0.375).
    preds = np.array([[3, 3, 5, 3, 5], [1, 1, 1, 1, 2]])
    assert pm.flip_probability(preds, noise=False) == pytest.approx(0.5)


def test_flip_probability_difficulty_two_uses_every_start_offset():
    # Frames 0..5 = 1,2,1,1,2,1. d=2 sub-sequences: offset 0 -> 1,1,2 (pairs 0-2, 2-4: 0,1);
    # offset 1 -> 2,1,1 (pairs 1-3, 3-5: 1,0). Pooled: 2 flips / 4 pairs.
    preds = np.array([[1, 2, 1, 1, 2, 1]])
    assert pm.flip_probability(preds, noise=False, difficulty=2) == pytest.approx(0.5)
    # Difficulty 1 on the same video: 1-2,2-1,1-1,1-2,2-1 -> 4/5.
    assert pm.flip_probability(preds, noise=False, difficulty=1) == pytest.approx(0.8)
    # Noise ignores the difficulty (harder noise lives in separate <name>_<d> folders).
    assert pm.flip_probability(preds, noise=True, difficulty=2) == pytest.approx(2 / 5)


def test_pair_top5_distance_hand_values():
    ref = np.array([1, 2, 3, 4, 5])
    assert pm.pair_top5_distance(ref, ref) == 0
    # Swap of the first two: |0-1| + |1-0| = 2.
    assert pm.pair_top5_distance(ref, np.array([2, 1, 3, 4, 5])) == 2
    # Class 1 leaves the top 5: sigma-1 = [>=5 -> 5, 0, 1, 2, 3] -> 5 + 1 + 1 + 1 + 1 = 9.
    assert pm.pair_top5_distance(ref, np.array([2, 3, 4, 5, 9])) == 9
    # Disjoint top-5 sets: 5 + 4 + 3 + 2 + 1 = 15 (the maximum).
    assert pm.pair_top5_distance(ref, np.array([6, 7, 8, 9, 10])) == 15
    # Only the reference's classes count: a new class at rank 1 pushes all others down one:
    # sigma-1 = [1, 2, 3, 4, >=5 -> 5] -> 1 + 1 + 1 + 1 + 1 = 5.
    assert pm.pair_top5_distance(ref, np.array([9, 1, 2, 3, 4])) == 5


def test_pair_top5_distance_with_fewer_than_five_classes_counts_only_real_classes():
    """A 3-class model's lists are padded with -1: unchanged ranks are distance 0, and a swap
    of the first two classes is 2 (each moves one rank), as over the full 3-class ranking."""
    ref = np.array([2, 0, 1, -1, -1])
    assert pm.pair_top5_distance(ref, ref) == 0
    assert pm.pair_top5_distance(ref, np.array([0, 2, 1, -1, -1])) == 2
    assert pm.pair_top5_distance(ref, np.array([1, 0, 2, -1, -1])) == 4  # 2 and 1 trade ends


def test_top5_distance_noise_vs_temporal():
    a = [1, 2, 3, 4, 5]
    b = [2, 1, 3, 4, 5]          # d(a, b) = 2, d(b, a) = 2
    c = [6, 7, 8, 9, 10]         # d(a, c) = 15, d(b, c) = 15
    rankings = np.array([[a, b, b, c]])
    # Noise: (a,b) (a,b) (a,c) -> (2 + 2 + 15) / 3.
    assert pm.top5_distance(rankings, noise=True) == pytest.approx(19 / 3)
    # Temporal: (a,b) (b,b) (b,c) -> (2 + 0 + 15) / 3.
    assert pm.top5_distance(rankings, noise=False) == pytest.approx(17 / 3)
    # Difficulty 2: (a,b) (b,c) -> (2 + 15) / 2.
    assert pm.top5_distance(rankings, noise=False, difficulty=2) == pytest.approx(8.5)


def test_top5_distance_matches_full_ranking_definition():
    # Independent computation from full rankings with the reference's cumulative-sum table.
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 7, 12))
    ranks = np.argsort(-logits, axis=-1)                       # classes in rank order
    cum = np.minimum(np.arange(12), 5)                          # cumsum([0,1,1,1,1,1,0,...])
    expected = []
    for vid in ranks:
        dists = []
        for t in range(6):
            rank_of = np.argsort(vid[t + 1])                     # class -> 0-based rank
            sigma0 = rank_of[vid[t][:5]]
            dists.append(np.abs(cum[:5] - cum[sigma0]).sum())
        expected.append(np.mean(dists))
    got = pm.top5_distance(ranks[..., :5], noise=False)
    assert got == pytest.approx(np.mean(expected))


def test_mfr_and_mt5d_normalise_by_alexnet_and_reject_missing():
    fp = {p: pm.ALEXNET_FP[p] * 0.5 for p in pm.TEST_PERTURBATIONS}
    fp["gaussian_noise"] = pm.ALEXNET_FP["gaussian_noise"] * 1.5        # mean of 9x0.5 and 1.5
    fp["spatter"] = 1.0                                                  # validation set: ignored
    assert pm.mfr(fp) == pytest.approx(100 * (9 * 0.5 + 1.5) / 10)
    t5d = {p: pm.ALEXNET_T5D[p] for p in pm.TEST_PERTURBATIONS}
    assert pm.mt5d(t5d) == pytest.approx(100.0)
    del fp["tilt"]
    with pytest.raises(ValueError, match="missing: tilt"):
        pm.mfr(fp)


def test_constants_are_the_papers():
    assert pm.ALEXNET_FP["shot_noise"] == pytest.approx(0.3006)
    assert pm.ALEXNET_T5D["scale"] == pytest.approx(4.48)
    assert pm.flip_rate("translate", 0.1101) == pytest.approx(100.0)
    assert len(pm.TEST_PERTURBATIONS) == 10 and pm.RESNET50_FR["scale"] == 48


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="predictions must have shape"):
        pm.flip_probability(np.array([1, 2, 3]), noise=False)
    with pytest.raises(ValueError, match="too few"):
        pm.flip_probability(np.array([[1, 2]]), noise=False, difficulty=2)
    with pytest.raises(ValueError, match="top 5"):
        pm.top5_distance(np.zeros((1, 3, 4), dtype=int), noise=False)
