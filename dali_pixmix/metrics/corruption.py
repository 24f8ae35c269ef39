"""ImageNet-C corruption-robustness metrics (Hendrycks & Dietterich, ICLR 2019).

Conventions: `errors` maps a corruption name to its 5 top-1 error FRACTIONS for severities 1..5
(in that order). Constants are AlexNet's errors from the benchmark paper; CE and mCE are
returned in PERCENT. mCE is defined over the 15 test corruptions only; the 4 extras are
normalised by their AlexNet means and reported separately, never averaged into mCE.
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence

import numpy as np

__all__ = ["TEST_CORRUPTIONS", "EXTRA_CORRUPTIONS", "ALEXNET_ERRORS", "ALEXNET_EXTRA_MEANS",
           "ALEXNET_CLEAN_ERROR", "corruption_errors", "mce", "relative_mce", "mean_error",
           "alexnet_mean"]

TEST_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform",
    "pixelate", "jpeg_compression")
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")

ALEXNET_ERRORS: Dict[str, tuple] = {
    "gaussian_noise": (.69528, .82542, .93554, .98138, .99452),
    "shot_noise": (.71224, .85108, .93574, .98182, .99146),
    "impulse_noise": (.78374, .89808, .94870, .98720, .99548),
    "defocus_blur": (.65624, .73202, .85036, .91364, .94714),
    "glass_blur": (.64308, .75054, .88806, .91622, .93344),
    "motion_blur": (.58430, .70048, .82108, .89750, .92638),
    "zoom_blur": (.70008, .76992, .80784, .84198, .87198),
    "snow": (.71726, .88392, .86468, .91870, .94952),
    "frost": (.61390, .79734, .88790, .89942, .93430),
    "fog": (.67474, .76050, .84378, .87260, .94500),
    "brightness": (.45140, .48502, .54048, .62166, .72440),
    "contrast": (.64548, .76150, .88874, .97760, .99270),
    "elastic_transform": (.52596, .70116, .55686, .64076, .80554),
    "pixelate": (.52218, .54620, .73728, .87092, .91262),
    "jpeg_compression": (.51002, .54718, .57294, .65458, .74778),
}
# Only the per-corruption means were published for the extras.
ALEXNET_EXTRA_MEANS: Dict[str, float] = {
    "speckle_noise": .845388, "gaussian_blur": .787108, "spatter": .717512, "saturate": .658248}
ALEXNET_CLEAN_ERROR = 0.435


def alexnet_mean(corruption: str) -> float:
    """AlexNet's mean error over the 5 severities of a test or extra corruption (fraction)."""
    if corruption in ALEXNET_ERRORS:
        return float(np.mean(ALEXNET_ERRORS[corruption]))
    if corruption in ALEXNET_EXTRA_MEANS:
        return ALEXNET_EXTRA_MEANS[corruption]
    raise ValueError(f"unknown corruption '{corruption}': expected one of the 15 ImageNet-C test "
                     f"corruptions or the extras {list(EXTRA_CORRUPTIONS)}")


def _severities(name: str, values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size != 5:
        raise ValueError(f"{name}: expected 5 per-severity errors (severities 1..5), "
                         f"got {arr.size}")
    if np.any(arr < 0) or np.any(arr > 1):
        raise ValueError(f"{name}: errors must be fractions in [0, 1] (got {arr.tolist()}); "
                         "divide percentages by 100")
    return arr


def corruption_errors(errors: Mapping[str, Sequence[float]]) -> Dict[str, float]:
    """Per-corruption CE in percent: 100 * sum_s E(s,c) / sum_s E_AlexNet(s,c) (Table 15 layout).

    Extras are normalised by 5 x their published AlexNet mean.
    """
    out = {}
    for name, values in errors.items():
        out[name] = 100.0 * float(_severities(name, values).mean()) / alexnet_mean(name)
    return out


def _require(errors: Mapping, names: Sequence[str]) -> None:
    missing = [c for c in names if c not in errors]
    if missing:
        which = ("the 15 ImageNet-C test corruptions" if tuple(names) == TEST_CORRUPTIONS
                 else f"its {len(names)} corruptions")
        raise ValueError(f"the mean needs all {which}; missing {len(missing)}: {missing} "
                         "(evaluate them or report a partial mean instead)")


def mce(errors: Mapping[str, Sequence[float]],
        corruptions: Sequence[str] = TEST_CORRUPTIONS) -> float:
    """Mean corruption error in percent over the 15 test corruptions (extras in `errors` ignored).

    Passing another `corruptions` subset gives a clearly partial mean (label it so).
    """
    _require(errors, corruptions)
    ce = corruption_errors({c: errors[c] for c in corruptions})
    return float(np.mean([ce[c] for c in corruptions]))


def relative_mce(errors: Mapping[str, Sequence[float]], clean_error: float,
                 corruptions: Sequence[str] = TEST_CORRUPTIONS) -> float:
    """Relative mCE in percent: mean_c sum_s (E(s,c) - E_clean) / sum_s (E_Alex(s,c) - 0.435).

    `clean_error` is the model's clean top-1 error as a fraction.
    """
    if not 0 <= clean_error <= 1:
        raise ValueError(f"clean_error must be a fraction in [0, 1], got {clean_error}")
    _require(errors, corruptions)
    rel = []
    for c in corruptions:
        if c not in ALEXNET_ERRORS:
            raise ValueError(f"relative mCE is defined for the 15 test corruptions only, not '{c}'")
        own = np.sum(_severities(c, errors[c]) - clean_error)
        ref = np.sum(np.asarray(ALEXNET_ERRORS[c]) - ALEXNET_CLEAN_ERROR)
        rel.append(own / ref)
    return 100.0 * float(np.mean(rel))


def mean_error(errors: Mapping[str, Sequence[float]],
               corruptions: Sequence[str] = TEST_CORRUPTIONS) -> float:
    """Unnormalised mean top-1 error in percent over the given corruptions and 5 severities."""
    _require(errors, corruptions)
    return 100.0 * float(np.mean([_severities(c, errors[c]).mean() for c in corruptions]))
