"""Non-maximum suppression with tensor operations only (no compiled extension).

Greedy NMS keeps a box unless a kept, higher-scoring box overlaps it by more
than the threshold. Boxes are taken in score order in blocks of
:data:`BLOCK`: a block first loses every box that a box kept in earlier
blocks overlaps (one IoU matrix against the kept boxes), then the greedy rule
is settled inside the block as the fixed point of ``keep[j] = alive[j] and
not any(keep[i] and overlap[i, j], i before j)``, iterated on the block's
overlap matrix (each round settles at least one more box, so at most
``BLOCK`` rounds). Cost is about ``n * (kept + BLOCK)`` IoUs instead of the
``n**2`` of a full matrix, and the Python loop runs over blocks, not boxes.
"""

from __future__ import annotations

import torch

from micrometry.particles.models.detection.boxes import box_iou

#: boxes settled together
BLOCK = 128


def nms(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_keep: int | None = None
) -> torch.Tensor:
    """Indices of the boxes greedy NMS keeps, by decreasing score.

    Equal scores are ranked by index (a stable sort), so results are
    deterministic. ``boxes`` is ``(K, 4)``, ``scores`` ``(K,)``; returns int64
    ``(M,)``. With ``max_keep`` the search stops once that many are kept
    (the result is the first ``max_keep`` of the full answer).
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    ranked = boxes[order]
    kept: list[torch.Tensor] = []  # positions in `ranked`
    kept_boxes = ranked[:0]
    n_kept = 0
    for start in range(0, len(order), BLOCK):
        block = ranked[start : start + BLOCK]
        alive = torch.ones(len(block), dtype=torch.bool, device=boxes.device)
        if n_kept:
            alive = ~(box_iou(kept_boxes, block) > iou_threshold).any(dim=0)
        # suppresses[i, j]: block box i (ranked higher) suppresses block box j if i is kept.
        suppresses = torch.triu(box_iou(block, block) > iou_threshold, diagonal=1)
        keep = alive
        while True:
            new_keep = alive & ~(suppresses & keep[:, None]).any(dim=0)
            if torch.equal(new_keep, keep):
                break
            keep = new_keep
        index = torch.nonzero(keep).flatten()
        kept.append(index + start)
        kept_boxes = torch.cat([kept_boxes, block[index]])
        n_kept += len(index)
        if max_keep is not None and n_kept >= max_keep:
            break
    result = order[torch.cat(kept)]
    return result if max_keep is None else result[:max_keep]


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    groups: torch.Tensor,
    iou_threshold: float,
    max_keep: int | None = None,
) -> torch.Tensor:
    """NMS within each group (class, image or pyramid level) independently, in one call.

    Boxes of different groups are shifted apart so that they never overlap;
    returns the kept indices by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    span = boxes.max() - boxes.min() + 1
    shifted = boxes + (groups.to(boxes.dtype) * span)[:, None]
    return nms(shifted, scores, iou_threshold, max_keep)
