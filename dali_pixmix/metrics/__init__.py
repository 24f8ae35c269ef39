"""Safety metrics: calibration, corruption robustness (mCE), anomaly detection,
ImageNet-P prediction consistency (mFR/mT5D, `metrics.perturbation`), PGD adversarial examples
(`metrics.adversarial`) and the CIFAR tables' conventions (`metrics.cifar`).

All functions are pure, take numpy arrays or torch tensors, and return fractions unless their
docstring says percent.
"""
from dali_pixmix.metrics import (  # noqa: F401,E402
    calibration,  # noqa: F401
    corruption,
    ood,
)
