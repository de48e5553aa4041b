"""Per-particle flags: touching particles and probable agglomerates.

Image analysis measures what the segmentation separated; ISO 13322-1 asks that
particles in contact and agglomerates be reported, not silently measured as
primary particles. Two flags, each a documented rule (docs/morphometry.md,
"Agglomerate and touching flags"):

* ``Touching``: another particle lies within :data:`TOUCH_GAP_PX` pixels of this
  one's mask (it touches, or only a segmentation line separates them). A fact of
  the label image; the sizes of touching particles depend on where the
  segmentation drew the line between them.
* ``Agglomerate``: the object is larger than the typical particle and
  non-convex, as particles fused into one object are: EqDiam at least
  :data:`AGGLOMERATE_SIZE` times the median EqDiam of the image, and Solidity
  below :data:`AGGLOMERATE_SOLIDITY` or Convexity below
  :data:`AGGLOMERATE_CONVEXITY`. Two equal touching discs segmented as one give
  EqDiam 1.41 x, Solidity 0.88 and Convexity 0.84 (discs of radius 12 px); one disc or ellipse gives
  Solidity and Convexity near 1 whatever its size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: A particle touches another when their masks are at most this many pixels apart
#: (1: a one-pixel segmentation line between them still counts as contact).
TOUCH_GAP_PX = 1

#: Agglomerate rule: EqDiam >= this x the image's median EqDiam ...
AGGLOMERATE_SIZE = 1.3
#: ... and Solidity below this ...
AGGLOMERATE_SOLIDITY = 0.90
#: ... or Convexity below this.
AGGLOMERATE_CONVEXITY = 0.90


def touching_ids(labels: np.ndarray, gap: int = TOUCH_GAP_PX) -> np.ndarray:
    """Ids of the particles with another particle within ``gap`` pixels.

    Parameters
    ----------
    labels : ndarray
        ``(H, W)`` integer label image, 0 background.
    gap : int
        Largest background gap (pixels, chessboard distance) still counted as contact.

    Returns
    -------
    ndarray
        Sorted unique ids.
    """
    labels = np.asarray(labels)
    reach = gap + 1
    found: list[np.ndarray] = []
    h, w = labels.shape
    # every offset within the reach, half of them (the pair (a, b) is seen from a's side and b's)
    for dy in range(0, reach + 1):
        for dx in range(-reach, reach + 1):
            if (dy == 0 and dx <= 0) or dy >= h or abs(dx) >= w:
                continue
            a = labels[: h - dy, max(0, -dx) : w - max(0, dx)]
            b = labels[dy:, max(0, dx) : w - max(0, -dx)]
            contact = (a > 0) & (b > 0) & (a != b)
            if contact.any():
                found += [a[contact], b[contact]]
    return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=labels.dtype)


def agglomerate_mask(table: pd.DataFrame, median_diameter: float | None = None) -> np.ndarray:
    """The agglomerate rule on a measurement table (``EqDiam``, ``Solidity``, ``Convexity``).

    Parameters
    ----------
    table : DataFrame
        Rows of :func:`~micrometry.particles.morphometry.measure_labels`.
    median_diameter : float, optional
        The typical particle's EqDiam; default the table's median.

    Returns
    -------
    ndarray of bool
        One flag per row.
    """
    if len(table) == 0:
        return np.zeros(0, dtype=bool)
    size = table["EqDiam"].to_numpy(dtype=float)
    median = float(np.nanmedian(size)) if median_diameter is None else float(median_diameter)
    concave = (table["Solidity"].to_numpy(dtype=float) < AGGLOMERATE_SOLIDITY) | (
        table["Convexity"].to_numpy(dtype=float) < AGGLOMERATE_CONVEXITY
    )
    return (size >= AGGLOMERATE_SIZE * median) & concave


def add_flags(table: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """``table`` with boolean ``Touching`` and ``Agglomerate`` columns (rule in the module doc)."""
    table = table.copy()
    table["Touching"] = np.isin(table["Label"].to_numpy(), touching_ids(labels))
    table["Agglomerate"] = agglomerate_mask(table)
    return table
