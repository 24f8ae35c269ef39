"""Distributed training: run setup, the loop, checkpoints, the lr schedule and the demo.

Entry point: `training.loop.train(cfg, resume)`. This package imports nothing on its own, so
`training.checkpoint` (the checkpoint format and its reader) is cheap to import from anywhere.
"""
