"""The standard Mask R-CNN losses: RPN objectness and boxes, RoI classes and boxes, masks.

Targets come from matching predictions (anchors or proposals) to the ground
truth by IoU (:func:`~.boxes.match`) and a balanced random sample
(:func:`~.boxes.sample_balanced`); box errors are smooth L1 on the coded
deltas (:class:`~.boxes.BoxCoder`), normalised by the number of sampled
predictions as in the reference implementations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from micrometry.particles.models.detection.boxes import BoxCoder, box_iou, match, sample_balanced
from micrometry.particles.models.detection.roi_align import roi_align

#: smooth L1 transition point of the box losses (Detectron's 1/9)
SMOOTH_L1_BETA = 1.0 / 9


def rpn_loss(
    objectness: torch.Tensor,
    deltas: torch.Tensor,
    anchors: torch.Tensor,
    gt_boxes: list[torch.Tensor],
    coder: BoxCoder,
    batch_per_image: int = 256,
    positive_fraction: float = 0.5,
    high: float = 0.7,
    low: float = 0.3,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Objectness (binary cross-entropy) and box (smooth L1) losses of the RPN.

    Parameters
    ----------
    objectness : Tensor
        ``(B, N)`` logits for the ``N`` anchors of every image.
    deltas : Tensor
        ``(B, N, 4)`` predicted deltas.
    anchors : Tensor
        ``(N, 4)``, shared by the images of the batch.
    gt_boxes : list of Tensor
        ``(G_b, 4)`` per image.
    """
    sampled_pos, sampled_neg, targets = [], [], []
    for b, boxes in enumerate(gt_boxes):
        matched = match(box_iou(boxes, anchors), high, low, allow_low_quality=True)
        labels = (matched >= 0).to(torch.int64)
        labels[matched == -2] = -1
        pos, neg = sample_balanced(labels, batch_per_image, positive_fraction, generator)
        sampled_pos.append(pos + b * anchors.shape[0])
        sampled_neg.append(neg + b * anchors.shape[0])
        targets.append(
            coder.encode(boxes[matched[pos]], anchors[pos]) if pos.numel() else anchors.new_zeros((0, 4))
        )
    pos, neg = torch.cat(sampled_pos), torch.cat(sampled_neg)
    flat_obj, flat_deltas = objectness.reshape(-1), deltas.reshape(-1, 4)
    sampled = torch.cat([pos, neg])
    labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).to(flat_obj.dtype)
    n = max(sampled.numel(), 1)
    obj_loss = F.binary_cross_entropy_with_logits(flat_obj[sampled], labels, reduction="sum") / n
    box_loss = (
        F.smooth_l1_loss(flat_deltas[pos], torch.cat(targets), beta=SMOOTH_L1_BETA, reduction="sum") / n
    )
    return obj_loss, box_loss


def roi_targets(
    proposals: list[torch.Tensor],
    gt_boxes: list[torch.Tensor],
    batch_per_image: int = 256,
    positive_fraction: float = 0.25,
    iou_threshold: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Sample proposals for the RoI heads (ground-truth boxes added to them).

    Returns
    -------
    (list, list, list)
        Per image: the sampled boxes ``(S, 4)``, their class (1 particle,
        0 background) and the index of the matched ground truth (-1 for background).
    """
    boxes_out, labels_out, matched_out = [], [], []
    for props, gt in zip(proposals, gt_boxes, strict=False):
        props = torch.cat([props, gt])
        matched = match(box_iou(gt, props), iou_threshold, iou_threshold, allow_low_quality=False)
        labels = (matched >= 0).to(torch.int64)
        pos, neg = sample_balanced(labels, batch_per_image, positive_fraction, generator)
        keep = torch.cat([pos, neg])
        boxes_out.append(props[keep])
        labels_out.append(labels[keep])
        matched_out.append(torch.where(labels[keep] > 0, matched[keep], torch.full_like(matched[keep], -1)))
    return boxes_out, labels_out, matched_out


def box_head_loss(
    class_logits: torch.Tensor,
    deltas: torch.Tensor,
    boxes: list[torch.Tensor],
    labels: list[torch.Tensor],
    matched: list[torch.Tensor],
    gt_boxes: list[torch.Tensor],
    coder: BoxCoder,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classification (cross-entropy) and class-agnostic box (smooth L1) losses of the box head."""
    all_labels = torch.cat(labels)
    cls_loss = F.cross_entropy(class_logits, all_labels)
    targets = torch.cat(
        [
            coder.encode(gt[m[lab > 0]], b[lab > 0])
            for b, lab, m, gt in zip(boxes, labels, matched, gt_boxes, strict=False)
        ]
    )
    pos = torch.nonzero(all_labels > 0).flatten()
    box_loss = F.smooth_l1_loss(deltas[pos], targets, beta=SMOOTH_L1_BETA, reduction="sum") / max(
        all_labels.numel(), 1
    )
    return cls_loss, box_loss


def mask_targets(
    gt_masks: torch.Tensor, boxes: torch.Tensor, matched: torch.Tensor, size: int
) -> torch.Tensor:
    """The part of each matched ground-truth mask under its box, resampled to ``(size, size)`` (soft values)."""
    rois = torch.cat([matched[:, None].to(boxes.dtype), boxes], dim=1)
    return roi_align(gt_masks[:, None].to(boxes.dtype), rois, size, 1.0, 2)[:, 0]


def mask_loss(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-pixel binary cross-entropy of the positive RoIs' masks ``(P, M, M)``."""
    if targets.numel() == 0:
        return mask_logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(mask_logits, targets)
