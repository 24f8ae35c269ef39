"""Evaluation runner (sharded, cached inference) and the safety tasks built on it."""
from .runner import Evaluator, Predictions  # noqa: F401
from .tasks import (run_clean, run_imagenet_c, run_imagenet_cbar, run_imagenet_r,  # noqa: F401
                    run_ood)
