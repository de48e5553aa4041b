"""The seed's post-processing: snap the flat top surface to the case's exact level.

Every simulated depth map of a case has the same flat top (140 / 150 / 160 /
170 for Case_1..4), but a network's output wanders by a pixel or two there.
Pixels within 1 of that level (``>= background - 1``), cleaned by a 3x3
closing so that isolated gaps in the flat region are filled too, are set to the
level exactly.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def background_levels(depth: np.ndarray, case: np.ndarray) -> dict[int, float]:
    """The top-surface height of each case: the most common value of its depth maps' border pixels."""
    levels = {}
    for c in np.unique(case):
        maps = depth[case == c]
        border = np.concatenate(
            [maps[:, 0].ravel(), maps[:, -1].ravel(), maps[:, :, 0].ravel(), maps[:, :, -1].ravel()]
        )
        values, counts = np.unique(np.rint(border).astype(np.int64), return_counts=True)
        levels[int(c)] = float(values[counts.argmax()])
    return levels


def snap_background(depth: np.ndarray, level: np.ndarray | float) -> np.ndarray:
    """Set near-background pixels to the background level.

    Parameters
    ----------
    depth : ndarray, (N, H, W)
        Predicted heights.
    level : float or ndarray (N,)
        Each map's background (top surface) level.

    Returns
    -------
    ndarray, (N, H, W) float32
    """
    depth = np.asarray(depth, dtype=np.float32)
    level = np.broadcast_to(np.asarray(level, dtype=np.float32), (len(depth),))[:, None, None]
    near = (depth >= level - 1).astype(np.uint8)
    # Closing per image (size 1 along the batch axis); 'nearest' keeps the border from eroding.
    near = ndimage.grey_closing(near, size=(1, 3, 3), mode="nearest").astype(bool)
    return np.where(near, level, depth).astype(np.float32)
