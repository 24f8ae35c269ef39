"""Calibration metrics on (confidence, correct) pairs.

Conventions: `confidence` is the maximum softmax probability of each example (in [0, 1]),
`correct` is 1 where argmax == label else 0. Every function returns a FRACTION; reports
multiply by 100. Arrays may be numpy arrays, torch tensors or sequences.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

__all__ = ["rms_calibration_error", "expected_calibration_error", "reliability_bins",
           "confidence_and_correct"]


def _as_1d(values, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _pair(confidence, correct):
    conf, corr = _as_1d(confidence, "confidence"), _as_1d(correct, "correct")
    if conf.shape != corr.shape:
        raise ValueError(f"confidence has {conf.size} entries but correct has {corr.size}")
    return conf, corr


def confidence_and_correct(probs, labels):
    """(max softmax probability, argmax == label as 0/1) from [N, K] probabilities, [N] labels."""
    p = probs.detach().cpu().numpy() if hasattr(probs, "detach") else np.asarray(probs)
    y = labels.detach().cpu().numpy() if hasattr(labels, "detach") else np.asarray(labels)
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


def rms_calibration_error(confidence, correct, bin_size: int = 100,
                          drop_last_bin: bool = True) -> float:
    """RMS calibration error with adaptive (equal-mass) bins, as a fraction.

    Examples are sorted by confidence (stable sort) and cut into floor(N / bin_size) bins of
    `bin_size` examples; the last bin absorbs the remainder.
    RMS = sqrt(sum_b (n_b / N) * (mean_conf_b - mean_acc_b)^2).
    `drop_last_bin=True` reproduces the reference code used for the published numbers
    (hendrycks' calib_err): its loop skips the last, most confident bin while still dividing
    by the full N. `drop_last_bin=False` is the unbiased definition over all bins.
    """
    conf, corr = _pair(confidence, correct)
    n = conf.size
    if bin_size < 1:
        raise ValueError(f"bin_size must be >= 1, got {bin_size}")
    if n < bin_size:
        raise ValueError(f"RMS calibration needs at least bin_size={bin_size} examples, got {n}; "
                         "evaluate more images or pass a smaller bin_size")
    order = np.argsort(conf, kind="stable")
    conf, corr = conf[order], corr[order]
    n_bins = n // bin_size
    starts = np.arange(n_bins) * bin_size
    ends = np.append(starts[1:], n)  # last bin absorbs the remainder
    used = n_bins - 1 if drop_last_bin else n_bins
    total = 0.0
    for lo, hi in zip(starts[:used], ends[:used]):
        gap = conf[lo:hi].mean() - corr[lo:hi].mean()
        total += (hi - lo) / n * gap * gap
    return float(np.sqrt(total))


def reliability_bins(confidence, correct, n_bins: int = 15) -> Dict[str, np.ndarray]:
    """Equal-width confidence bins over [0, 1]: data for a reliability diagram.

    Bin b covers (b/n_bins, (b+1)/n_bins]; the first bin also includes 0.
    Returns arrays `lower`, `upper`, `count`, `confidence` (mean per bin, NaN when empty) and
    `accuracy` (mean correctness per bin, NaN when empty).
    """
    conf, corr = _pair(confidence, correct)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right-closed bins: index = number of upper edges strictly below the value
    index = np.clip(np.searchsorted(edges[1:], conf, side="left"), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf, minlength=n_bins) / count
        mean_acc = np.bincount(index, weights=corr, minlength=n_bins) / count
    return {"lower": edges[:-1], "upper": edges[1:], "count": count,
            "confidence": mean_conf, "accuracy": mean_acc}


def expected_calibration_error(confidence, correct, n_bins: int = 15) -> float:
    """Standard ECE with `n_bins` equal-width bins, as a fraction.

    ECE = sum_b (n_b / N) * |mean_conf_b - mean_acc_b| over non-empty bins
    (bins right-closed as in `reliability_bins`).
    """
    conf, _ = _pair(confidence, correct)
    if conf.size == 0:
        raise ValueError("expected_calibration_error needs at least one example")
    bins = reliability_bins(confidence, correct, n_bins)
    full = bins["count"] > 0
    gaps = np.abs(bins["confidence"][full] - bins["accuracy"][full])
    return float(np.sum(bins["count"][full] / conf.size * gaps))
