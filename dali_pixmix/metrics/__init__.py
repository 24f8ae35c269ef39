"""Safety metrics: calibration, corruption robustness (mCE), anomaly detection, and
ImageNet-P prediction consistency (mFR/mT5D, `metrics.perturbation`).

All functions are pure, take numpy arrays or torch tensors, and return fractions unless their
docstring says percent.
"""
from dali_pixmix.metrics import (  # noqa: F401,E402
    calibration,  # noqa: F401
    corruption,
    ood,
)
