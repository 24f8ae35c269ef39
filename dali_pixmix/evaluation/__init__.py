"""Evaluation runner (sharded, cached inference) and the safety tasks built on it."""
from dali_pixmix.evaluation.runner import Evaluator, Predictions  # noqa: F401
from dali_pixmix.evaluation.tasks import (  # noqa: F401
    run_clean,
    run_imagenet_c,
    run_imagenet_cbar,
    run_imagenet_r,
    run_ood,
)
