"""Getting pictures into the model: image discovery, DALI file lists, DALI graphs, the PixMix
stage of the training graph, and the PyTorch-facing loaders."""
