"""Wide ResNet (Zagoruyko & Komodakis, 2016) as the PixMix and AugMix references build it for CIFAR.

WRN-d-k (`wrn<d>_<k>`, e.g. `wrn40_4` of the PixMix paper, `wrn28_10`): depth d = 6n + 4 with n
blocks in each of 3 stages of widths 16k, 32k, 64k (strides 1, 2, 2) after a 3x3 convolution to
16 channels; then BN-ReLU, global average pooling and a linear classifier. Each block is a
pre-activation basic block: BN-ReLU, 3x3 convolution, BN-ReLU, dropout, 3x3 convolution, plus the
shortcut. Where a block changes the width, its shortcut is a 1x1 convolution (with the block's
stride) of the PRE-ACTIVATED input, as in the reference; elsewhere it is the raw input.

Initialisation as the reference: convolutions N(0, 2 / (3 * 3 * out_channels)), BN weight 1 and
bias 0, classifier bias 0 (its weight keeps torch's default). Module names follow the reference
(`conv1`, `block1.layer.0.conv_shortcut`, `bn1`, `fc`, ...) so its state dicts load unchanged once
DataParallel's `module.` prefix is stripped (`models.clean_state_dict`). One difference: the
pooling is adaptive, which equals the reference's `avg_pool2d(8)` on 32 px inputs and, unlike it,
gives one feature vector per image at other sizes.
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

# The PixMix paper trains WRN-40-4 with dropout 0.3 (section 4.2); WRN-28-10 used 0.3 too.
DEFAULT_DROPOUT = 0.3
_NAME = re.compile(r"wrn(\d+)_(\d+)")


class BasicBlock(nn.Module):
    """Pre-activation basic block; a 1x1 convolution shortcut where the width changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.conv_shortcut: Optional[nn.Conv2d] = None
        if in_planes != out_planes:
            self.conv_shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        # The reference feeds the width-changing shortcut the activated input, not x.
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(act)
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return shortcut + self.conv2(out)


class NetworkBlock(nn.Module):
    """One stage: `count` basic blocks, the first with the stage's stride and width change."""

    def __init__(self, count: int, in_planes: int, out_planes: int, stride: int,
                 drop_rate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1,
                       drop_rate) for i in range(count)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-`depth`-`widen_factor` with `num_classes` outputs and dropout `drop_rate` in blocks."""

    def __init__(self, depth: int, num_classes: int, widen_factor: int = 1,
                 drop_rate: float = 0.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 or widen_factor < 1 or num_classes < 1:
            raise ValueError(f"Wide ResNet needs depth = 6n + 4 >= 10, widen factor >= 1 and "
                             f">= 1 class, got depth {depth}, widen factor {widen_factor}, "
                             f"{num_classes} classes (e.g. wrn40_4, wrn28_10)")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"Wide ResNet dropout must be in [0, 1), got {drop_rate}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def parse_wide_resnet(arch: str) -> Optional[Tuple[int, int]]:
    """(depth, widen factor) of a name `wrn<depth>_<width>` (e.g. wrn40_4), else None."""
    match = _NAME.fullmatch(arch)
    return (int(match.group(1)), int(match.group(2))) if match else None


def wide_resnet(arch: str, num_classes: int, drop_rate: float = DEFAULT_DROPOUT) -> WideResNet:
    """The Wide ResNet named `arch` (`wrn<depth>_<width>`, e.g. wrn40_4, wrn28_10)."""
    parsed = parse_wide_resnet(arch)
    if parsed is None:
        raise ValueError(f"'{arch}' is not a Wide ResNet name: use wrn<depth>_<width>, e.g. "
                         "wrn40_4 or wrn28_10")
    depth, width = parsed
    return WideResNet(depth, num_classes, width, drop_rate)


def wide_resnet_name(shapes: Dict[str, Tuple[int, ...]]) -> Optional[str]:
    """The `wrn<depth>_<width>` name whose parameters and buffers have exactly the names and
    `shapes` given (a state_dict's), read from its block count and first block's width; None
    when they are no Wide ResNet's."""
    blocks = {key.split(".")[2] for key in shapes if key.startswith("block1.layer.")}
    first = shapes.get("block1.layer.0.conv1.weight")
    if not blocks or first is None or first[0] % 16 or "fc.weight" not in shapes:
        return None
    name = f"wrn{6 * len(blocks) + 4}_{first[0] // 16}"
    with torch.device("meta"):
        candidate = wide_resnet(name, shapes["fc.weight"][0])
    own = {k: tuple(v.shape) for k, v in candidate.state_dict().items()}
    return name if own == shapes else None
