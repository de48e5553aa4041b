"""A small residual backbone with a feature pyramid (FPN), sized for two CPU cores.

The backbone halves the resolution five times (strides 2..32) with few
channels; the FPN turns the stride 4, 8, 16 and 32 stages into maps of one
width, each enriched by the coarser ones (top-down path with lateral 1x1
convolutions), which the RPN and the RoI heads read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or strided 1x1) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn_relu(in_channels, out_channels, stride)
        self.conv2 = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and in_channels == out_channels
            else nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x), inplace=True)


class FPNBackbone(nn.Module):
    """Gray image ``(B, 1, H, W)`` -> pyramid maps at strides 4, 8, 16, 32.

    Parameters
    ----------
    widths : tuple of int
        Channels of the stride 2, 4, 8, 16 and 32 stages.
    channels : int
        Width of every pyramid map.
    """

    strides = (4, 8, 16, 32)

    def __init__(self, widths: tuple[int, ...] = (16, 32, 48, 64, 96), channels: int = 64):
        super().__init__()
        if len(widths) != 5:
            raise ValueError("five stage widths (strides 2 to 32)")
        self.stem = conv_bn_relu(1, widths[0], stride=2)
        self.stages = nn.ModuleList(
            nn.Sequential(
                ResidualBlock(widths[i], widths[i + 1], stride=2), ResidualBlock(widths[i + 1], widths[i + 1])
            )
            for i in range(4)
        )
        self.lateral = nn.ModuleList(nn.Conv2d(w, channels, 1) for w in widths[1:])
        self.output = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in widths[1:])
        self.channels = channels

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return self.strides[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = self.stem(x)
        stages = []
        for stage in self.stages:
            y = stage(y)
            stages.append(y)
        top = self.lateral[-1](stages[-1])
        pyramid = [self.output[-1](top)]
        for i in range(len(stages) - 2, -1, -1):
            top = self.lateral[i](stages[i]) + F.interpolate(top, size=stages[i].shape[-2:], mode="nearest")
            pyramid.insert(0, self.output[i](top))
        return pyramid
