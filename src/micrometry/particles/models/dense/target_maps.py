"""Training targets computed from a label image (0 background, one id per particle).

Every function takes an ``(H, W)`` integer label image and returns float32
maps of the same size. Ids need not be consecutive (a random crop drops some).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import find_boundaries


def foreground(labels: np.ndarray) -> np.ndarray:
    """1 on particles, 0 on background."""
    return (labels > 0).astype(np.float32)


def boundaries(labels: np.ndarray) -> np.ndarray:
    """1 on the outermost pixels of each particle (next to background or another particle)."""
    return find_boundaries(labels, mode="inner").astype(np.float32)


def normalised_distance(labels: np.ndarray) -> np.ndarray:
    """Distance to the particle's own edge, divided by its maximum: 1 at the core, ~0 at the rim.

    Normalising per particle makes small and large particles equally easy to
    split: a marker threshold of 0.5 finds every core.
    """
    interior = (labels > 0) & ~find_boundaries(labels, mode="inner")
    distance = ndimage.distance_transform_edt(interior).astype(np.float32)
    n = int(labels.max())
    if n == 0:
        return distance
    peak = ndimage.maximum(distance, labels, np.arange(1, n + 1)).astype(np.float32)
    per_pixel_peak = np.concatenate([[1.0], np.maximum(peak, 1.0)])[labels]
    return np.where(labels > 0, distance / per_pixel_peak, 0.0).astype(np.float32)


def centroids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-id centroid (y, x) and area, indexed by id (index 0 is background).

    Returns
    -------
    cy, cx, area : ndarray
        Arrays of length ``labels.max() + 1``; ids without pixels have area 0.
    """
    n = int(labels.max()) + 1
    flat = labels.ravel()
    yy, xx = np.indices(labels.shape, dtype=np.float64)
    area = np.bincount(flat, minlength=n).astype(np.float64)
    safe = np.maximum(area, 1.0)
    cy = np.bincount(flat, weights=yy.ravel(), minlength=n) / safe
    cx = np.bincount(flat, weights=xx.ravel(), minlength=n) / safe
    return cy, cx, area


def centre_offsets_and_heat(
    labels: np.ndarray, sigma_fraction: float = 0.15, min_sigma: float = 1.5, max_sigma: float = 8.0
) -> tuple[np.ndarray, np.ndarray]:
    """Offsets from every particle pixel to its particle's centroid, and a centre heat map.

    Parameters
    ----------
    labels : ndarray
        ``(H, W)`` label image.
    sigma_fraction, min_sigma, max_sigma : float
        The heat map is a Gaussian around each centroid, inside the particle only,
        with a width of ``sigma_fraction`` times the particle's equivalent
        diameter, clipped to ``[min_sigma, max_sigma]`` pixels.

    Returns
    -------
    offsets : ndarray
        ``(2, H, W)`` (dy, dx) in pixels; zero on background.
    heat : ndarray
        ``(H, W)`` in [0, 1]; exactly 1 on the pixel nearest each centroid that
        lies inside its particle (the positives of the heat-map loss).
    """
    cy, cx, area = centroids(labels)
    yy, xx = np.indices(labels.shape, dtype=np.float32)
    fg = labels > 0
    dy = np.where(fg, cy[labels] - yy, 0.0).astype(np.float32)
    dx = np.where(fg, cx[labels] - xx, 0.0).astype(np.float32)
    diameter = np.sqrt(4.0 * area / np.pi)
    sigma = np.clip(sigma_fraction * diameter, min_sigma, max_sigma)[labels]
    heat = np.where(fg, np.exp(-(dy**2 + dx**2) / (2.0 * sigma**2)), 0.0).astype(np.float32)
    # The pixel nearest each centroid is the one positive: it must belong to the particle.
    ids = np.flatnonzero(area[1:] > 0) + 1
    py = np.clip(np.rint(cy[ids]).astype(int), 0, labels.shape[0] - 1)
    px = np.clip(np.rint(cx[ids]).astype(int), 0, labels.shape[1] - 1)
    inside = labels[py, px] == ids
    heat[py[inside], px[inside]] = 1.0
    return np.stack([dy, dx]), heat
