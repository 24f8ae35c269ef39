"""Shared test configuration: tiers by marker, CPU thread limits, GPU skip."""
import os

import pytest
import torch

# Two cores on CI: keep intra-op parallelism small so DALI workers and torch share them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
