"""Box geometry: areas, pairwise IoU, clipping, and the standard (dx, dy, dw, dh) box coding.

Boxes are ``(K, 4)`` float tensors ``(x1, y1, x2, y2)``; widths are ``x2 - x1``
(continuous coordinates, no "+1").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: the largest log-scale change a decoded box may get (as torchvision: exp(4.135) = 62.5)
MAX_LOG_SCALE = math.log(1000.0 / 16)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``(K,)`` areas (zero for degenerate boxes)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(len(a), len(b))`` intersection over union; 0 where both boxes are empty."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def clip_boxes(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Clip boxes to an image of ``size = (height, width)``."""
    h, w = size
    x = boxes[:, 0::2].clamp(0, w)
    y = boxes[:, 1::2].clamp(0, h)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def keep_min_size(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """Indices of boxes whose sides are both at least ``min_size``."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.nonzero((w >= min_size) & (h >= min_size)).flatten()


@dataclass(frozen=True)
class BoxCoder:
    """Encode boxes relative to reference boxes as ``(dx, dy, dw, dh)`` and back.

    ``dx = wx * (gx - rx) / rw``, ``dw = ww * log(gw / rw)`` (centres ``g``/``r``),
    the R-CNN parametrisation; ``weights`` scale the deltas so that their
    variance is about one for the loss.
    """

    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    max_log_scale: float = MAX_LOG_SCALE

    def encode(self, boxes: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Deltas ``(K, 4)`` that turn ``reference`` into ``boxes`` (both ``(K, 4)``)."""
        wx, wy, ww, wh = self.weights
        rw = (reference[:, 2] - reference[:, 0]).clamp(min=1e-6)
        rh = (reference[:, 3] - reference[:, 1]).clamp(min=1e-6)
        rx, ry = reference[:, 0] + 0.5 * rw, reference[:, 1] + 0.5 * rh
        gw = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-6)
        gh = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)
        gx, gy = boxes[:, 0] + 0.5 * gw, boxes[:, 1] + 0.5 * gh
        return torch.stack(
            [wx * (gx - rx) / rw, wy * (gy - ry) / rh, ww * torch.log(gw / rw), wh * torch.log(gh / rh)],
            dim=1,
        )

    def decode(self, deltas: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Boxes ``(K, 4)`` from deltas ``(K, 4)`` and reference boxes ``(K, 4)``."""
        wx, wy, ww, wh = self.weights
        rw = reference[:, 2] - reference[:, 0]
        rh = reference[:, 3] - reference[:, 1]
        rx, ry = reference[:, 0] + 0.5 * rw, reference[:, 1] + 0.5 * rh
        dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
        # Clamped so that an untrained head cannot overflow exp().
        dw = (deltas[:, 2] / ww).clamp(max=self.max_log_scale)
        dh = (deltas[:, 3] / wh).clamp(max=self.max_log_scale)
        cx, cy = rx + dx * rw, ry + dy * rh
        w, h = rw * torch.exp(dw), rh * torch.exp(dh)
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=1)


#: match() marks these in its result
BELOW_LOW, BETWEEN = -1, -2


def match(iou: torch.Tensor, high: float, low: float, allow_low_quality: bool) -> torch.Tensor:
    """For each prediction (column) the index of its best ground truth (row), or a negative mark.

    Parameters
    ----------
    iou : Tensor
        ``(G, P)`` IoU of ``G`` ground-truth boxes with ``P`` predictions.
    high, low : float
        IoU ``>= high`` matches; ``< low`` is :data:`BELOW_LOW` (background);
        in between is :data:`BETWEEN` (ignored).
    allow_low_quality : bool
        Also match each ground truth's best predictions (ties included) even
        below ``high``, so that no object is left without a positive (the RPN's rule).

    Returns
    -------
    Tensor
        ``(P,)`` int64.
    """
    if iou.shape[0] == 0:
        return torch.full((iou.shape[1],), BELOW_LOW, dtype=torch.int64, device=iou.device)
    best, matched = iou.max(dim=0)
    result = matched.clone()
    result[best < low] = BELOW_LOW
    result[(best >= low) & (best < high)] = BETWEEN
    if allow_low_quality:
        best_per_gt = iou.max(dim=1, keepdim=True).values
        _, columns = torch.nonzero((iou == best_per_gt) & (best_per_gt > 0), as_tuple=True)
        result[columns] = matched[columns]
    return result


def sample_balanced(
    labels: torch.Tensor, count: int, positive_fraction: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random positives (``labels >= 1``) and negatives (``labels == 0``) for a loss; others ignored.

    At most ``count * positive_fraction`` positives; negatives fill up to ``count``.

    Returns
    -------
    (Tensor, Tensor)
        Indices of the sampled positives and negatives.
    """
    positive = torch.nonzero(labels >= 1).flatten()
    negative = torch.nonzero(labels == 0).flatten()
    n_pos = min(positive.numel(), int(count * positive_fraction))
    n_neg = min(negative.numel(), count - n_pos)
    pick_pos = torch.randperm(positive.numel(), generator=generator)[:n_pos].to(labels.device)
    pick_neg = torch.randperm(negative.numel(), generator=generator)[:n_neg].to(labels.device)
    return positive[pick_pos], negative[pick_neg]
