"""Image preprocessing shared by training data and inference: one definition, so they never drift.

Every learned particle model sees images normalised by :func:`normalise_image`
and resized by :func:`resize` to its network scale; label images follow with
:func:`resize_labels`.
"""

from __future__ import annotations

import cv2
import numpy as np

#: What an exported model's ``model.json`` records under ``preprocessing`` (plus the model's scale).
DESCRIPTION = {
    "normalise": "whole-image 0.5th/99.5th intensity percentiles mapped to 0 and 1 (float32)",
    "resize": "by 'scale' (network pixels per image pixel): area averaging when shrinking, bilinear when enlarging",
}


def normalise_image(image: np.ndarray) -> np.ndarray:
    """Gray image to float32 with its 0.5th/99.5th percentiles at 0 and 1.

    Done on the whole image (never per tile) so that tiles agree; robust to
    8/16-bit data and to exposure differences between instruments.
    """
    x = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(x[:: max(1, x.shape[0] // 256), :: max(1, x.shape[1] // 256)], [0.5, 99.5])
    return ((x - np.float32(lo)) / np.float32(max(float(hi - lo), 1e-6))).astype(np.float32)


def resize(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize a float image by ``scale`` (area averaging when shrinking)."""
    if scale == 1.0:
        return image
    h, w = image.shape
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def resize_labels(labels: np.ndarray, scale: float) -> np.ndarray:
    """Resize a label image by ``scale`` (nearest neighbour keeps ids intact)."""
    if scale == 1.0:
        return labels
    h, w = labels.shape
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return cv2.resize(labels.astype(np.float32), size, interpolation=cv2.INTER_NEAREST).astype(np.int32)
