"""Record the torch kernels a piece of code dispatches (for tests and benchmarks).

``OpLog`` is a ``TorchDispatchMode``: every aten op that reaches a backend is logged with an
estimate of the bytes it reads and writes. ``kernels()`` keeps the ops that launch work on the
device: views (metadata only) and ``empty`` allocations are left out. The byte estimate counts
each tensor argument once (at most its storage; a gather's source as much as it gathers) and
every output; it is a rough measure of memory traffic, not a profile. Dispatch modes are
per thread: work that other threads do is not seen.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_ALLOCATIONS = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}
# ops whose first tensor argument is a source they read only partly (as much as they write)
_GATHERS = {"index_select", "gather", "take", "index", "embedding"}


def _nbytes(t: torch.Tensor) -> int:
    return min(t.numel() * t.element_size(), t.untyped_storage().nbytes())


class OpLog(TorchDispatchMode):
    """``with OpLog() as log: ...`` then ``log.kernels()`` / ``log.traffic()``."""

    def __init__(self):
        super().__init__()
        # (op name, is a kernel, bytes, largest tensor's element count, touches a GPU tensor)
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        kernel = not func.is_view and name not in _ALLOCATIONS
        inputs, outputs = _tensors(args, kwargs), _tensors(out, {})
        self.calls.append((name, kernel, _traffic(name, inputs, outputs) if kernel else 0,
                           max((t.numel() for t in inputs + outputs), default=0),
                           any(t.is_cuda for t in inputs + outputs)))
        return out

    def kernels(self, min_numel: int = 0, cuda_only: bool = False) -> list:
        """Names of the dispatched ops that launch work, in order; only those with a tensor of
        at least ``min_numel`` elements, and only those on GPU tensors if ``cuda_only``."""
        return [call[0] for call in self.calls
                if call[1] and call[3] >= min_numel and (call[4] or not cuda_only)]

    def traffic(self, cuda_only: bool = False) -> int:
        """Estimated bytes read and written by those ops."""
        return sum(call[2] for call in self.calls if call[4] or not cuda_only)


def _tensors(args, kwargs) -> list:
    kwargs = {key: value for key, value in (kwargs or {}).items() if key != "out"}  # written
    return [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]


def _traffic(name: str, inputs: list, outputs: list) -> int:
    written = sum(_nbytes(t) for t in outputs)
    if name in _GATHERS and inputs:
        source, rest = inputs[0], inputs[1:]
        read = min(_nbytes(source), written) + sum(_nbytes(t) for t in rest)
    else:
        read = sum(_nbytes(t) for t in inputs)
    return read + written
