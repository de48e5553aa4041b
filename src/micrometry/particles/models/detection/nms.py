"""Non-maximum suppression with tensor operations only (no compiled extension).

Greedy NMS keeps a box unless a kept, higher-scoring box overlaps it by more
than the threshold. Instead of a Python loop over boxes, the keep vector is
found as the fixed point of ``keep[j] = not any(keep[i] and overlap[i, j], i
before j)``, iterated on the whole overlap matrix at once: each round settles
at least one more box in score order, and in practice a handful of rounds
settle them all (chains of suppressions are short).
"""

from __future__ import annotations

import torch

from micrometry.particles.models.detection.boxes import box_iou


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes greedy NMS keeps, by decreasing score.

    Equal scores are ranked by index (a stable sort), so results are
    deterministic. ``boxes`` is ``(K, 4)``, ``scores`` ``(K,)``; returns int64 ``(M,)``.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    ranked = boxes[order]
    # suppresses[i, j]: box i (higher ranked) would suppress box j if i is kept.
    suppresses = torch.triu(box_iou(ranked, ranked) > iou_threshold, diagonal=1)
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    while True:
        # keep[j] is decided once every box ranked before it is; the iteration reaches that fixed point.
        suppressed = (suppresses & keep[:, None]).any(dim=0)
        new_keep = ~suppressed
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return order[keep]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """NMS within each group (class, image or pyramid level) independently, in one call.

    Boxes of different groups are shifted apart so that they never overlap;
    returns the kept indices by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    span = boxes.max() - torch.minimum(boxes.min(), boxes.new_zeros(())) + 1
    shifted = boxes + (groups.to(boxes.dtype) * span)[:, None]
    return nms(shifted, scores, iou_threshold)
