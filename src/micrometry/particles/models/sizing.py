"""Particle size and network scale: particles meet a model at the diameter it was trained for.

A model trained with automatic size (``TrainSettings.scale = None``) saw every
image resized so that its median particle measured ``net_diameter`` network
pixels (area-equivalent diameter). Prediction does the same: the diameter of
an image's particles is given (``--diameter``) or estimated by a first pass of
the model itself, as Cellpose's size model does, and the image is resized by
``net_diameter / diameter``. On a large image the first passes see only a
central window of about :data:`PROBE_NET_PX` network pixels a side (a few
dozen particles are plenty for a median), so a wrong first guess costs a
fraction of a pass instead of a whole one.
"""

from __future__ import annotations

import math

import numpy as np

#: Network diameter (pixels) particles are resized to when a model sizes automatically.
NET_DIAMETER = 20.0
#: With automatic size, an instance narrower than this fraction of the trained diameter is a
#: fragment: training never shows an annotated particle that small beside its image's median
#: (the generator's size ranges reach about a third of the median at most).
MIN_DIAMETER_FRACTION = 0.3
#: Scales allowed by training and prediction (network pixels per image pixel).
MIN_SCALE, MAX_SCALE = 0.05, 4.0
#: Particles smaller than this many pixels are left out of a median (specks, slivers).
MIN_AREA_PX = 4
#: Image diameters a first pass tries, most likely first, when it finds nothing at the first guess.
FIRST_GUESS_PX = 30.0
LADDER_PX = (12.0, 80.0, 150.0, 6.0)
#: A first-pass estimate this far (ratio) from the pass's own scale is re-run at the estimate.
REFINE_RATIO = 1.25
#: Side (network pixels) of the central window a sizing pass segments on a large image.
PROBE_NET_PX = 320
#: A window covering more than this share of the image is not worth it: the whole image is probed.
PROBE_MAX_SHARE = 0.5
#: Objects whose median one lies in a touching group of at least this many tile a larger particle:
#: the texture inside large nuclei segmented at the texture's size (53-71 objects a group on
#: 150-400 px chromatin nuclei; crowded, touching and overlapping particles: 3-13, truth 4-16).
TILED_GROUP_OBJECTS = 24
#: Objects this far apart (pixels) belong to one group.
TILED_GROUP_GAP_PX = 2
#: A pass at the groups' size is believed when its median particle is within this ratio of it.
TILED_GROUP_AGREEMENT = 1.5


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    """Area-equivalent diameters (pixels) of the instances of a label image."""
    areas = np.bincount(np.asarray(labels, np.int64).ravel())[1:]
    areas = areas[areas >= MIN_AREA_PX]
    return np.sqrt(4.0 * areas / math.pi)


def median_diameter(labels: np.ndarray) -> float | None:
    """Median area-equivalent diameter in pixels (None: no particles)."""
    d = equivalent_diameters(labels)
    return float(np.median(d)) if len(d) else None


def probe_window(shape: tuple[int, int], scale: float) -> tuple[slice, slice] | None:
    """The central window a sizing pass at ``scale`` segments, or None for the whole image.

    The window is :data:`PROBE_NET_PX` network pixels a side; None when it
    would cover more than :data:`PROBE_MAX_SHARE` of the image anyway.
    """
    side = math.ceil(PROBE_NET_PX / scale)
    h, w = min(side, shape[0]), min(side, shape[1])
    if h * w > PROBE_MAX_SHARE * shape[0] * shape[1]:
        return None
    top, left = (shape[0] - h) // 2, (shape[1] - w) // 2
    return slice(top, top + h), slice(left, left + w)


def clear_border(labels: np.ndarray) -> np.ndarray:
    """``labels`` without the instances that touch its border (cut by a window: too small to measure).

    Returns the labels unchanged when every instance touches the border.
    """
    from micrometry.particles.models.conventions import border_touching

    edge = border_touching(labels)
    if len(edge) == 0:
        return labels
    inner = np.where(np.isin(labels, edge), 0, labels)
    return inner if inner.any() else labels


def fits(diameter: float, shape: tuple[int, int]) -> bool:
    """Whether particles of ``diameter`` pixels can be sized in an image of ``shape`` (half its side)."""
    return diameter < min(shape) / 2


def tiled_group_diameter(labels: np.ndarray, min_objects: int = TILED_GROUP_OBJECTS) -> float | None:
    """The diameter of the larger particles a segmentation's objects tile, or None when they do not.

    Objects closer than :data:`TILED_GROUP_GAP_PX` form a group. When the median
    object lies in a group of at least ``min_objects``, the objects are read as
    pieces of larger particles (texture inside them segmented at its own size):
    the median area-equivalent diameter of those groups is returned.
    """
    import cv2

    labels = np.asarray(labels)
    n = int(labels.max()) if labels.size else 0
    if n < min_objects:
        return None
    side = 2 * TILED_GROUP_GAP_PX + 1
    near = cv2.dilate((labels > 0).astype(np.uint8), np.ones((side, side), np.uint8))
    _, groups = cv2.connectedComponents(near, connectivity=8)
    inside = labels > 0
    group_of = np.zeros(n + 1, np.int64)
    group_of[labels[inside]] = groups[inside]
    members = np.bincount(group_of[1:])  # objects per group
    present = np.bincount(labels[inside].ravel(), minlength=n + 1)[1:] > 0
    if np.median(members[group_of[1:][present]]) < min_objects:
        return None
    big = np.flatnonzero(members >= min_objects)
    areas = np.bincount(groups[inside].ravel(), minlength=len(members))[big]
    return float(np.median(np.sqrt(4.0 * areas / math.pi)))


def scale_for_diameter(diameter: float, net_diameter: float | None = None) -> float:
    """Network scale that brings particles of ``diameter`` image pixels to ``net_diameter``."""
    scale = (net_diameter or NET_DIAMETER) / max(float(diameter), 1e-6)
    return float(min(MAX_SCALE, max(MIN_SCALE, scale)))


def min_area_net(net_diameter: float) -> float:
    """Smallest instance (network pixels) a model trained at ``net_diameter`` reports."""
    return math.pi / 4 * (MIN_DIAMETER_FRACTION * net_diameter) ** 2


def check_scale(scale: float, option: str = "--scale") -> None:
    """Raise a one-line :class:`InputError` for a scale outside the allowed range."""
    from micrometry.errors import InputError

    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise InputError(f"{option} must be between {MIN_SCALE} and {MAX_SCALE:g}, not {scale}")


def estimate_diameter(
    segment_at, shape: tuple[int, int], net_diameter: float, refine=None
) -> tuple[float | None, float, object]:
    """The typical particle diameter of one image, by first passes of the model.

    Parameters
    ----------
    segment_at : callable
        ``scale -> (labels, scores)`` at the image's own resolution.
    shape : (int, int)
        The image's shape (limits guesses to sizes that fit in it).
    net_diameter : float
        The diameter the model was trained for.
    refine : callable, optional
        ``scale -> bool``: whether a refinement pass at that scale is worth
        running here (default: always). A caller that segments the whole image
        at the estimate anyway (its sizing passes saw a window) says no, and
        checks that whole pass itself: one pass less.

    Returns
    -------
    (diameter, scale, result)
        The median diameter found (None: no particles at any guess), the scale
        of the last pass (or of the estimate, when the refinement was declined),
        and that pass's ``(labels, scores)`` (reused when the estimate agrees
        with the pass's own scale, so a good guess costs one pass; None when
        the refinement was declined).
    """
    guesses = [FIRST_GUESS_PX] + [d for d in LADDER_PX if fits(d, shape)]
    first = None
    for guess in guesses:
        scale = scale_for_diameter(guess, net_diameter)
        result = segment_at(scale)
        first = first or (scale, result)
        diameter = median_diameter(result[0])
        if diameter is None:
            continue
        best = scale_for_diameter(diameter, net_diameter)
        if max(best / scale, scale / best) <= REFINE_RATIO:
            return diameter, scale, result
        if refine is not None and not refine(best):
            return diameter, best, None
        # one refinement: segment at the estimate, and measure again there
        result = segment_at(best)
        refined = median_diameter(result[0])
        return (refined if refined is not None else diameter), best, result
    return None, first[0], first[1]
