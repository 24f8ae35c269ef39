"""CIFAR metric conventions against values computed by hand on tiny sets."""
import numpy as np
import pytest

from dali_pixmix.metrics import cifar, perturbation

pytestmark = pytest.mark.unit


def test_severity_errors_cut_the_file_severity_major():
    # 5 severities x 4 images: wrong 0, 1, 2, 3, 4 times
    correct = [1, 1, 1, 1,  0, 1, 1, 1,  0, 0, 1, 1,  0, 0, 0, 1,  0, 0, 0, 0]
    assert cifar.severity_errors(correct).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="21 results"):
        cifar.severity_errors([1] * 21)


def test_c_error_is_the_plain_mean_over_75_cells():
    errors = {c: [0.1, 0.2, 0.3, 0.4, 0.5] for c in cifar.CIFAR_C_CORRUPTIONS}
    errors["fog"] = [1.0] * 5
    errors["speckle_noise"] = [0.0] * 5  # an extra: never in the mean
    # 14 corruptions with mean 0.3 and one with 1.0: (14 * 0.3 + 1) / 15 = 0.34666...
    assert cifar.cifar_c_error(errors) == pytest.approx(100 * 5.2 / 15)
    del errors["fog"]
    with pytest.raises(ValueError, match="15 ImageNet-C test corruptions; missing 1: \\['fog'\\]"):
        cifar.cifar_c_error(errors)


def test_c_error_from_predictions_equals_the_reference_formula():
    """Tiny set: 2 corruptions, 5 severities x 2 images. The reference: 100 - 100 x the mean of
    each file's accuracy over all its images."""
    correct = {"gaussian_noise": [1, 1, 1, 0, 0, 1, 1, 0, 0, 0],   # 5 of 10 right
               "contrast": [1, 1, 1, 1, 1, 1, 1, 1, 0, 1]}          # 9 of 10 right
    errors = {c: cifar.severity_errors(v) for c, v in correct.items()}
    assert errors["gaussian_noise"].tolist() == [0.0, 0.5, 0.5, 0.5, 1.0]
    partial = cifar.cifar_c_error(errors, corruptions=("gaussian_noise", "contrast"))
    assert partial == pytest.approx(100 - 100 * (0.5 + 0.9) / 2)  # = 30


def test_cbar_uses_its_own_ten():
    assert len(cifar.CIFAR_CBAR_CORRUPTIONS) == 10
    assert "transverse_chromatic_abberation" in cifar.CIFAR_CBAR_CORRUPTIONS
    errors = {c: [0.2] * 4 + [0.7] for c in cifar.CIFAR_CBAR_CORRUPTIONS}
    assert cifar.cifar_cbar_error(errors) == pytest.approx(30.0)  # (0.8 + 0.7) / 5
    with pytest.raises(ValueError, match="its 10 corruptions; missing 1: \\['ripple'\\]"):
        cifar.cifar_cbar_error({c: v for c, v in errors.items() if c != "ripple"})


def test_p_metrics_are_unnormalised_and_compare_noise_with_the_first_frame():
    # 2 videos x 4 frames of top-1 predictions.
    noise = np.array([[0, 0, 1, 0], [2, 2, 2, 2]])      # vs frame 0: 1/3 and 0 -> FP 1/6
    moving = np.array([[0, 1, 1, 2], [3, 3, 4, 4]])     # adjacent: 2/3 and 1/3 -> FP 1/2
    fp = {"gaussian_noise": perturbation.flip_probability(noise, noise=True),
          "translate": perturbation.flip_probability(moving, noise=False)}
    assert fp["gaussian_noise"] == pytest.approx(1 / 6)
    assert fp["translate"] == pytest.approx(1 / 2)
    pair = ("gaussian_noise", "translate")
    assert cifar.cifar_p_mfr(fp, pair) == pytest.approx(100 * (1 / 6 + 1 / 2) / 2)

    base = [0, 1, 2, 3, 4]
    ranks = np.array([[base, [1, 0, 2, 3, 4], base]])   # one video: swap top-2 and back
    t5d = {"gaussian_noise": perturbation.top5_distance(ranks, noise=True),    # 2, 0 -> 1
           "translate": perturbation.top5_distance(ranks, noise=False)}        # 2, 2 -> 2
    assert t5d == {"gaussian_noise": 1.0, "translate": 2.0}
    assert cifar.cifar_p_mt5d(t5d, pair) == pytest.approx(1.5)  # rank units, not x100


def test_p_needs_every_test_perturbation():
    assert "spatter" in cifar.CIFAR_P_PERTURBATIONS and "snow" in cifar.CIFAR_P_EXTRAS
    fp = {p: 0.02 for p in cifar.CIFAR_P_PERTURBATIONS}
    assert cifar.cifar_p_mfr(fp) == pytest.approx(2.0)
    del fp["spatter"]
    with pytest.raises(ValueError, match="10 test perturbations; missing: spatter"):
        cifar.cifar_p_mfr(fp)
