"""Pasting the small square masks of detections into the image at full resolution.

A detection's ``(M, M)`` mask covers its box: mask cell ``(i, j)`` is centred
at ``(x1 + (j + 0.5) * w / M, y1 + (i + 0.5) * h / M)``. Each image pixel
whose centre lies in the box reads the mask there by bilinear interpolation
(the border cells extend to the box edge); pixels outside the box are 0. For
a box on integer coordinates this is exactly ``cv2.resize(mask, (w, h),
INTER_LINEAR)`` placed at the box.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def box_region(box: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the image pixels whose centres may lie in ``box`` (clipped to the image)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    h, w = shape
    x0, x_stop = max(0, math.ceil(x1 - 0.5)), min(w, math.ceil(x2 - 0.5))
    y0, y_stop = max(0, math.ceil(y1 - 0.5)), min(h, math.ceil(y2 - 0.5))
    return y0, max(y0, y_stop), x0, max(x0, x_stop)


def paste_mask(mask: torch.Tensor, box: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, np.ndarray]:
    """One ``(M, M)`` mask (probabilities) pasted under ``box`` in an image of ``shape``.

    Returns
    -------
    (int, int, ndarray)
        Top row and left column of the region, and its ``(rows, cols)`` float32
        values; the region holds every pixel the box covers (it may be empty).
    """
    y0, y_stop, x0, x_stop = box_region(box, shape)
    if y_stop <= y0 or x_stop <= x0:
        return y0, x0, np.zeros((max(0, y_stop - y0), max(0, x_stop - x0)), np.float32)
    m = mask.shape[-1]
    x1, y1, x2, y2 = (float(v) for v in box)
    # Mask-cell coordinates of the region's pixel centres.
    cols = (torch.arange(x0, x_stop, dtype=torch.float32) + 0.5 - x1) / max(x2 - x1, 1e-6) * m - 0.5
    rows = (torch.arange(y0, y_stop, dtype=torch.float32) + 0.5 - y1) / max(y2 - y1, 1e-6) * mask.shape[
        -2
    ] - 0.5
    gx = cols * (2.0 / (m - 1)) - 1.0 if m > 1 else torch.zeros_like(cols)
    gy = rows * (2.0 / (mask.shape[-2] - 1)) - 1.0 if mask.shape[-2] > 1 else torch.zeros_like(rows)
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)[None]
    values = F.grid_sample(
        mask.float()[None, None], grid, mode="bilinear", padding_mode="border", align_corners=True
    )
    return y0, x0, values[0, 0].numpy()


def paint_instances(
    masks: torch.Tensor,
    boxes: np.ndarray,
    scores: np.ndarray,
    shape: tuple[int, int],
    threshold: float = 0.5,
    min_area: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """A label image from detections: higher-scoring masks are painted over lower ones.

    Parameters
    ----------
    masks : Tensor
        ``(K, M, M)`` mask probabilities.
    boxes : ndarray
        ``(K, 4)`` boxes in the pixels of ``shape``.
    scores : ndarray
        ``(K,)`` confidences.
    shape : (int, int)
        Output image size.
    threshold : float
        A pixel belongs to a detection where its pasted probability exceeds this.
    min_area : int
        Detections left with fewer visible pixels are dropped.

    Returns
    -------
    (ndarray, ndarray)
        ``(H, W)`` int32 labels 1..N and the ``(N,)`` float32 scores of the ids.
    """
    labels = np.zeros(shape, np.int32)
    order = np.argsort(scores, kind="stable")  # ascending: the best is painted last
    for rank, k in enumerate(order, start=1):
        y0, x0, values = paste_mask(masks[k], boxes[k], shape)
        region = labels[y0 : y0 + values.shape[0], x0 : x0 + values.shape[1]]
        region[values > threshold] = rank
    counts = np.bincount(labels.ravel(), minlength=len(order) + 1)
    present = counts >= min_area
    present[0] = False
    new_id = np.zeros(len(order) + 1, np.int32)
    new_id[present] = np.arange(1, int(present.sum()) + 1)
    ranked = np.asarray(scores, np.float32)[order]
    return new_id[labels], ranked[present[1:]]
