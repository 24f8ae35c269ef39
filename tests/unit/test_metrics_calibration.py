"""Calibration metrics against hand-computed values on toy inputs."""
import math

import numpy as np
import pytest
import torch

from dali_pixmix.metrics.calibration import (
    confidence_and_correct,
    expected_calibration_error,
    reliability_bins,
    rms_calibration_error,
)

pytestmark = pytest.mark.unit


def three_bins():
    """300 examples, 3 bins of 100 after sorting: conf .2/.5/.9 with accuracy .1/.5/.6."""
    conf = np.repeat([0.9, 0.2, 0.5], 100)  # deliberately unsorted
    hits = {0.9: 60, 0.2: 10, 0.5: 50}
    correct = np.concatenate([np.r_[np.ones(hits[c]), np.zeros(100 - hits[c])]
                              for c in (0.9, 0.2, 0.5)])
    return conf, correct


def test_rms_published_quirk_drops_most_confident_bin():
    conf, correct = three_bins()
    # bins (sorted): .2 vs .1 -> .1 ; .5 vs .5 -> 0 ; .9 vs .6 -> .3 (dropped by the quirk)
    expected = math.sqrt(100 / 300 * 0.1 ** 2 + 100 / 300 * 0.0)
    assert rms_calibration_error(conf, correct) == pytest.approx(expected)


def test_rms_all_bins():
    conf, correct = three_bins()
    expected = math.sqrt((0.1 ** 2 + 0.0 + 0.3 ** 2) / 3)
    assert rms_calibration_error(conf, correct, drop_last_bin=False) == pytest.approx(expected)


def test_rms_last_bin_absorbs_remainder():
    # 250 examples, bin_size 100 -> 2 bins: [0,100) and [100,250)
    conf = np.r_[np.full(100, 0.3), np.full(150, 0.8)]
    correct = np.r_[np.zeros(100), np.ones(75), np.zeros(75)]  # acc .0 and .5
    expected_all = math.sqrt(100 / 250 * 0.3 ** 2 + 150 / 250 * 0.3 ** 2)
    assert rms_calibration_error(conf, correct, drop_last_bin=False) == pytest.approx(expected_all)
    assert rms_calibration_error(conf, correct) == pytest.approx(math.sqrt(100 / 250 * 0.09))


def test_rms_accepts_tensors_and_perfect_calibration_is_zero():
    conf = torch.full((200,), 0.5)
    correct = torch.tensor([1.0, 0.0] * 100)
    assert rms_calibration_error(conf, correct, drop_last_bin=False) == pytest.approx(0.0)


def test_rms_too_few_examples_is_clear_error():
    with pytest.raises(ValueError, match="at least bin_size=100"):
        rms_calibration_error(np.full(99, 0.5), np.ones(99))


def test_ece_hand_computed():
    conf = np.array([0.05, 0.15, 0.95, 0.95])
    correct = np.array([0, 1, 1, 0])
    # n_bins=10: bins (0,.1]: conf .05 acc 0 ; (.1,.2]: .15 vs 1 ; (.9,1]: .95 vs .5
    expected = 0.25 * 0.05 + 0.25 * 0.85 + 0.5 * 0.45
    assert expected_calibration_error(conf, correct, n_bins=10) == pytest.approx(expected)


def test_ece_bins_are_right_closed():
    # 0.5 belongs to bin (0.4, 0.5] with 10 bins, alone with an incorrect answer
    bins = reliability_bins(np.array([0.5, 0.51]), np.array([0, 1]), n_bins=10)
    assert bins["count"][4] == 1 and bins["count"][5] == 1
    assert bins["accuracy"][4] == 0 and bins["accuracy"][5] == 1
    assert np.isnan(bins["confidence"][0])


def test_confidence_and_correct_from_probabilities():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    conf, correct = confidence_and_correct(probs, np.array([0, 1]))
    np.testing.assert_allclose(conf, [0.7, 0.6])
    np.testing.assert_array_equal(correct, [1, 0])
