"""The CIFAR safety metrics' conventions (PixMix paper, Tables 1, 2, 7, 8, and its reference code).

- CIFAR-10-C / CIFAR-100-C: ImageNet-C's 15 test corruptions x 5 severities. The paper's "C"
  column (called mCE) is the PLAIN mean top-1 error over the 75 cells, in percent: no AlexNet
  normalisation (no AlexNet errors exist for CIFAR). The 4 extra corruptions are never in it.
  The reference computes it as 1 - the mean over corruptions of the accuracy over all 5
  severities of a file, which is the same number (every cell has as many images).
- CIFAR-10-C-bar / CIFAR-100-C-bar: the reference's 10 corruptions (not ImageNet-C-bar's 10)
  x 5 severities, the same plain mean.
- CIFAR-10-P / CIFAR-100-P: per perturbation, the flip probability and raw top-5 distance exactly
  as for ImageNet-P (`metrics.perturbation`: noise sequences compare every frame with the first,
  the others adjacent frames). The paper's mFR = 100 x the mean flip probability (percent) and
  mT5D = the mean raw top-5 distance (rank units) over the 10 test perturbations, without AlexNet
  normalisation. The test list is that of Hendrycks' CIFAR-P evaluation script: ImageNet-P's,
  with spatter in place of snow (snow, speckle_noise, gaussian_blur and shear are the extras).
- Files hold the severities in order: `<corruption>.npy` is severity 1's images, then 2's, ...
  (`severity_errors` cuts a per-image correctness vector the same way).
Errors are fractions in and percent out, as in `metrics.corruption`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from dali_pixmix.metrics import corruption, perturbation

__all__ = ["SEVERITIES", "CIFAR_C_CORRUPTIONS", "CIFAR_C_EXTRAS", "CIFAR_CBAR_CORRUPTIONS",
           "CIFAR_P_PERTURBATIONS", "CIFAR_P_EXTRAS", "C_PROTOCOL", "P_PROTOCOL",
           "severity_errors", "cifar_c_error", "cifar_cbar_error", "cifar_p_mfr", "cifar_p_mt5d"]

SEVERITIES = 5
CIFAR_C_CORRUPTIONS = corruption.TEST_CORRUPTIONS
CIFAR_C_EXTRAS = corruption.EXTRA_CORRUPTIONS
CIFAR_CBAR_CORRUPTIONS = (
    "blue_noise_sample", "brownish_noise", "checkerboard_cutout", "inverse_sparkles",
    "pinch_and_twirl", "ripple", "circular_motion_blur", "lines", "sparkles",
    "transverse_chromatic_abberation")  # (sic): the released file name
CIFAR_P_PERTURBATIONS = (
    "gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "spatter", "brightness",
    "translate", "rotate", "tilt", "scale")
CIFAR_P_EXTRAS = ("speckle_noise", "gaussian_blur", "snow", "shear")

# How the summary rows were computed, for their `protocol` field.
C_PROTOCOL = "cifar:plain-mean-top1-error-over-corruptions-x-5-severities,no-alexnet-normalisation"
P_PROTOCOL = ("cifar-p:unnormalised,mfr=100*mean-flip-prob,mt5d=mean-top5-distance-in-ranks,"
              "noise-vs-first-frame,others-adjacent-frames")


def severity_errors(correct, severities: int = SEVERITIES) -> np.ndarray:
    """Top-1 error fraction of each severity, [severities], from the 0/1 correctness of every
    image of a corruption file (severity-major: all of severity 1, then 2, ...)."""
    flags = np.asarray(correct, dtype=np.float64).reshape(-1)
    if flags.size == 0 or flags.size % severities:
        raise ValueError(f"{flags.size} results cannot be cut into {severities} equal severities")
    return 1.0 - flags.reshape(severities, -1).mean(axis=1)


def cifar_c_error(errors: Mapping[str, Sequence[float]],
                  corruptions: Sequence[str] = CIFAR_C_CORRUPTIONS) -> float:
    """The paper's CIFAR "mCE": plain mean error in percent over `corruptions` x 5 severities
    (`errors`: corruption -> 5 error fractions). A subset gives a partial mean: label it so."""
    return corruption.mean_error(errors, corruptions)


def cifar_cbar_error(errors: Mapping[str, Sequence[float]],
                     corruptions: Sequence[str] = CIFAR_CBAR_CORRUPTIONS) -> float:
    """The paper's CIFAR C-bar error: plain mean error in percent over its 10 corruptions x 5."""
    return corruption.mean_error(errors, corruptions)


def cifar_p_mfr(fp_by_perturbation: Mapping[str, float],
                perturbations: Sequence[str] = CIFAR_P_PERTURBATIONS) -> float:
    """The paper's CIFAR mFR in percent: 100 x the mean flip probability (fractions in)."""
    return perturbation.mean_flip_probability(fp_by_perturbation, perturbations)


def cifar_p_mt5d(t5d_by_perturbation: Mapping[str, float],
                 perturbations: Sequence[str] = CIFAR_P_PERTURBATIONS) -> float:
    """The paper's CIFAR mT5D: the mean raw top-5 distance, in rank units."""
    return perturbation.mean_top5_distance(t5d_by_perturbation, perturbations)
