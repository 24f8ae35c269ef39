"""Goodness-of-fit checks shared by the tests of random draws.

Thresholds are set so that a correct implementation fails with probability < 1e-3 (fixed seeds
make each run deterministic); a wrong law exceeds them by orders of magnitude at the sample sizes
the tests use. Quantiles and reference laws come from scipy (a dependency of scikit-learn).
"""
import math

import numpy as np
from scipy import stats


def ks_statistic(samples, cdf) -> float:
    """Kolmogorov-Smirnov distance between the empirical CDF of ``samples`` and ``cdf``."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = x.size
    f = cdf(x)
    return float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n)))


def ks_ok(samples, cdf) -> bool:
    return ks_statistic(samples, cdf) < 1.95 / math.sqrt(len(samples))  # alpha = 1e-3


def beta_ok(samples, a: float, b: float) -> bool:
    """The samples follow Beta(a, b) (scipy's CDF)."""
    return ks_ok(samples, lambda x: stats.beta.cdf(x, a, b))


def chi2_ok(observed, expected) -> bool:
    """Pearson's test of counts against expected counts (same total), alpha = 1e-3."""
    observed, expected = np.asarray(observed, np.float64), np.asarray(expected, np.float64)
    statistic = float(((observed - expected) ** 2 / expected).sum())
    return statistic < stats.chi2.ppf(0.999, observed.size - 1)


def chi2_uniform_ok(values, n_bins) -> bool:
    counts = np.bincount(np.asarray(values), minlength=n_bins)
    assert counts.size == n_bins, "value outside the expected range"
    return chi2_ok(counts, np.full(n_bins, len(values) / n_bins))


def fair_coin_ok(flags, p: float = 0.5) -> bool:
    flags = np.asarray(flags, dtype=np.float64)
    return abs(flags.mean() - p) < 4 * math.sqrt(p * (1 - p) / flags.size)
