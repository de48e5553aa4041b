"""From predicted maps to instance labels: the inference half of each dense model.

The network predicts at a reduced resolution (``scale``); both decoders find
the instances there, where it is cheap, and draw their pixels at the image's
own resolution from bilinearly upsampled foreground (and offset) maps, so that
outlines stay smooth. They return an ``(H, W)`` int32 label image (0
background, 1..N) and one score per instance.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from skimage.segmentation import expand_labels, watershed


def upsample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to ``shape`` (pixel centres aligned, as in the downscaling)."""
    if image.shape == tuple(shape):
        return image
    return cv2.resize(
        np.ascontiguousarray(image, dtype=np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR
    )


def upsample_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label image to ``shape``."""
    if labels.shape == tuple(shape):
        return labels
    return cv2.resize(
        labels.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST
    ).astype(np.int32)


def relabel_by_size(
    labels: np.ndarray, quality: np.ndarray, min_area: int, min_score: float = 0.0, stats: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Drop instances smaller than ``min_area`` or scoring below ``min_score``, renumber the rest 1..N.

    Parameters
    ----------
    labels : ndarray
        ``(H, W)`` ids, possibly with gaps.
    quality : ndarray
        ``(H, W)`` per-pixel confidence; an instance's score is its mean.
    min_area : int
        Smaller instances are noise.
    min_score : float
        Instances whose score (mean ``quality``) is lower are dropped.
    stats : dict, optional
        Receives ``candidates`` (instances of at least ``min_area``) and
        ``below_score`` (how many of them ``min_score`` dropped): how much the
        model doubted (:mod:`micrometry.particles.reliability`).

    Returns
    -------
    labels : ndarray
        ``(H, W)`` int32, ids 1..N consecutive.
    scores : ndarray
        ``(N,)`` float32.
    """
    flat = labels.ravel()
    n = int(flat.max()) + 1 if flat.size else 1
    area = np.bincount(flat, minlength=n)
    total = np.bincount(flat, weights=quality.ravel(), minlength=n)
    mean = total / np.maximum(area, 1)
    large = area >= max(min_area, 1)
    large[0] = False
    keep = large & (mean >= min_score)
    if stats is not None:
        stats.update(candidates=int(large.sum()), below_score=int((large & ~keep).sum()))
    new_id = np.zeros(n, dtype=np.int32)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new_id[labels], mean[keep].astype(np.float32)


def watershed_from_maps(
    fg_prob: np.ndarray,
    boundary_prob: np.ndarray,
    distance: np.ndarray,
    shape: tuple[int, int] | None = None,
    fg_threshold: float = 0.5,
    marker_threshold: float = 0.5,
    min_area: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Marker-controlled watershed on the predicted normalised distance.

    Markers are the connected cores (distance above ``marker_threshold``, away
    from predicted boundaries); the flooding fills the predicted foreground.
    The watershed runs at the maps' resolution; at ``shape`` (the image's),
    each instance takes the upsampled foreground pixels nearest to it.
    """
    shape = fg_prob.shape if shape is None else tuple(shape)
    mask = fg_prob > fg_threshold
    markers, _ = ndimage.label((distance > marker_threshold) & (boundary_prob < 0.5) & mask)
    labels = watershed(-distance, markers, mask=mask)
    if shape != fg_prob.shape:
        fg_full = upsample(fg_prob, shape)
        grown = upsample_labels(expand_labels(labels, 2), shape)
        labels = np.where(fg_full > fg_threshold, grown, 0)
        fg_prob, boundary_prob = fg_full, upsample(boundary_prob, shape)
    return relabel_by_size(labels, fg_prob * (1.0 - 0.5 * boundary_prob), min_area)


def find_peaks(heat: np.ndarray, radius: int, threshold: float) -> np.ndarray:
    """Local maxima of ``heat`` above ``threshold`` within a ``(2 radius + 1)`` window.

    Returns
    -------
    ndarray
        ``(K, 2)`` int (row, column), strongest first.
    """
    heat = np.ascontiguousarray(heat, dtype=np.float32)
    # The window maximum by OpenCV's separable dilation (a torch max-pool of a 7x7 window on one
    # channel costs ~10x more); outside the map counts as -inf, as in a padded max-pool.
    side = 2 * radius + 1
    pooled = cv2.dilate(
        heat, np.ones((side, side), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=-np.inf
    )
    rows, cols = np.nonzero((heat == pooled) & (heat > threshold))
    order = np.argsort(-heat[rows, cols], kind="stable")
    return np.stack([rows[order], cols[order]], axis=1)


def instances_from_centres(
    fg_prob: np.ndarray,
    heat: np.ndarray,
    offsets: np.ndarray,
    shape: tuple[int, int] | None = None,
    peak_radius: int = 3,
    peak_threshold: float = 0.1,
    fg_threshold: float = 0.5,
    min_area: int = 16,
    min_score: float = 0.0,
    stats: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Group foreground pixels by the centre their offset vectors point at.

    Every foreground pixel votes for a position (its coordinates plus its
    predicted offset); it joins the detected centre nearest that position. The
    nearest-centre look-up is a Voronoi map of the centres built by one
    Euclidean distance transform, so the cost is linear in the pixels.

    Parameters
    ----------
    fg_prob, heat : ndarray
        ``(h, w)`` probabilities of foreground and of "this is a centre".
    offsets : ndarray
        ``(2, h, w)`` predicted (dy, dx) to the own centre, in pixels of the maps.
    shape : tuple, optional
        The image's ``(H, W)`` when the maps are smaller: centres are found on
        the maps, pixels are labelled at ``shape``.
    peak_radius : int
        Two centres closer than this (in map pixels) are one particle.
    min_area : int
        In pixels of ``shape``.
    min_score : float
        Instances scoring lower are dropped (see the score below).
    """
    h, w = fg_prob.shape
    shape = (h, w) if shape is None else tuple(shape)
    peaks = find_peaks(heat, peak_radius, peak_threshold)
    if len(peaks) == 0:
        return np.zeros(shape, np.int32), np.zeros(0, np.float32)
    seeds = np.ones((h, w), dtype=bool)
    seeds[peaks[:, 0], peaks[:, 1]] = False
    # For every position, the coordinates of the nearest centre; ids by position.
    _, (near_r, near_c) = ndimage.distance_transform_edt(seeds, return_indices=True)
    centre_id = np.zeros((h, w), dtype=np.int32)
    centre_id[peaks[:, 0], peaks[:, 1]] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    voronoi = centre_id[near_r, near_c]

    # Votes at the image's resolution, looked up in the maps' Voronoi cells.
    sy, sx = h / shape[0], w / shape[1]
    fg_full = upsample(fg_prob, shape)
    rows, cols = np.nonzero(fg_full > fg_threshold)
    map_r, map_c = (rows + 0.5) * sy - 0.5, (cols + 0.5) * sx - 0.5
    dy = upsample(offsets[0], shape)[rows, cols] if shape != (h, w) else offsets[0, rows, cols]
    dx = upsample(offsets[1], shape)[rows, cols] if shape != (h, w) else offsets[1, rows, cols]
    vote_r = np.clip(np.rint(map_r + dy), 0, h - 1).astype(np.intp)
    vote_c = np.clip(np.rint(map_c + dx), 0, w - 1).astype(np.intp)
    labels = np.zeros(shape, dtype=np.int32)
    labels[rows, cols] = voronoi[vote_r, vote_c]
    # Score: how sure the network is of the pixels and of the centre itself
    # (the fourth root keeps true particles above 0.5, where matching counts them).
    peak_heat = np.concatenate([[0.0], heat[peaks[:, 0], peaks[:, 1]]])
    quality = fg_full * (peak_heat**0.25)[labels]  # the root of K heats, not of H x W pixels
    return relabel_by_size(labels, quality, min_area, min_score, stats)
