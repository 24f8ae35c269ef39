"""ImageNet-C metrics against hand-computed values and the published AlexNet constants."""
import numpy as np
import pytest

from dali_pixmix.metrics import corruption as C

pytestmark = pytest.mark.unit


def test_constants_match_published_means():
    published = {"gaussian_noise": .886428, "snow": .866816, "brightness": .564592,
                 "elastic_transform": .646056, "jpeg_compression": .606500}
    for name, mean in published.items():
        assert np.mean(C.ALEXNET_ERRORS[name]) == pytest.approx(mean, abs=1e-6)
    assert len(C.ALEXNET_ERRORS) == 15 and set(C.ALEXNET_ERRORS) == set(C.TEST_CORRUPTIONS)
    assert set(C.ALEXNET_EXTRA_MEANS) == set(C.EXTRA_CORRUPTIONS)


def test_alexnet_itself_has_mce_100():
    assert C.mce(C.ALEXNET_ERRORS) == pytest.approx(100.0)


def test_ce_hand_computed_for_one_corruption():
    # brightness: AlexNet sum = 2.82296; model errors sum to 1.0 -> CE = 100 / 2.82296
    errors = {"brightness": [0.1, 0.15, 0.2, 0.25, 0.3]}
    assert C.corruption_errors(errors)["brightness"] == pytest.approx(100 / 2.82296)


def test_mce_halving_errors_gives_50_and_ignores_extras():
    half = {c: [e / 2 for e in v] for c, v in C.ALEXNET_ERRORS.items()}
    half["spatter"] = [0.0] * 5  # an extra must not enter mCE
    assert C.mce(half) == pytest.approx(50.0)
    assert C.corruption_errors({"spatter": [0.717512] * 5})["spatter"] == pytest.approx(100.0)


def test_mce_weights_corruptions_by_alexnet_difficulty():
    # same raw error everywhere: the easy corruption (brightness) gets the largest CE
    flat = {c: [0.5] * 5 for c in C.TEST_CORRUPTIONS}
    ce = C.corruption_errors(flat)
    assert max(ce, key=ce.get) == "brightness"
    assert ce["brightness"] == pytest.approx(100 * 0.5 / 0.564592)
    expected = np.mean([100 * 0.5 / np.mean(C.ALEXNET_ERRORS[c]) for c in C.TEST_CORRUPTIONS])
    assert C.mce(flat) == pytest.approx(expected)
    assert C.mean_error(flat) == pytest.approx(50.0)


def test_missing_corruption_is_clear_error():
    partial = {c: [0.5] * 5 for c in C.TEST_CORRUPTIONS[:14]}
    with pytest.raises(ValueError, match="missing 1: \\['jpeg_compression'\\]"):
        C.mce(partial)


def test_percent_input_and_wrong_severity_count_rejected():
    with pytest.raises(ValueError, match="fractions"):
        C.corruption_errors({"fog": [50, 60, 70, 80, 90]})
    with pytest.raises(ValueError, match="5 per-severity"):
        C.corruption_errors({"fog": [0.5] * 4})
    with pytest.raises(ValueError, match="unknown corruption"):
        C.corruption_errors({"fogg": [0.5] * 5})


def test_relative_mce_hand_computed():
    # model error = clean error + half of AlexNet's degradation everywhere -> relative mCE 50
    clean = 0.2
    errors = {c: [clean + (e - C.ALEXNET_CLEAN_ERROR) / 2 for e in v]
              for c, v in C.ALEXNET_ERRORS.items()}
    assert C.relative_mce(errors, clean) == pytest.approx(50.0)
    assert C.relative_mce(C.ALEXNET_ERRORS, C.ALEXNET_CLEAN_ERROR) == pytest.approx(100.0)
