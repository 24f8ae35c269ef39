"""A torch function mode that records host reads of tensors (each waits for the GPU)."""
from torch.overrides import TorchFunctionMode

HOST_READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__",
              "__index__", "tensor", "as_tensor"}


class HostReads(TorchFunctionMode):
    """Records the torch calls in HOST_READS made while `armed` (on this thread)."""

    def __init__(self):
        super().__init__()
        self.armed, self.seen = False, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if self.armed and name in HOST_READS:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))
