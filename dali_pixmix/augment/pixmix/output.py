"""The output format of ``pixmix`` (and the other batched methods): float32 ``[B, H, W, 3]``
in [0, 1], or normalised in a chosen layout and dtype (``Normalized``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dali_pixmix.augment._constants import stream_safe_cache
from dali_pixmix.augment._rows import to_device


@dataclass(frozen=True)
class Normalized:
    """An output format for ``pixmix``: ``(x - mean) * (1 / std)`` per RGB channel of the
    [0, 1] result (float32 maths, as DALI's crop_mirror_normalize), stored as ``dtype``
    (float32 / float16) in layout ``"HWC"`` (``[B, H, W, 3]``) or ``"CHW"`` (``[B, 3, H, W]``)."""
    mean: tuple
    std: tuple
    layout: str = "HWC"
    dtype: torch.dtype = torch.float32

    def __post_init__(self):
        if self.layout not in ("HWC", "CHW") or len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"Normalized needs 3 means and stds and layout HWC or CHW, got "
                             f"{self.mean}, {self.std}, {self.layout!r}")

    def empty(self, shape, device) -> torch.Tensor:
        n, h, w, c = shape
        size = (n, c, h, w) if self.layout == "CHW" else (n, h, w, c)
        return torch.empty(size, dtype=self.dtype, device=device)

    def convert(self, x: torch.Tensor, rows: tuple | None = None) -> torch.Tensor:
        """Normalise float32 ``[m, H, W, 3]`` in place and return it in this format.

        ``rows``: the float32 ``(mean, 1 / std)`` rows ``[W * 3]`` on ``x``'s device, if the
        caller has them (default: cached per device)."""
        m, h, w, _ = x.shape
        mean, scale = rows if rows is not None else self.rows(w, x.device)
        x.view(m, h, w * 3).sub_(mean).mul_(scale)
        if self.layout == "CHW":
            return x.permute(0, 3, 1, 2).to(self.dtype, memory_format=torch.contiguous_format)
        return x if self.dtype == torch.float32 else x.to(self.dtype)

    def rows(self, width: int, device) -> tuple:
        """float32 mean and 1 / std repeated along an RGB row, ``[width * 3]`` each."""
        return _channel_rows(self.mean, self.std, width, device)

    def host_values(self) -> tuple:
        """float32 ``(mean, 1 / std)``, ``[3]`` each, on the host: the values of ``rows``."""
        return (torch.tensor(self.mean, dtype=torch.float32),
                1.0 / torch.tensor(self.std, dtype=torch.float32))


@stream_safe_cache(maxsize=16)
def _channel_rows(mean: tuple, std: tuple, width: int, device) -> tuple:
    """float32 mean and 1 / std repeated along an RGB row, ``[width * 3]`` each, on ``device``
    (created once: no per-batch copy). A broadcast over the innermost size-3 dimension would
    not vectorise; whole rows do."""
    mean, scale = Normalized(mean, std).host_values()
    return to_device(mean.repeat(width), device), to_device(scale.repeat(width), device)


def empty_output(images: torch.Tensor, output: "Normalized | None") -> torch.Tensor:
    """The result buffer for a batch like ``images``: float32 HWC, or in ``output``'s format."""
    if output is None:
        return torch.empty(images.shape, dtype=torch.float32, device=images.device)
    return output.empty(images.shape, images.device)
