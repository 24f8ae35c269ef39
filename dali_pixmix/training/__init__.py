"""Distributed training: run setup, the loop, checkpoints, the lr schedule and the demo.

Entry point: `training.loop.train(cfg, resume)`. The checkpoint format and its reader are the
package's `checkpoint` module (models and FVis read checkpoints too).
"""
