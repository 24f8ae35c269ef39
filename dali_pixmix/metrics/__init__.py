"""Safety metrics: calibration, corruption robustness (mCE), anomaly detection,
ImageNet-P prediction consistency (mFR/mT5D, `metrics.perturbation`), PGD adversarial examples
(`metrics.adversarial`) and the CIFAR tables' conventions (`metrics.cifar`).

All functions are pure, take numpy arrays or torch tensors, and return fractions unless their
docstring says percent. Import the modules themselves (`from dali_pixmix.metrics import ood`):
the package imports none of them, so the light ones (corruption's tables) do not load torch and
scikit-learn (ood) with them.
"""
