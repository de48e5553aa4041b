"""Detection targets of a crop: one box and one binary mask per instance of its label image."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def detection_targets(labels: np.ndarray, min_area: int = 4) -> dict[str, torch.Tensor]:
    """``boxes (G, 4)`` float32 (pixel edges) and ``masks (G, H, W)`` uint8 of instances of at least ``min_area`` px."""
    n = int(labels.max(initial=0))
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    slices = ndimage.find_objects(labels, max_label=n)
    boxes, masks = [], []
    for i, sl in enumerate(slices, start=1):
        if sl is None or areas[i] < min_area:
            continue
        boxes.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
        masks.append(labels == i)
    if not boxes:
        return {"boxes": torch.zeros((0, 4)), "masks": torch.zeros((0, *labels.shape), dtype=torch.uint8)}
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "masks": torch.from_numpy(np.stack(masks).astype(np.uint8)),
    }
