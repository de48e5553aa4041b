"""From predicted maps to instance labels: the inference half of each dense model.

Both decoders take maps at the image's own resolution and return an ``(H, W)``
int32 label image (0 background, 1..N) and one score per instance.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.segmentation import watershed


def relabel_by_size(labels: np.ndarray, quality: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop instances smaller than ``min_area``, renumber the rest 1..N, score them.

    Parameters
    ----------
    labels : ndarray
        ``(H, W)`` ids, possibly with gaps.
    quality : ndarray
        ``(H, W)`` per-pixel confidence; an instance's score is its mean.
    min_area : int
        Smaller instances are noise.

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
    keep = area >= max(min_area, 1)
    keep[0] = False
    new_id = np.zeros(n, dtype=np.int32)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    scores = (total[keep] / area[keep]).astype(np.float32)
    return new_id[labels], scores


def watershed_from_maps(fg_prob: np.ndarray, boundary_prob: np.ndarray, distance: np.ndarray,
                        fg_threshold: float = 0.5, marker_threshold: float = 0.5,
                        min_area: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Marker-controlled watershed on the predicted normalised distance.

    Markers are the connected cores (distance above ``marker_threshold``, away
    from predicted boundaries); the flooding fills the predicted foreground.
    """
    mask = fg_prob > fg_threshold
    markers, _ = ndimage.label((distance > marker_threshold) & (boundary_prob < 0.5) & mask)
    labels = watershed(-distance, markers, mask=mask)
    return relabel_by_size(labels, fg_prob * (1.0 - 0.5 * boundary_prob), min_area)


def find_peaks(heat: np.ndarray, radius: int, threshold: float) -> np.ndarray:
    """Local maxima of ``heat`` above ``threshold`` within a ``(2 radius + 1)`` window.

    Returns
    -------
    ndarray
        ``(K, 2)`` int (row, column), strongest first.
    """
    t = torch.from_numpy(np.ascontiguousarray(heat, dtype=np.float32))[None, None]
    pooled = F.max_pool2d(t, 2 * radius + 1, stride=1, padding=radius)
    is_peak = ((t == pooled) & (t > threshold))[0, 0].numpy()
    rows, cols = np.nonzero(is_peak)
    order = np.argsort(-heat[rows, cols], kind="stable")
    return np.stack([rows[order], cols[order]], axis=1)


def instances_from_centres(fg_prob: np.ndarray, heat: np.ndarray, offsets: np.ndarray,
                           peak_radius: int = 4, peak_threshold: float = 0.3,
                           fg_threshold: float = 0.5, min_area: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Group foreground pixels by the centre their offset vectors point at.

    Every foreground pixel votes for a position (its coordinates plus its
    predicted offset); it joins the detected centre nearest that position. The
    nearest-centre look-up is a Voronoi map of the centres built by one
    Euclidean distance transform, so the cost is linear in the pixels.

    Parameters
    ----------
    fg_prob, heat : ndarray
        ``(H, W)`` probabilities of foreground and of "this is a centre".
    offsets : ndarray
        ``(2, H, W)`` predicted (dy, dx) to the own centre, in pixels.
    peak_radius : int
        Two centres closer than this are one particle.
    """
    h, w = fg_prob.shape
    peaks = find_peaks(heat, peak_radius, peak_threshold)
    if len(peaks) == 0:
        return np.zeros((h, w), np.int32), np.zeros(0, np.float32)
    seeds = np.ones((h, w), dtype=bool)
    seeds[peaks[:, 0], peaks[:, 1]] = False
    # For every position, the coordinates of the nearest centre; ids by position.
    _, (near_r, near_c) = ndimage.distance_transform_edt(seeds, return_indices=True)
    centre_id = np.zeros((h, w), dtype=np.int32)
    centre_id[peaks[:, 0], peaks[:, 1]] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    voronoi = centre_id[near_r, near_c]

    rows, cols = np.nonzero(fg_prob > fg_threshold)
    vote_r = np.clip(np.rint(rows + offsets[0, rows, cols]), 0, h - 1).astype(np.intp)
    vote_c = np.clip(np.rint(cols + offsets[1, rows, cols]), 0, w - 1).astype(np.intp)
    labels = np.zeros((h, w), dtype=np.int32)
    labels[rows, cols] = voronoi[vote_r, vote_c]
    # Score: how sure the network is of the pixels and of the centre itself.
    peak_heat = np.concatenate([[0.0], heat[peaks[:, 0], peaks[:, 1]]])
    quality = fg_prob * np.sqrt(peak_heat[labels])
    return relabel_by_size(labels, quality, min_area)
