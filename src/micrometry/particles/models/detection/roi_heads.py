"""The RoI heads: a two-layer box head (class score and box refinement) and a small FCN mask head."""

from __future__ import annotations

import torch
from torch import nn


class BoxHead(nn.Module):
    """Pooled ``(K, C, S, S)`` features -> class logits ``(K, n_classes)`` and deltas ``(K, 4)``.

    Box deltas are class-agnostic: the particle job has one class.
    """

    def __init__(self, channels: int, pool: int, hidden: int = 256, n_classes: int = 2):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * pool * pool, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self.cls_score = nn.Linear(hidden, n_classes)
        self.bbox_pred = nn.Linear(hidden, 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(x)
        return self.cls_score(h), self.bbox_pred(h)


class MaskHead(nn.Module):
    """Pooled ``(K, C, S, S)`` features -> mask logits ``(K, 2S, 2S)``: convolutions, then a 2x upsampling."""

    def __init__(self, channels: int, hidden: int = 64, depth: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Conv2d(channels if i == 0 else hidden, hidden, 3, padding=1), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(hidden, hidden, 2, stride=2)
        self.logits = nn.Conv2d(hidden, 1, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(torch.relu(self.upsample(self.convs(x))))[:, 0]
