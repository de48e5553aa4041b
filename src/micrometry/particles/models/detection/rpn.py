"""The region proposal network: objectness and box deltas for every anchor, then proposals.

Proposals are, per image, the best-scoring anchors of each pyramid level,
decoded, clipped to the image, stripped of tiny boxes and thinned by NMS
within each level; the best ``post_nms`` of all levels go to the RoI heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from micrometry.particles.models.detection.anchors import AnchorGenerator
from micrometry.particles.models.detection.boxes import BoxCoder, clip_boxes, keep_min_size
from micrometry.particles.models.detection.losses import rpn_loss
from micrometry.particles.models.detection.nms import batched_nms


class RPNHead(nn.Module):
    """A shared 3x3 convolution, then per-anchor objectness logits and box deltas on every level."""

    def __init__(self, channels: int, anchors_per_cell: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, anchors_per_cell, 1)
        self.deltas = nn.Conv2d(channels, 4 * anchors_per_cell, 1)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level: objectness ``(B, h * w * A)`` and deltas ``(B, h * w * A, 4)``, cell-major like the anchors."""
        objectness, deltas = [], []
        for x in features:
            t = torch.relu(self.conv(x))
            o, d = self.objectness(t), self.deltas(t)
            b, a, h, w = o.shape
            objectness.append(o.permute(0, 2, 3, 1).reshape(b, h * w * a))
            deltas.append(d.reshape(b, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, 4))
        return objectness, deltas


@dataclass
class RPNSettings:
    """Proposal counts and thresholds (training / inference where they differ)."""

    pre_nms_train: int = 1000
    pre_nms_test: int = 1000
    post_nms_train: int = 1000
    post_nms_test: int = 1000
    nms_threshold: float = 0.7
    min_size: float = 1.0
    batch_per_image: int = 256
    positive_fraction: float = 0.5


class RegionProposalNetwork(nn.Module):
    """Anchors + :class:`RPNHead` + proposal selection (+ losses in training)."""

    def __init__(self, anchors: AnchorGenerator, channels: int, settings: RPNSettings | None = None):
        super().__init__()
        self.anchors = anchors
        self.head = RPNHead(channels, anchors.per_cell)
        self.settings = settings or RPNSettings()
        self.coder = BoxCoder()

    def proposals(
        self,
        objectness: list[torch.Tensor],
        deltas: list[torch.Tensor],
        anchors: list[torch.Tensor],
        image_size: tuple[int, int],
    ) -> list[torch.Tensor]:
        """``(P_b, 4)`` proposals per image, best first."""
        s = self.settings
        pre = s.pre_nms_train if self.training else s.pre_nms_test
        post = s.post_nms_train if self.training else s.post_nms_test
        out = []
        for b in range(objectness[0].shape[0]):
            boxes, scores, levels = [], [], []
            for level, (obj, delta, anchor) in enumerate(zip(objectness, deltas, anchors, strict=False)):
                top = torch.topk(obj[b], min(pre, obj.shape[1])).indices
                boxes.append(clip_boxes(self.coder.decode(delta[b, top], anchor[top]), image_size))
                scores.append(obj[b, top])
                levels.append(torch.full_like(top, level))
            boxes_b, scores_b, levels_b = torch.cat(boxes), torch.cat(scores), torch.cat(levels)
            keep = keep_min_size(boxes_b, s.min_size)
            boxes_b, scores_b, levels_b = boxes_b[keep], scores_b[keep], levels_b[keep]
            keep = batched_nms(boxes_b, scores_b, levels_b, s.nms_threshold, max_keep=post)
            out.append(boxes_b[keep])
        return out

    def forward(
        self,
        features: list[torch.Tensor],
        image_size: tuple[int, int],
        gt_boxes: list[torch.Tensor] | None = None,
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Proposals per image (no gradient flows through them) and, given ``gt_boxes``, the RPN losses."""
        objectness, deltas = self.head(features)
        anchors = self.anchors([tuple(f.shape[-2:]) for f in features], features[0].device)
        with torch.no_grad():
            proposals = self.proposals(
                [o.detach() for o in objectness], [d.detach() for d in deltas], anchors, image_size
            )
        losses: dict[str, torch.Tensor] = {}
        if gt_boxes is not None:
            s = self.settings
            obj_loss, box_loss = rpn_loss(
                torch.cat(objectness, 1),
                torch.cat(deltas, 1),
                torch.cat(anchors),
                gt_boxes,
                self.coder,
                s.batch_per_image,
                s.positive_fraction,
            )
            losses = {"rpn_objectness": obj_loss, "rpn_box": box_loss}
        return proposals, losses
