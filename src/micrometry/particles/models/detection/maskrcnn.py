"""Mask R-CNN (and Cascade Mask R-CNN) in plain PyTorch: FPN backbone, RPN, box heads, mask head.

With several ``stage_ious`` the box head becomes a cascade (Cai and
Vasconcelos, 2018): each stage refines the previous stage's boxes and is
trained on them with a stricter IoU for positives, so the last stage
localises well at high IoU (what AP75 rewards); scores average the stages.

Training: ``model(images, targets)`` returns the five losses. Inference:
``model(images)`` returns, per image, the detected boxes, their scores and
``(K, M, M)`` mask probabilities (paste them with :mod:`.paste`).
Images are ``(B, 1, H, W)`` gray, normalised to about [0, 1]
(:func:`~micrometry.particles.models.dense.normalise_image`), with sides that
are multiples of :attr:`MaskRCNN.multiple`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from micrometry.particles.models.detection.anchors import AnchorGenerator
from micrometry.particles.models.detection.boxes import BoxCoder, clip_boxes, keep_min_size
from micrometry.particles.models.detection.fpn import FPNBackbone
from micrometry.particles.models.detection.losses import (
    box_head_loss,
    mask_loss,
    mask_targets,
    roi_targets,
)
from micrometry.particles.models.detection.nms import nms
from micrometry.particles.models.detection.roi_align import multiscale_roi_align
from micrometry.particles.models.detection.roi_heads import BoxHead, MaskHead
from micrometry.particles.models.detection.rpn import RegionProposalNetwork, RPNSettings


@dataclass
class MaskRCNNConfig:
    """Architecture and thresholds (stored in checkpoints: it alone rebuilds the model).

    Sizes are in network pixels (the image after ``--scale``): the defaults
    suit particles of about 6 to 100 px.
    """

    widths: list[int] = field(default_factory=lambda: [16, 32, 48, 64, 96])
    channels: int = 64
    anchor_sizes: list[float] = field(default_factory=lambda: [10.0, 20.0, 40.0, 80.0])
    anchor_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    box_pool: int = 7
    mask_pool: int = 14
    box_hidden: int = 256
    mask_hidden: int = 32
    rois_per_image: int = 128
    #: positive RoIs per image that train the mask head (a random subset: the head costs most of a step)
    mask_rois_per_image: int = 24
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections: int = 300
    pre_nms: int = 1000
    post_nms_train: int = 600
    post_nms_test: int = 1000
    #: FPN level rule: a box of this side (pixels) is pooled from level 3 (stride 8)
    canonical_size: float = 32.0
    #: IoU for positives of each box stage: one stage is Mask R-CNN, (0.5, 0.6, 0.7) Cascade Mask R-CNN
    stage_ious: list[float] = field(default_factory=lambda: [0.5])
    #: loss weight of each box stage
    stage_weights: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25])


#: box-delta weights of successive cascade stages (tighter deltas as boxes improve, as in the paper)
STAGE_CODERS = [(10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)]


class MaskRCNN(nn.Module):
    """The detector; see the module docstring for the calling conventions."""

    def __init__(self, config: MaskRCNNConfig | None = None):
        super().__init__()
        self.config = c = config or MaskRCNNConfig()
        if not 1 <= len(c.stage_ious) <= len(STAGE_CODERS):
            raise ValueError(f"1 to {len(STAGE_CODERS)} box stages")
        self.backbone = FPNBackbone(tuple(c.widths), c.channels)
        strides = self.backbone.strides
        anchors = AnchorGenerator(tuple((s,) for s in c.anchor_sizes), tuple(c.anchor_ratios), strides)
        self.rpn = RegionProposalNetwork(
            anchors,
            c.channels,
            RPNSettings(
                pre_nms_train=c.pre_nms,
                pre_nms_test=c.pre_nms,
                post_nms_train=c.post_nms_train,
                post_nms_test=c.post_nms_test,
            ),
        )
        self.box_heads = nn.ModuleList(BoxHead(c.channels, c.box_pool, c.box_hidden) for _ in c.stage_ious)
        self.box_coders = [BoxCoder(w) for w in STAGE_CODERS[: len(c.stage_ious)]]
        self.mask_head = MaskHead(c.channels, c.mask_hidden)

    @property
    def multiple(self) -> int:
        return self.backbone.multiple

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    def _pool(self, features: list[torch.Tensor], boxes: list[torch.Tensor], size: int) -> torch.Tensor:
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
        return multiscale_roi_align(
            features,
            list(self.backbone.strides),
            rois,
            size,
            canonical_size=self.config.canonical_size,
            canonical_level=3,
        )

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None):
        """Losses (``targets`` given: dicts with ``boxes (G, 4)`` and ``masks (G, H, W)``) or detections."""
        if targets is None and self.training:
            raise ValueError("training needs targets")
        size = (int(images.shape[-2]), int(images.shape[-1]))
        features = self.backbone((images - 0.5) / 0.25)
        gt_boxes = None if targets is None else [t["boxes"].to(images.dtype) for t in targets]
        proposals, losses = self.rpn(features, size, gt_boxes)
        if targets is None:
            return self.detect(features, proposals, size)
        return {**losses, **self.roi_losses(features, proposals, targets, size)}

    def _refine(
        self, deltas: torch.Tensor, boxes: list[torch.Tensor], stage: int, size: tuple[int, int]
    ) -> list[torch.Tensor]:
        """Per image, the boxes a stage's deltas make of its input boxes (clipped, no gradient)."""
        decoded = self.box_coders[stage].decode(deltas.detach(), torch.cat(boxes))
        return [clip_boxes(part, size) for part in decoded.split([len(b) for b in boxes])]

    def roi_losses(
        self,
        features: list[torch.Tensor],
        proposals: list[torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
        size: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        c = self.config
        gt_boxes = [t["boxes"].to(features[0].dtype) for t in targets]
        losses: dict[str, torch.Tensor] = {}
        inputs = proposals
        for stage, (head, iou) in enumerate(zip(self.box_heads, c.stage_ious, strict=False)):
            boxes, labels, matched = roi_targets(inputs, gt_boxes, c.rois_per_image, iou_threshold=iou)
            class_logits, deltas = head(self._pool(features, boxes, c.box_pool))
            cls_loss, box_loss = box_head_loss(
                class_logits, deltas, boxes, labels, matched, gt_boxes, self.box_coders[stage]
            )
            suffix = "" if stage == 0 else f"_{stage + 1}"
            weight = c.stage_weights[stage] if len(c.stage_ious) > 1 else 1.0
            losses[f"box_class{suffix}"] = weight * cls_loss
            losses[f"box_delta{suffix}"] = weight * box_loss
            if stage == 0:
                mask_rois = (boxes, labels, matched)
            if stage + 1 < len(self.box_heads):
                inputs = self._refine(deltas, boxes, stage, size)
        losses["mask"] = self.mask_loss(features, targets, *mask_rois)
        return losses

    def mask_loss(
        self,
        features: list[torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
        boxes: list[torch.Tensor],
        labels: list[torch.Tensor],
        matched: list[torch.Tensor],
    ) -> torch.Tensor:
        """The mask head's loss on a random subset of the first stage's positive RoIs."""
        c = self.config
        # Sampled positives come in random order: the first few are a random subset.
        chosen = [torch.nonzero(lab > 0).flatten()[: c.mask_rois_per_image] for lab in labels]
        positive = [b[i] for b, i in zip(boxes, chosen, strict=False)]
        if sum(len(p) for p in positive) == 0:
            return sum(p.sum() for p in self.mask_head.parameters()) * 0.0
        logits = self.mask_head(self._pool(features, positive, c.mask_pool))
        wanted = torch.cat(
            [
                mask_targets(t["masks"], p, m[i], 2 * c.mask_pool)
                for t, p, m, i in zip(targets, positive, matched, chosen, strict=False)
            ]
        )
        return mask_loss(logits, wanted)

    def detect(
        self, features: list[torch.Tensor], proposals: list[torch.Tensor], size: tuple[int, int]
    ) -> list[dict[str, torch.Tensor]]:
        """Score and refine the proposals through the stages, keep the best after NMS, predict their masks."""
        c = self.config
        boxes_in, score_sum = proposals, None
        for stage, head in enumerate(self.box_heads):
            class_logits, deltas = head(self._pool(features, boxes_in, c.box_pool))
            scores = torch.softmax(class_logits, dim=1)[:, 1]
            score_sum = scores if score_sum is None else score_sum + scores
            boxes_in = self._refine(deltas, boxes_in, stage, size)
        scores_all = (score_sum / len(self.box_heads)).split([len(b) for b in boxes_in])
        out = []
        for boxes, scores in zip(boxes_in, scores_all, strict=False):
            keep = torch.nonzero(scores > c.score_threshold).flatten()
            keep = keep[keep_min_size(boxes[keep], 1.0)]
            boxes, scores = boxes[keep], scores[keep]
            keep = nms(boxes, scores, c.nms_threshold, max_keep=c.detections)
            out.append({"boxes": boxes[keep], "scores": scores[keep]})
        kept = [o["boxes"] for o in out]
        if sum(len(b) for b in kept):
            masks = torch.sigmoid(self.mask_head(self._pool(features, kept, c.mask_pool)))
        else:
            masks = features[0].new_zeros((0, 2 * c.mask_pool, 2 * c.mask_pool))
        start = 0
        for o in out:
            o["masks"] = masks[start : start + len(o["boxes"])]
            start += len(o["boxes"])
        return out
