"""Per-particle shape descriptors from a label image, with ImageJ's column names.

Two kinds of quantity, computed two ways:

* **Moments** (Area, X, Y, Major, Minor, Angle, AR, Round) come from pixel counts
  and are computed for all particles at once with ``numpy.bincount``.
* **Outline** quantities (Perim., Feret, MinFeret, FeretAngle, Solidity,
  convexity) come from a sub-pixel outline: the 0.5 iso-contour of the particle
  mask (marching squares), a polygon through the midpoints between inside and
  outside pixel centres. A 4-connected pixel-edge perimeter overestimates a
  circle's perimeter by 4/pi (27 %); the corner-count length of this contour
  is within about 1-2 % on curved analytic shapes (see docs/morphometry.md).
  The outlines of all particles are traced at once with array operations
  (:mod:`micrometry.particles.outlines`); only convex hulls and calipers are
  computed per particle, on its few dozen outline vertices. The test suite
  checks this path against a per-particle reference built on
  ``skimage.measure.find_contours`` (``tests/morphometry_reference.py``).
  Shoelace areas and calipers come from :mod:`micrometry.geometry`.

Geometry conventions (as in ImageJ): x runs right, y runs down in the image but
angles are measured counter-clockwise from the x axis as seen on screen
(y up), in degrees 0..180. X, Y are centroids with pixel centres at
``index + 0.5``, so a pixel spans ``[i, i + 1)`` in calibrated units.
"""

from __future__ import annotations

import re

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage

from micrometry.geometry import calipers, polygon_area
from micrometry.particles.columns import ANGLE_COLUMNS, AREA_COLUMNS, LENGTH_COLUMNS
from micrometry.particles.flags import add_flags
from micrometry.particles.outlines import shoelace_by_label, smoothed, trace_outlines

# Column order of the per-particle table.
IMAGEJ_COLUMNS = [
    "Area",
    "Perim.",
    "Circ.",
    "AR",
    "Round",
    "Solidity",
    "Feret",
    "MinFeret",
    "FeretAngle",
    "Major",
    "Minor",
    "Angle",
    "X",
    "Y",
]
ISO_COLUMNS = ["EqDiam", "PerimEqDiam", "GeodLength", "GeodThickness", "Convexity", "Elongation"]

# Per-id arrays (bincount) are sized by the largest id; beyond this, ids are compacted first.
MAX_DENSE_ID = 10_000_000

# Descriptors worth comparing between batches (positions and angles are not shape).
SHAPE_DESCRIPTORS = [
    *(c for c in IMAGEJ_COLUMNS if c not in ("X", "Y", *ANGLE_COLUMNS)),
    "EqDiam",
    "Convexity",
    "Elongation",
]


def measure_labels(
    labels: np.ndarray,
    pixel_size: float = 1.0,
    unit: str = "px",
    image: np.ndarray | None = None,
) -> pd.DataFrame:
    """Measure every particle of a label image.

    Parameters
    ----------
    labels : ndarray
        ``(H, W)`` integer label image: 0 background, one positive id per particle.
        Ids need not be consecutive.
    pixel_size : float
        Side of one pixel in ``unit`` (e.g. 0.5 for 0.5 um per pixel).
    unit : str
        Name of the length unit, stored in the ``Unit`` column.
    image : ndarray, optional
        Gray image of the same shape; adds ImageJ's ``Mean``, ``Min``, ``Max``
        intensity columns.

    Returns
    -------
    DataFrame
        One row per particle, ordered by label id: ``Label``, the ImageJ columns
        (:data:`IMAGEJ_COLUMNS`), the ISO 9276-6 columns (:data:`ISO_COLUMNS`),
        bounding box ``BX, BY, Width, Height``, ``TouchesBorder``, the
        ``Touching`` and ``Agglomerate`` flags (:mod:`micrometry.particles.flags`)
        and ``Unit``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative (0 background, positive particle ids)")
    if pixel_size <= 0:
        raise ValueError(f"pixel_size must be positive, got {pixel_size}")
    if image is not None and np.shape(image) != labels.shape:
        raise ValueError(f"image shape {np.shape(image)} differs from labels shape {labels.shape}")

    if labels.size and labels.max() > MAX_DENSE_ID:
        return _measure_sparse_ids(labels, pixel_size, unit, image)
    ids, moments = _moments(labels)
    if len(ids) == 0:
        return _empty_table(unit, with_intensity=image is not None)
    table = pd.DataFrame({"Label": ids})
    table = pd.concat([table, _ellipse_columns(moments)], axis=1)
    outline = _outline_columns(labels, ids)
    table = pd.concat([table, outline], axis=1)
    table = _derived_columns(table)
    if image is not None:
        table = pd.concat([table, _intensity_columns(labels, ids, image)], axis=1)
    table = _calibrate(table, pixel_size)
    table = add_flags(table, labels)
    table["Unit"] = unit
    return table[_column_order(with_intensity=image is not None)]


def _measure_sparse_ids(
    labels: np.ndarray, pixel_size: float, unit: str, image: np.ndarray | None
) -> pd.DataFrame:
    """Measure a label image with huge ids (e.g. hashes) by renumbering them 1..N and back."""
    original, inverse = np.unique(labels, return_inverse=True)
    if original[0] != 0:  # no background pixel: make room for id 0
        original, inverse = np.r_[0, original], inverse + 1
    table = measure_labels(inverse.reshape(labels.shape).astype(np.int64), pixel_size, unit, image)
    table["Label"] = original[table["Label"].to_numpy()]
    return table


def _column_order(with_intensity: bool) -> list[str]:
    extra = ["Mean", "Min", "Max"] if with_intensity else []
    return [
        "Label",
        *IMAGEJ_COLUMNS,
        *ISO_COLUMNS,
        *extra,
        "BX",
        "BY",
        "Width",
        "Height",
        "TouchesBorder",
        "Touching",
        "Agglomerate",
        "Unit",
    ]


def _empty_table(unit: str, with_intensity: bool) -> pd.DataFrame:
    columns = _column_order(with_intensity)
    table = pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
    table["Label"] = table["Label"].astype(np.int64)
    for flag in ("TouchesBorder", "Touching", "Agglomerate"):
        table[flag] = table[flag].astype(bool)
    table["Unit"] = table["Unit"].astype(object)
    return table


# --------------------------------------------------------------------------- moments


def _moments(labels: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Raw pixel moments of every label, in one pass with bincount."""
    flat = labels.ravel()
    nonzero = flat > 0
    lab = flat[nonzero].astype(np.int64)
    if lab.size == 0:
        return np.zeros(0, np.int64), {}
    rows, cols = np.divmod(np.flatnonzero(nonzero), labels.shape[1])
    n = int(lab.max()) + 1
    m00 = np.bincount(lab, minlength=n).astype(np.float64)
    ids = np.flatnonzero(m00)
    # Centre coordinates first: raw second moments of large coordinates lose precision.
    sx = np.bincount(lab, weights=cols, minlength=n)[ids]
    sy = np.bincount(lab, weights=rows, minlength=n)[ids]
    area = m00[ids]
    cx, cy = sx / area, sy / area
    lookup = np.zeros(n, np.int64)
    lookup[ids] = np.arange(len(ids))
    dx = cols - cx[lookup[lab]]
    dy = rows - cy[lookup[lab]]
    mxx = np.bincount(lab, weights=dx * dx, minlength=n)[ids] / area
    myy = np.bincount(lab, weights=dy * dy, minlength=n)[ids] / area
    mxy = np.bincount(lab, weights=dx * dy, minlength=n)[ids] / area
    return ids, {"area": area, "cx": cx, "cy": cy, "mxx": mxx, "myy": myy, "mxy": mxy}


def _ellipse_columns(m: dict[str, np.ndarray]) -> pd.DataFrame:
    """Area, centroid and the ellipse with the same second moments (ImageJ's 'Fit ellipse').

    Each pixel is a unit square, not a point: its own second moment 1/12 is added
    to the variances (as ImageJ does), which makes Major/Minor of small particles
    right (a single pixel gets Major = Minor = 4 * sqrt(1/12) = 1.15, not 0).
    """
    mxx = m["mxx"] + 1.0 / 12.0
    myy = m["myy"] + 1.0 / 12.0
    mxy = m["mxy"]
    half_trace = 0.5 * (mxx + myy)
    root = np.sqrt(0.25 * (mxx - myy) ** 2 + mxy**2)
    lam1, lam2 = half_trace + root, np.maximum(half_trace - root, 0.0)
    # Major axis direction in image coordinates (y down), then flipped to y up.
    theta_image = 0.5 * np.arctan2(2.0 * mxy, mxx - myy)
    angle = np.mod(-np.degrees(theta_image), 180.0)
    return pd.DataFrame(
        {
            "Area": m["area"],
            "X": m["cx"] + 0.5,
            "Y": m["cy"] + 0.5,
            "Major": 4.0 * np.sqrt(lam1),
            "Minor": 4.0 * np.sqrt(lam2),
            "Angle": angle,
        }
    )


# --------------------------------------------------------------------------- outline


def _outline_columns(labels: np.ndarray, ids: np.ndarray) -> pd.DataFrame:
    """Perimeter, calipers, convex hull and bounding box of every particle.

    The outlines of all particles are traced at once (:mod:`micrometry.particles.outlines`);
    only the convex hulls and calipers are computed particle by particle, on
    each particle's own few dozen outline vertices. The result equals the
    per-mask reference in ``tests/morphometry_reference.py``.
    """
    outlines = trace_outlines(labels)
    n_ids = int(ids.max()) + 1
    perimeter = (
        AXIS_STEP_WEIGHT * outlines.axis_steps
        + DIAGONAL_STEP_WEIGHT * outlines.diagonal_steps
        + CORNER_WEIGHT * outlines.corners
    )
    perimeter = np.pad(perimeter, (0, max(0, n_ids - len(perimeter))))[ids]
    smooth_xy = smoothed(outlines)
    smooth_area = shoelace_by_label(outlines, smooth_xy, n_ids)[ids]
    bounds = np.searchsorted(outlines.label, np.concatenate([ids, [n_ids]]))
    per_particle = np.zeros(
        (len(ids), 5)
    )  # feret, min feret, feret angle, convex perimeter, smoothed hull area
    for row in range(len(ids)):
        lo, hi = bounds[row], bounds[row + 1]
        hull = _hull([outlines.xy[lo:hi]])
        feret, min_feret, feret_angle = calipers(hull)
        closed = np.vstack([hull, hull[:1]])
        smooth_hull = _hull([smooth_xy[lo:hi]])
        per_particle[row] = (
            feret,
            min_feret,
            feret_angle,
            _polyline_length(closed),
            polygon_area(smooth_hull),
        )
    hull_area = per_particle[:, 4]
    with np.errstate(divide="ignore", invalid="ignore"):
        solidity_values = np.where(hull_area > 0, np.minimum(smooth_area / hull_area, 1.0), 1.0)
    table = pd.DataFrame(
        {
            "Perim.": perimeter,
            "Feret": per_particle[:, 0],
            "MinFeret": per_particle[:, 1],
            "FeretAngle": per_particle[:, 2],
            "Solidity": solidity_values,
            "ConvexPerim": per_particle[:, 3],
        }
    )
    return pd.concat([table, _bounding_boxes(labels, ids)], axis=1)


def _bounding_boxes(labels: np.ndarray, ids: np.ndarray) -> pd.DataFrame:
    """Bounding box of each particle and whether it touches the image border."""
    boxes = ndimage.find_objects(labels.astype(np.int64, copy=False) if labels.dtype.kind == "u" else labels)
    height, width = labels.shape
    box = np.array(
        [(b[1].start, b[0].start, b[1].stop, b[0].stop) for b in (boxes[i - 1] for i in ids)], float
    )
    box = box.reshape(-1, 4)
    touches = (box[:, 0] == 0) | (box[:, 1] == 0) | (box[:, 2] == width) | (box[:, 3] == height)
    return pd.DataFrame(
        {
            "BX": box[:, 0],
            "BY": box[:, 1],
            "Width": box[:, 2] - box[:, 0],
            "Height": box[:, 3] - box[:, 1],
            "TouchesBorder": touches,
        }
    )


def _polyline_length(xy: np.ndarray) -> float:
    # length of an open polyline; close a polygon by repeating its first vertex
    return float(np.hypot(*np.diff(xy, axis=0).T).sum())


# Corner-count perimeter weights (Vossepoel & Smeulders 1982, "Vector code probability
# and metrication error in the representation of straight lines of finite length"):
# 0.980 per even and 1.406 per odd chain step, -0.091 per corner. A marching-squares
# diagonal step is half an odd chain step, hence 1.406 / 2. A least-squares fit on
# digitised discs, ellipses and rectangles here gave (0.986, 0.703, -0.093).
AXIS_STEP_WEIGHT = 0.980
DIAGONAL_STEP_WEIGHT = 0.703
CORNER_WEIGHT = -0.091


def _hull(contours: list[np.ndarray]) -> np.ndarray:
    points = np.concatenate(contours).astype(np.float32)
    return cv2.convexHull(points).reshape(-1, 2).astype(np.float64)


# --------------------------------------------------------------------------- derived


def _derived_columns(t: pd.DataFrame) -> pd.DataFrame:
    """Ratios and ISO 9276-6 descriptors, all in pixels (before calibration)."""
    area, perim = t["Area"].to_numpy(), t["Perim."].to_numpy()
    major, minor = t["Major"].to_numpy(), t["Minor"].to_numpy()
    feret, min_feret = t["Feret"].to_numpy(), t["MinFeret"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        t["Circ."] = np.minimum(np.where(perim > 0, 4 * np.pi * area / perim**2, 1.0), 1.0)
        t["AR"] = np.where(minor > 0, major / minor, np.inf)
        t["Round"] = 4 * area / (np.pi * major**2)
        t["EqDiam"] = np.sqrt(4 * area / np.pi)
        t["PerimEqDiam"] = perim / np.pi
        # Geodetic length/thickness: the rectangle with the same area and perimeter.
        quarter = perim / 4
        t["GeodLength"] = quarter + np.sqrt(np.maximum(quarter**2 - area, 0.0))
        t["GeodThickness"] = perim / 2 - t["GeodLength"]
        t["Convexity"] = np.where(perim > 0, np.minimum(t["ConvexPerim"] / perim, 1.0), 1.0)
        t["Elongation"] = np.where(feret > 0, 1 - min_feret / feret, 0.0)
    return t.drop(columns=["ConvexPerim"])


def _intensity_columns(labels: np.ndarray, ids: np.ndarray, image: np.ndarray) -> pd.DataFrame:
    values = np.asarray(image, dtype=np.float64)
    return pd.DataFrame(
        {
            "Mean": ndimage.mean(values, labels, ids),
            "Min": ndimage.minimum(values, labels, ids),
            "Max": ndimage.maximum(values, labels, ids),
        }
    )


def _calibrate(t: pd.DataFrame, pixel_size: float) -> pd.DataFrame:
    for column in LENGTH_COLUMNS:
        t[column] = t[column] * pixel_size
    for column in AREA_COLUMNS:
        t[column] = t[column] * pixel_size**2
    return t


# --------------------------------------------------------------------------- unit names in files

# Size-distribution columns of the image and summary tables (D10_n, D50_v_low, ...): lengths.
_PSD_COLUMN = re.compile(r"^D\d+_[nv](?:_low|_high)?$")


def unit_name(column: str, unit: str) -> str:
    """The file name of a column: lengths ``Feret_um``, areas ``Area_um2``, angles ``Angle_deg``.

    Dimensionless descriptors (Circ., AR, Round, Solidity, ...) and intensities keep
    ImageJ's bare name; ``Perim.`` drops its dot (``Perim_um``). Uncalibrated tables
    say ``px`` and ``px2``.
    """
    if column in AREA_COLUMNS:
        return f"{column}_{unit}2"
    if column in LENGTH_COLUMNS or _PSD_COLUMN.match(column):
        return f"{column.rstrip('.')}_{unit}"
    if column in ANGLE_COLUMNS:
        return f"{column}_deg"
    return column


def with_unit_names(table: pd.DataFrame, unit: str) -> pd.DataFrame:
    """``table`` as written to a file: units in the column names, no ``Unit`` column."""
    named = table.rename(columns={c: unit_name(c, unit) for c in table.columns})
    return named.drop(columns=["Unit"]) if "Unit" in named.columns and "Area" in table.columns else named


def without_unit_names(table: pd.DataFrame) -> pd.DataFrame:
    """A table read from a file, back to the names micrometry computes with (the inverse of
    :func:`with_unit_names`); the ``Unit`` column comes back from the area column's name.
    Tables written before units were named pass unchanged."""
    unit = next(
        (c[len("Area_") : -1] for c in table.columns if c.startswith("Area_") and c.endswith("2")), None
    )
    if unit is None:  # image and summary tables: the size percentiles name it
        unit = next(
            (
                c[len("D50_n_") :]
                for c in table.columns
                if c.startswith("D50_n_") and not c.startswith(("D50_n_low", "D50_n_high"))
            ),
            None,
        )
    if unit is None:  # a particle table cut down to its sizes
        unit = next((c[len("EqDiam_") :] for c in table.columns if c.startswith("EqDiam_")), None)
    if unit is None:
        return table
    candidates = [
        *AREA_COLUMNS,
        *LENGTH_COLUMNS,
        *ANGLE_COLUMNS,
        *(f"D{p}_{w}{s}" for p in (10, 50, 90) for w in "nv" for s in ("", "_low", "_high")),
    ]
    back = {unit_name(c, unit): c for c in candidates}
    plain = table.rename(columns={c: back[c] for c in table.columns if c in back})
    if ("Area" in plain.columns or "EqDiam" in plain.columns) and "Unit" not in plain.columns:
        plain["Unit"] = unit
    return plain
