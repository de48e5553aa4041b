"""Metrology of one contact hole from its height map: depth, critical dimensions, sidewall angle.

Conventions (as in CD-SEM practice, where "top" and "bottom" CD are read at
levels just inside the rim and the floor, not at the exact corners):

* **top level**: the flat surface around the hole, the 90th percentile of the
  map (the top covers most of a 72x48 crop); **bottom**: the lowest point of
  the central hole; **hole depth** = top - bottom.
* **top CD** is the hole's width at ``top_fraction`` (default 90 %) of the depth
  above the bottom, **bottom CD** at ``bottom_fraction`` (10 %); both along x
  (the row through the hole's centre) and y (the column), with the level
  crossing interpolated between pixels.
* **sidewall angle** (degrees from horizontal; 90 = vertical) from the rise
  between the two levels over the run (half the CD difference), per axis and
  averaged.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

COLUMNS = ("hole_depth", "top_level", "bottom_level", "top_cd_x", "top_cd_y", "bottom_cd_x", "bottom_cd_y",
           "sidewall_angle_x", "sidewall_angle_y", "sidewall_angle")


def _crossing(profile: np.ndarray, start: int, level: float, step: int) -> float:
    """Sub-pixel position where ``profile`` first rises to ``level`` walking from ``start`` by ``step``."""
    i = start
    while 0 <= i + step < len(profile) and profile[i + step] < level:
        i += step
    j = i + step
    if not 0 <= j < len(profile):
        return float("nan")  # the hole runs off the image: no edge to measure
    lo, hi = profile[i], profile[j]
    frac = (level - lo) / (hi - lo) if hi != lo else 0.0
    return i + step * float(np.clip(frac, 0.0, 1.0))


def _width(profile: np.ndarray, centre: int, level: float) -> float:
    if profile[centre] >= level:
        return 0.0
    return _crossing(profile, centre, level, +1) - _crossing(profile, centre, level, -1)


def central_hole(height: np.ndarray, top: float) -> tuple[np.ndarray, float]:
    """Mask of the hole nearest the image centre (below mid-depth) and its lowest height."""
    low = height < top - 0.5 * (top - height.min())
    labels, n = ndimage.label(low)
    if n == 0:
        return np.zeros_like(low), float(height.min())
    centre = np.array(height.shape) / 2.0 - 0.5
    centroids = np.array(ndimage.center_of_mass(low, labels, range(1, n + 1)))
    best = int(np.argmin(((centroids - centre) ** 2).sum(axis=1))) + 1
    mask = labels == best
    return mask, float(height[mask].min())


def measure_hole(height: np.ndarray, nm_per_px: float = 1.0, top_fraction: float = 0.9,
                 bottom_fraction: float = 0.1) -> dict[str, float]:
    """Measure the central hole of one height map.

    Parameters
    ----------
    height : ndarray
        ``(H, W)`` heights in nm (depth-map pixel values).
    nm_per_px : float
        Pixel size; CDs are returned in nm and the sidewall angle uses it.
    top_fraction, bottom_fraction : float
        Levels (fractions of the depth above the bottom) where top and bottom CD are read.

    Returns
    -------
    dict
        :data:`COLUMNS`; lengths in nm, angles in degrees; NaN where the hole
        cannot be measured (no hole, or it runs off the image).
    """
    height = np.asarray(height, dtype=np.float64)
    top = float(np.percentile(height, 90))
    mask, bottom = central_hole(height, top)
    depth = top - bottom
    result = dict.fromkeys(COLUMNS, float("nan"))
    result.update(hole_depth=depth, top_level=top, bottom_level=bottom)
    if not mask.any() or depth <= 0:
        return result
    cy, cx = (int(round(c)) for c in ndimage.center_of_mass(mask))
    row, col = height[cy], height[:, cx]
    for name, fraction in (("top", top_fraction), ("bottom", bottom_fraction)):
        level = bottom + fraction * depth
        result[f"{name}_cd_x"] = _width(row, cx, level) * nm_per_px
        result[f"{name}_cd_y"] = _width(col, cy, level) * nm_per_px
    rise = (top_fraction - bottom_fraction) * depth
    for axis in ("x", "y"):
        run = (result[f"top_cd_{axis}"] - result[f"bottom_cd_{axis}"]) / 2.0
        result[f"sidewall_angle_{axis}"] = float(np.degrees(np.arctan2(rise, run))) if run == run else float("nan")
    result["sidewall_angle"] = float(np.nanmean([result["sidewall_angle_x"], result["sidewall_angle_y"]])) \
        if np.isfinite([result["sidewall_angle_x"], result["sidewall_angle_y"]]).any() else float("nan")
    return result


def measure_maps(maps: np.ndarray, **kwargs) -> list[dict[str, float]]:
    """:func:`measure_hole` for each map of a stack ``(N, H, W)``."""
    return [measure_hole(m, **kwargs) for m in maps]
