"""Metrology of one contact hole from its height map: depth, critical dimensions, sidewall angle.

Definitions (docs/depth.md, "Hole metrology"; the SEM simulator's truth files use the same ones,
computed on its analytic surface, so measured and true values mean the same thing):

* **top level**: the flat surface around the hole, the median of the map's flat pixels (slope
  at most 2 % of the depth per pixel) above the midpoint between its 90th percentile and minimum; **bottom level**: the deepest pixel of
  the central hole (the hole below mid-depth nearest the image centre); **depth** = top - bottom.
* a **level f** is ``bottom + f * depth``; a **chord** at level f along x (y) is the width of the
  run of pixels below that level on the row (column) through the hole's centroid, starting from
  the deepest pixel of that row (column) inside the hole, with the two crossings interpolated
  linearly between pixels.
* **top CD** is the chord at ``top_fraction`` (default 0.9) and **bottom CD** the chord at
  ``bottom_fraction`` (0.1): the exact rim (f = 1) and floor (f = 0) are kinks whose position a
  pixel map cannot fix (the width at f = 1 is "wherever the flat starts", at f = 0 is zero for a
  rounded bottom).
* **sidewall angle** (degrees from horizontal; 90 = vertical) per axis from the chords at the
  two ``wall_levels`` (default 0.2 and 0.8, on the straight part of the wall):
  ``atan(rise / run)``, rise = (0.8 - 0.2) * depth, run = half the chord difference; the mean of
  the x and y angles is ``sidewall_angle_deg``.

Where a value cannot be measured it is NaN and the row's ``note`` says why; ``status`` is
``ok`` (everything measured), ``partial`` or ``failed`` (no hole).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from micrometry.errors import InputError
from micrometry.holes import (
    ANGLE_COLUMNS,
    BOTTOM_FRACTION,
    LENGTH_COLUMNS,
    METROLOGY_COLUMNS,
    TOP_FRACTION,
    WALL_LEVELS,
    wall_angle_deg,
)

MIN_DEPTH_NM = 2.0  # shallower than this is no hole (a flat map, or noise)

VALUE_COLUMNS = METROLOGY_COLUMNS
COLUMNS = ("status", "note", *VALUE_COLUMNS)
DECIMALS = {**dict.fromkeys(LENGTH_COLUMNS, 2), **dict.fromkeys(ANGLE_COLUMNS, 1)}

NO_HOLE = "no hole found"
RUNS_OFF = "hole runs off the image"
NO_FLOOR = "no pixel below the level on the centre line"


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


def chord(profile: np.ndarray, start: int, level: float) -> tuple[float, str]:
    """Width (pixels) of the run below ``level`` around ``start``, or NaN and the reason."""
    if profile[start] >= level:
        return float("nan"), NO_FLOOR
    width = _crossing(profile, start, level, +1) - _crossing(profile, start, level, -1)
    return (width, "") if math.isfinite(width) else (float("nan"), RUNS_OFF)


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


def top_level(height: np.ndarray) -> float:
    """The top surface: median of the flat pixels (slope <= 2 % of the depth per pixel, at least
    1 nm/px for the PNG's whole-nm steps) above the midpoint of the 90th percentile and the minimum.

    On an exact map this is the flat top whatever share of the crop it covers (the
    median of all upper pixels sank into the walls when neighbouring holes left only
    20 % flat); on a predicted one it is not pulled up by the few highest pixels.
    Falls back to the 90th percentile when under 2 % of the map is flat.
    """
    rough_top, low = float(np.percentile(height, 90)), float(height.min())
    gy, gx = np.gradient(height)
    flat = (height >= 0.5 * (rough_top + low)) & (np.hypot(gx, gy) <= max(0.02 * (rough_top - low), 1.0))
    return float(np.median(height[flat])) if flat.sum() >= 0.02 * height.size else rough_top


def measure_hole(
    height: np.ndarray,
    nm_per_px: float = 2.0,
    top_fraction: float = TOP_FRACTION,
    bottom_fraction: float = BOTTOM_FRACTION,
    wall_levels: tuple[float, float] = WALL_LEVELS,
) -> dict[str, float | str]:
    """Measure the central hole of one height map.

    Parameters
    ----------
    height : ndarray
        ``(H, W)`` heights in nm (depth-map pixel values).
    nm_per_px : float
        Pixel size (finite, > 0, else :class:`InputError`); CDs are returned in nm and the
        sidewall angle uses it.
    top_fraction, bottom_fraction : float
        Levels (fractions of the depth above the bottom) where top and bottom CD are read.
    wall_levels : (float, float)
        Levels between which the sidewall angle is read.

    Returns
    -------
    dict
        :data:`COLUMNS`; lengths in nm, angles in degrees; NaN where a value cannot be
        measured, with the reason in ``note``.
    """
    if not (math.isfinite(nm_per_px) and nm_per_px > 0):
        raise InputError(f"the pixel size must be a finite number of nm > 0, got {nm_per_px}")
    height = np.asarray(height, dtype=np.float64)
    top = top_level(height)
    mask, bottom = central_hole(height, top)
    depth = top - bottom
    result: dict = dict.fromkeys(VALUE_COLUMNS, float("nan"))
    result.update(status="failed", note=NO_HOLE, depth_nm=depth, top_level_nm=top, bottom_level_nm=bottom)
    if not mask.any() or depth < MIN_DEPTH_NM:
        return result
    cy, cx = (int(round(c)) for c in ndimage.center_of_mass(mask))
    lines = {"x": (height[cy], np.where(mask[cy])[0]), "y": (height[:, cx], np.where(mask[:, cx])[0])}
    notes = []
    chords = {}
    for axis, (profile, inside) in lines.items():
        if inside.size == 0:  # the centroid of an odd-shaped hole lies outside it
            start = int(np.argmin(profile))
        else:
            start = int(inside[np.argmin(profile[inside])])
        for name, fraction in (
            ("top", top_fraction),
            ("bottom", bottom_fraction),
            ("wall_low", wall_levels[0]),
            ("wall_high", wall_levels[1]),
        ):
            width, why = chord(profile, start, bottom + fraction * depth)
            chords[name, axis] = width * nm_per_px
            if why and name in ("top", "bottom"):
                notes.append(f"{name} CD {axis}: {why} at {fraction:.0%}")
            elif why:
                notes.append(f"sidewall angle {axis}: {why} at {fraction:.0%}")
        result[f"top_cd_{axis}_nm"] = chords["top", axis]
        result[f"bottom_cd_{axis}_nm"] = chords["bottom", axis]
        result[f"sidewall_angle_{axis}_deg"] = wall_angle_deg(
            depth, chords["wall_low", axis], chords["wall_high", axis], wall_levels
        )
    angles = [result["sidewall_angle_x_deg"], result["sidewall_angle_y_deg"]]
    result["sidewall_angle_deg"] = float(np.nanmean(angles)) if np.isfinite(angles).any() else float("nan")
    result["note"] = "; ".join(dict.fromkeys(notes))
    result["status"] = "ok" if not notes else "partial"
    return result


def measure_maps(maps: np.ndarray, **kwargs) -> list[dict]:
    """:func:`measure_hole` for each map of a stack ``(N, H, W)``."""
    return [measure_hole(m, **kwargs) for m in maps]


def hole_table(names, rows: list[dict]):
    """One DataFrame row per hole: ``file`` then :data:`COLUMNS`, numbers rounded to their precision
    (0.01 nm, 0.1 degree); missing values stay NaN (empty cells in CSV, nulls in Parquet)."""
    import pandas as pd

    table = pd.DataFrame(list(rows), columns=list(COLUMNS))
    table.insert(0, "file", list(names))
    for column, decimals in DECIMALS.items():
        table[column] = table[column].astype(float).round(decimals)
    return table


def failure_summary(table) -> tuple[str, list[str]]:
    """``"50 holes: 37 fully measured, 13 partly, 0 not at all"`` and one line per missing quantity."""
    n = len(table)
    counts = table["status"].value_counts()
    head = (
        f"{n} holes: {counts.get('ok', 0)} fully measured, {counts.get('partial', 0)} partly, "
        f"{counts.get('failed', 0)} not at all"
    )
    reasons: dict[str, int] = {}
    for note in table["note"]:
        for reason in filter(None, note.split("; ") if isinstance(note, str) else ()):  # NaN: read back empty
            reasons[reason] = reasons.get(reason, 0) + 1
    lines = []
    for reason, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        what, _, why = reason.partition(": ")
        lines.append(f"{count} without {what} ({why})" if why else f"{count}: {reason}")
    return head, lines
