"""The pipelines, above the data sources and the mixing bank: the DALI graphs (graphs.py), the
per-batch method stages of the training graph (stage.py), and the PyTorch-facing training and
evaluation loaders (loaders.py)."""
