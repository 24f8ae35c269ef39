"""Distributed training: run setup, the loop, checkpoints, the lr schedule and the demo."""

from dali_pixmix.training.loop import TrainingError, train  # noqa: F401
