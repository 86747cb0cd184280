"""Wide residual network WRN-depth-k (Zagoruyko & Komodakis 2016), built as GEOM's published code
builds it (izikgo/AnomalyDetectionTransformations, models/wide_residual_network.py, Keras):

- a 3×3 convolution to 16 channels, then three groups of n = (depth − 4) / 6 pre-activation
  blocks of 16k, 32k and 64k channels (k = widen_factor), strides 1, 2, 2;
- a block: BN → ReLU → conv 3×3 (stride) → BN → ReLU → dropout → conv 3×3; the shortcut is the
  input where the channel count is kept, else a 1×1 convolution (stride) of the first BN → ReLU;
- BN → ReLU → average pooling over 8×8 windows → flatten → dense to the classes (logits here; the
  code ends in a softmax, which the method applies);
- convolutions without biases, Keras's "same" padding (TensorFlow's: a stride-2 3×3 convolution
  of an even side pads one pixel below / right only, see `SameConv2d`); convolution weights
  N(0, 2 / fan_in), the dense layer's U(±1 / √fan_in) and bias 0; BatchNorm momentum 0.9 in
  Keras's sense (0.1 in torch's), ε 1e-5. The code's L2 penalty (0.5·5e-4 on every weight, BN's
  γ and β and the dense bias included) is the optimiser's weight decay, set by the method.

Differences, for sizes the code never ran: the pooling window is min(8, the last map's side)
(a 16×16 input ends at 4×4, where Keras's 8×8 pooling would fail), and a stride-2 block whose
channel count is kept gets a 1×1 projection shortcut (the code's identity would not match in
shape; its configurations always change the channels there).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anomaly import AnomalyError


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one side of `size` pixels under TensorFlow's "same" rule: the
    output has ⌈size / stride⌉ pixels and an odd pixel of padding goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Bias-free Conv2d with Keras's padding="same" (TensorFlow's rule, `same_padding`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        (top, bottom), (left, right) = (same_padding(x.shape[-2], k, s), same_padding(x.shape[-1], k, s))
        if top == bottom and left == right:  # symmetric: the convolution pads, no copy
            return F.conv2d(x, self.weight, None, self.stride, (top, left))
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, None, self.stride)


class WideBasicBlock(nn.Module):
    """Pre-activation basic block (see the module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = batch_norm(in_channels)
        self.conv1 = SameConv2d(in_channels, out_channels, 3, stride)
        self.bn2 = batch_norm(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = SameConv2d(out_channels, out_channels, 3, 1)
        self.shortcut = (SameConv2d(in_channels, out_channels, 1, stride)
                         if in_channels != out_channels or stride != 1 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(act)))))
        return out + (x if self.shortcut is None else self.shortcut(act))


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


def wrn_blocks_per_group(depth: int) -> int:
    """n of a WRN of this depth (depth = 6n + 4, n ≥ 1); refuses other depths."""
    if depth < 10 or (depth - 4) % 6:
        raise AnomalyError(f"WideResNet depth={depth}: a wide residual network's depth is 6n + 4 "
                           "(10, 16, 22, 28, …)")
    return (depth - 4) // 6


class WideResNet(nn.Module):
    """x (B×C×S×S, `image_shape`) → B×out_features logits. depth = 6n + 4, widen_factor k ≥ 1,
    dropout between the two convolutions of each block."""

    def __init__(self, image_shape: Sequence[int], out_features: int, depth: int = 10,
                 widen_factor: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        in_channels, image_size, num_classes = int(image_shape[0]), int(image_shape[-1]), int(out_features)
        n = wrn_blocks_per_group(int(depth))
        if widen_factor < 1:
            raise AnomalyError(f"WideResNet widen_factor={widen_factor}: must be an integer ≥ 1")
        if not 0.0 <= dropout < 1.0:
            raise AnomalyError(f"WideResNet dropout={dropout}: must be in [0, 1)")
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = SameConv2d(in_channels, widths[0], 3)
        blocks, channels = [], widths[0]
        for width, stride in zip(widths[1:], (1, 2, 2)):
            for i in range(n):
                blocks.append(WideBasicBlock(channels, width, stride if i == 0 else 1, dropout))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = batch_norm(channels)
        side = math.ceil(math.ceil(image_size / 2) / 2)  # two stride-2 groups, "same" padding
        self.pool = min(8, side)
        pooled = (side // self.pool) ** 2
        self.fc = nn.Linear(channels * pooled, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The published code's initialisers (Keras): He normal convolutions, U(±1/√fan_in) dense
        weights, zero biases, BatchNorm γ = 1 and β = 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.conv1(x))))
        out = F.avg_pool2d(out, self.pool)
        return self.fc(out.flatten(1))
