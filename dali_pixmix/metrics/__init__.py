"""Safety metrics: calibration, corruption robustness (mCE), anomaly detection.

All functions are pure, take numpy arrays or torch tensors, and return fractions unless their
docstring says percent.
"""
from dali_pixmix.metrics import (  # noqa: F401,E402
    calibration,  # noqa: F401
    corruption,
    ood,
)
