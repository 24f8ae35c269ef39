"""Safety metrics: calibration, corruption robustness (mCE), anomaly detection.

All functions are pure, take numpy arrays or torch tensors, and return fractions unless their
docstring says percent.
"""
from . import calibration  # noqa: F401
from . import corruption, ood  # noqa: F401,E402
