"""Depth and metrology of every hole of a CD-SEM frame (an array of contact holes).

A frame holds tens to thousands of holes on a lattice; the depth models work on
72x48 windows of one hole. :func:`analyse_frame` does, per frame:

1. **Detect** (:func:`detect_holes`): a difference-of-Gaussians *hole response*
   (the mean brightness of a hole-sized neighbourhood minus that of the hole's
   centre; dark hole bottoms inside bright rims score high) on the frame binned 2x2;
   its local maxima above half the typical peak are hole candidates.
2. **Fit the lattice** (:func:`fit_lattice`): the two shortest independent
   displacement vectors between neighbouring candidates span the array; every
   candidate gets integer lattice indices, and the origin and both vectors are
   refitted by least squares (candidates off the lattice by more than a quarter
   pitch are dropped). Every lattice site inside the frame is then a hole position,
   including sites where no candidate was found (a missing or not-open hole).
3. **Present or missing**: a site holds a hole when the ring-to-centre contrast of
   the lightly smoothed frame (mean over the rim ring minus mean over the centre,
   in the hole's elliptical footprint) exceeds :data:`PRESENT_FRACTION` of the
   frame's median hole contrast; otherwise it is ``missing``.
4. **Windows**: each hole's window is the model's 72x48 input placed so that the
   lattice site sits at its centre, ``x0 = floor(site_x - 23.5 + 0.5)``
   (likewise y): a hole lies in it as in a training crop, off-centre by its own
   placement error. A frame tiled from 72x48 crops therefore gives every crop back
   exactly, and with it the crop's own prediction. Holes whose window leaves the
   frame are ``status=border`` and not measured.
5. **Predict** all windows in one call to the model (depth map, depth with its
   90 % interval, OOD score) and **measure** each map (:mod:`micrometry.depth.measure`).
6. **Flag** (:func:`flag_defects`): see its docstring for the rule.

The stitched depth map gives each pixel the prediction of its nearest hole whose
window holds it (depth below the top surface, nm); pixels no window covers have none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from micrometry.depth.measure import measure_hole
from micrometry.errors import InputError
from micrometry.holes import FRAME_QUANTITIES, WINDOW, window_origins
from micrometry.io.depth_tiff import write_depth_tiff

HOLE_SEMI_AXES_PX = (20.0, 14.0)  # rows, columns: the training crops' typical hole
PRESENT_FRACTION = 0.05
MOSAIC_RADIUS_PX = 6.0  # a mosaic's holes lie this close to their tiles' centres

# flag_defects' rule (docs/depth.md, "Frames")
NOT_OPEN_FRACTION = 0.5
NOT_OPEN_CONTRAST = 0.55
NOT_OPEN_BRIGHTNESS_Z = 16.0
OUTLIER_SIGMAS = 4.0
JOINT_SIGMAS = 2.5

STATUSES = ("ok", "partial", "failed", "border", "missing")


@dataclass
class Lattice:
    """``site(i, j) = origin + i * basis[0] + j * basis[1]`` (pixels, x then y)."""

    origin: np.ndarray  # (2,)
    basis: np.ndarray  # (2, 2) rows: lattice vectors
    rms_px: float = 0.0  # residual of the fitted candidates

    def sites(self, index: np.ndarray) -> np.ndarray:
        return self.origin + np.asarray(index, dtype=np.float64) @ self.basis

    def index_of(self, xy: np.ndarray) -> np.ndarray:
        """Fractional lattice indices of points ``(N, 2)``."""
        return np.linalg.solve(self.basis.T, (np.asarray(xy, dtype=np.float64) - self.origin).T).T


@dataclass
class Detection:
    """What :func:`detect_holes` found in one frame."""

    lattice: Lattice
    index: np.ndarray  # (S, 2) lattice indices of the sites whose centre lies in the frame
    site_xy: np.ndarray  # (S, 2) lattice positions
    centre_xy: np.ndarray  # (S, 2) refined hole centres (the site where no hole was found)
    contrast: np.ndarray  # (S,) ring-to-centre contrast (grey levels)
    bottom: np.ndarray  # (S,) mean brightness of the hole's centre (grey levels)
    present: np.ndarray  # (S,) bool
    window_origin: np.ndarray  # (S, 2) int: x0, y0 of each 72x48 window
    inside: np.ndarray  # (S,) bool: the window lies inside the frame
    merged: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (S,) bool


def hole_response(image: np.ndarray, semi_axes: tuple[float, float] = HOLE_SEMI_AXES_PX) -> np.ndarray:
    """Difference-of-Gaussians response of ``image`` (positive on dark-centred holes), same shape."""
    img = np.asarray(image, dtype=np.float32)
    ay, ax = semi_axes
    inner = ndimage.gaussian_filter(img, (0.35 * ay, 0.35 * ax), truncate=3.0)
    outer = ndimage.gaussian_filter(img, (ay, ax), truncate=3.0)
    return outer - inner


def _candidates(image: np.ndarray, semi_axes) -> np.ndarray:
    """``(N, 2)`` x, y of strong local maxima of the hole response (computed on the 2x2-binned frame)."""
    rows, cols = (s // 2 * 2 for s in image.shape)
    binned = image[:rows, :cols].astype(np.float32).reshape(rows // 2, 2, cols // 2, 2).mean(axis=(1, 3))
    half = (semi_axes[0] / 2, semi_axes[1] / 2)
    r = hole_response(binned, half)
    size = (int(2 * half[0]) | 1, int(2 * half[1]) | 1)
    peaks = np.argwhere((r == ndimage.maximum_filter(r, size=size)) & (r > 0))
    if len(peaks) == 0:
        return np.zeros((0, 2))
    values = r[peaks[:, 0], peaks[:, 1]]
    typical = np.median(values[values >= np.quantile(values, 0.5)])
    keep = values > 0.5 * typical
    peaks = peaks[keep]
    # sub-pixel: a parabola through each peak and its two neighbours per axis
    y, x = peaks[:, 0], peaks[:, 1]
    yc, xc = np.clip(y, 1, r.shape[0] - 2), np.clip(x, 1, r.shape[1] - 2)

    def offset(lo, mid, hi):
        den = lo - 2 * mid + hi
        return np.where(den < 0, np.clip(0.5 * (lo - hi) / np.where(den < 0, den, -1), -0.5, 0.5), 0.0)

    dy = offset(r[yc - 1, xc], r[yc, xc], r[yc + 1, xc])
    dx = offset(r[yc, xc - 1], r[yc, xc], r[yc, xc + 1])
    # binned pixel k covers full-resolution pixels 2k, 2k+1: its centre is 2k + 0.5
    return np.stack([2 * (x + dx) + 0.5, 2 * (y + dy) + 0.5], axis=1)


def _lattice_vectors(points: np.ndarray) -> np.ndarray:
    """The two shortest independent vectors between neighbouring points (rows), from their clusters."""
    from scipy.spatial import cKDTree

    k = min(7, len(points))
    _, nb = cKDTree(points).query(points, k=k)
    # the 200 candidates nearest the middle tell the lattice as well as all of them
    middle = np.argsort(np.hypot(*(points - np.median(points, axis=0)).T))[:200]
    d = (points[nb[middle, 1:]] - points[middle, None, :]).reshape(-1, 2)
    d = np.where((d[:, :1] < 0) | ((d[:, :1] == 0) & (d[:, 1:] < 0)), -d, d)  # one sign per direction
    length = np.hypot(d[:, 0], d[:, 1])
    tol = 0.15 * np.median(np.sort(length)[: max(len(middle), 1)])
    tree = cKDTree(d)
    counts = np.array([len(c) for c in tree.query_ball_point(d, tol)])
    order = np.lexsort((length, -counts))
    clusters = []
    for i in order:
        if counts[i] < max(2, 0.5 * counts.max()):
            break
        if any(np.hypot(*(d[i] - c)) < tol for c in clusters):
            continue
        members = np.hypot(*(d - d[i]).T) < tol
        clusters.append(d[members].mean(axis=0))
    clusters.sort(key=lambda v: np.hypot(*v))
    a = clusters[0] if clusters else None
    for b in clusters[1:]:
        if abs(a[0] * b[1] - a[1] * b[0]) > 0.3 * np.hypot(*a) * np.hypot(*b):
            return _reduce(np.array([a, b]))
    raise InputError("no hole array found (fewer than two independent lattice directions)")


def _reduce(basis: np.ndarray) -> np.ndarray:
    """Lagrange-Gauss reduction: the shortest basis of the same lattice."""
    a, b = basis[0].copy(), basis[1].copy()
    for _ in range(20):
        if a @ a > b @ b:
            a, b = b, a
        m = np.round((a @ b) / (a @ a))
        if m == 0:
            break
        b = b - m * a
    return np.array([a, b])


def fit_lattice(points: np.ndarray, start: Lattice | None = None) -> Lattice:
    """Least-squares lattice through hole candidates ``(N, 2)``; candidates off it are ignored.

    ``start``: a lattice fitted before (its vectors and origin are the first guess).

    Raises
    ------
    InputError
        Fewer than 3 candidates, or no two independent lattice directions.
    """
    points = np.asarray(points, dtype=np.float64)
    if len(points) < 3:
        raise InputError(f"no hole array found ({len(points)} hole candidates)")
    if start is None:
        basis = _lattice_vectors(points)
        centre = np.median(points, axis=0)
        lattice = Lattice(points[np.argmin(np.hypot(*(points - centre).T))], basis)
    else:
        lattice, basis = Lattice(start.origin, start.basis), start.basis
    keep = np.ones(len(points), bool)
    for _ in range(3):
        index = np.round(lattice.index_of(points))
        residual = points - lattice.sites(index)
        keep = np.hypot(*residual.T) < 0.25 * np.hypot(*basis[0])
        if keep.sum() < 3:
            break
        design = np.column_stack([np.ones(keep.sum()), index[keep]])  # (n, 3): 1, i, j
        coef, *_ = np.linalg.lstsq(design, points[keep], rcond=None)
        lattice = Lattice(coef[0], coef[1:3])
    residual = points[keep] - lattice.sites(np.round(lattice.index_of(points[keep])))
    lattice.rms_px = float(np.sqrt((residual**2).sum(axis=1).mean())) if keep.any() else float("nan")
    return lattice


def _footprint(semi_axes):
    ay, ax = semi_axes
    hy, hx = int(math.ceil(1.1 * ay)), int(math.ceil(1.1 * ax))
    yy, xx = np.mgrid[-hy : hy + 1, -hx : hx + 1]
    r = np.hypot(xx / ax, yy / ay)
    return (hy, hx), r < 0.5, (r > 0.75) & (r < 1.05)


def ring_contrast(
    smooth: np.ndarray, xy: np.ndarray, semi_axes=HOLE_SEMI_AXES_PX
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the rim ring minus mean of the centre of each hole footprint at ``xy``, and the
    centre's mean (NaN where the footprint leaves the frame)."""
    (hy, hx), centre, ring = _footprint(semi_axes)
    out = np.full(len(xy), np.nan)
    bottom = np.full(len(xy), np.nan)
    rows, cols = smooth.shape
    for k, (x, y) in enumerate(np.floor(np.asarray(xy) + 0.5).astype(int)):
        y0, x0 = y - hy, x - hx
        if y0 < 0 or x0 < 0 or y + hy >= rows or x + hx >= cols:
            continue
        patch = smooth[y0 : y + hy + 1, x0 : x + hx + 1]
        bottom[k] = patch[centre].mean()
        out[k] = patch[ring].mean() - bottom[k]
    return out, bottom


def _refine_centres(smooth: np.ndarray, site_xy: np.ndarray, semi_axes) -> np.ndarray:
    """Centroid of the dark core (darker than midway between its footprint's median and minimum) near each site."""
    ay, ax = semi_axes
    hy, hx = int(ay), int(ax)
    out = site_xy.copy()
    rows, cols = smooth.shape
    for k, (x, y) in enumerate(np.floor(site_xy + 0.5).astype(int)):
        if y - hy < 0 or x - hx < 0 or y + hy >= rows or x + hx >= cols:
            continue
        patch = smooth[y - hy : y + hy + 1, x - hx : x + hx + 1]
        weight = np.clip(0.5 * (np.median(patch) + patch.min()) - patch, 0, None)
        if weight.sum() > 0:
            cy, cx = ndimage.center_of_mass(weight)
            out[k] = (x - hx + cx, y - hy + cy)
    return out


def mosaic_lattice(
    candidates: np.ndarray, shape: tuple[int, int], radius_px: float = MOSAIC_RADIUS_PX, share: float = 0.75
) -> Lattice | None:
    """The grid of 72x48 tile centres if the frame is a mosaic of crops, else None.

    A mosaic: the frame's size is a multiple of the window and at least ``share`` of the tiles
    hold a hole candidate within ``radius_px`` of their centre (crops are cut around one hole).
    """
    rows, cols = shape
    if rows % WINDOW[0] or cols % WINDOW[1] or not len(candidates):
        return None
    tile = np.array([WINDOW[1], WINDOW[0]], dtype=float)
    centre = (tile - 1) / 2
    index = np.floor(np.asarray(candidates) / tile).astype(int)
    near = np.hypot(*(np.asarray(candidates) - index * tile - centre).T) < radius_px
    hit = {tuple(t) for t in index[near].tolist()}
    if len(hit) < share * (rows // WINDOW[0]) * (cols // WINDOW[1]):
        return None
    return Lattice(centre, np.diag(tile))


def snap_to_tiles(lattice: Lattice, tolerance_px: float = 1.5) -> Lattice:
    """The lattice of a mosaic of 72x48 tiles, if ``lattice`` is one; else ``lattice`` unchanged.

    A frame whose size is a multiple of the window may be crops re-assembled (or a tool writing
    tiles). It is taken as a mosaic when the tile steps (48, 0) and (0, 72) are lattice vectors
    (within 5 % of a lattice step) and the sites nearest the tile centres lie within
    ``tolerance_px`` of them on average; the lattice is then placed exactly on the tile centres,
    so that each tile is a window and gives back its own prediction. Holes placed at random in
    their tiles move the fitted lattice by their mean offset (about 1.4 / sqrt(tiles) px), which
    would otherwise shift some windows by a pixel.
    """
    tiles = np.array([[WINDOW[1], 0.0], [0.0, WINDOW[0]]])
    coef = np.linalg.solve(lattice.basis.T, tiles.T).T  # each tile step in lattice steps
    steps = np.round(coef)
    if np.abs(coef - steps).max() > 0.05 or abs(np.linalg.det(steps)) < 0.5:
        return lattice
    centre = np.array([(WINDOW[1] - 1) / 2, (WINDOW[0] - 1) / 2])
    offset = lattice.origin + np.round(lattice.index_of(centre[None]))[0] @ lattice.basis - centre
    if np.hypot(*offset) > tolerance_px:
        return lattice
    return Lattice(centre, np.linalg.solve(steps, tiles), lattice.rms_px)


def detect_holes(image: np.ndarray, semi_axes: tuple[float, float] = HOLE_SEMI_AXES_PX) -> Detection:
    """Every lattice site of a frame, whether it holds a hole, and its model window (module docstring).

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` gray frame (uint8).
    semi_axes : (float, float)
        Typical hole semi-axes (rows, columns) in pixels: the detector's scale.
    """
    image = np.asarray(image)
    rows, cols = image.shape
    if rows < WINDOW[0] or cols < WINDOW[1]:
        raise InputError(f"a frame must be at least {WINDOW[0]}x{WINDOW[1]} px, got {rows}x{cols}")
    smooth = ndimage.gaussian_filter(image.astype(np.float32), 1.5)
    tiled = rows % WINDOW[0] == 0 and cols % WINDOW[1] == 0
    candidates = _candidates(image, semi_axes)
    ay, ax = semi_axes
    whole = (
        (candidates[:, 0] >= 1.1 * ax)
        & (candidates[:, 0] <= cols - 1 - 1.1 * ax)
        & (candidates[:, 1] >= 1.1 * ay)
        & (candidates[:, 1] <= rows - 1 - 1.1 * ay)
    )
    tiles = mosaic_lattice(candidates, (rows, cols)) if tiled else None
    try:  # holes cut by the border are pulled inwards: the lattice comes from whole ones
        lattice = fit_lattice(candidates[whole] if whole.sum() >= 3 else candidates)
    except InputError:
        if tiles is None:
            raise
        lattice = tiles
    if tiles is not None:
        snapped = snap_to_tiles(lattice, MOSAIC_RADIUS_PX)
        # the fitted lattice on the tile centres when it holds them (it keeps the holes between
        # tiles); else the tile grid itself: either way every tile is a window
        lattice = snapped if snapped is not lattice else tiles
    corners = np.array([[0, 0], [cols - 1, 0], [0, rows - 1], [cols - 1, rows - 1]], float)
    ij = lattice.index_of(corners)
    lo, hi = np.floor(ij.min(axis=0)) - 1, np.ceil(ij.max(axis=0)) + 1
    i, j = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    index = np.stack([i.ravel(), j.ravel()], axis=1).astype(int)
    xy = lattice.sites(index)
    keep = (xy[:, 0] >= 0) & (xy[:, 0] <= cols - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= rows - 1)
    index, xy = index[keep], xy[keep]
    order = np.lexsort((xy[:, 0], xy[:, 1]))  # rows of holes, top to bottom
    index, xy = index[order], xy[order]

    contrast, bottom = ring_contrast(smooth, xy, semi_axes)
    typical = np.nanmedian(contrast) if np.isfinite(contrast).any() else np.nan
    present = ~(contrast <= PRESENT_FRACTION * typical)  # NaN (footprint off the frame) counts as present
    origin = window_origins(xy)
    inside = (
        (origin[:, 0] >= 0)
        & (origin[:, 1] >= 0)
        & (origin[:, 0] + WINDOW[1] <= cols)
        & (origin[:, 1] + WINDOW[0] <= rows)
    )
    centres = np.where(present[:, None], _refine_centres(smooth, xy, semi_axes), xy)
    # the flags read a hole's contrast and centre where the hole is, not where its site is
    at_hole = ring_contrast(smooth, centres, semi_axes)
    contrast, bottom = (
        np.where(present & np.isfinite(v), v, w) for v, w in zip(at_hole, (contrast, bottom), strict=True)
    )
    detection = Detection(lattice, index, xy, centres, contrast, bottom, present, origin, inside)
    detection.merged = merged_holes(smooth, detection)
    return detection


def merged_holes(smooth: np.ndarray, detection: Detection) -> np.ndarray:
    """Holes whose dark core is connected to a neighbour's: the dark pixels (below midway between the
    frame's hole-centre and top-surface brightness) labelled into regions; two present sites in one
    region are merged."""
    present = detection.present & np.isfinite(detection.contrast)
    xy = np.floor(detection.site_xy + 0.5).astype(int)
    rows, cols = smooth.shape
    ok = present & (xy[:, 0] >= 0) & (xy[:, 0] < cols) & (xy[:, 1] >= 0) & (xy[:, 1] < rows)
    merged = np.zeros(len(xy), bool)
    if ok.sum() < 2:
        return merged
    centre_level = np.median(smooth[xy[ok, 1], xy[ok, 0]])
    top_level = np.median(smooth)
    dark = smooth < 0.5 * (centre_level + top_level)
    labels, _ = ndimage.label(dark)
    label_of = np.where(ok, labels[np.clip(xy[:, 1], 0, rows - 1), np.clip(xy[:, 0], 0, cols - 1)], 0)
    values, counts = np.unique(label_of[label_of > 0], return_counts=True)
    shared = set(values[counts > 1].tolist())
    merged = np.array([lab in shared for lab in label_of])
    return merged


def flag_defects(
    depth: np.ndarray,
    depth_high: np.ndarray,
    xy: np.ndarray,
    shape: tuple[int, int],
    population: np.ndarray,
    contrast: np.ndarray | None = None,
    bottom: np.ndarray | None = None,
    not_open_fraction: float = NOT_OPEN_FRACTION,
    not_open_contrast: float = NOT_OPEN_CONTRAST,
    not_open_brightness_z: float = NOT_OPEN_BRIGHTNESS_Z,
    sigmas: float = OUTLIER_SIGMAS,
    joint_sigmas: float = JOINT_SIGMAS,
) -> tuple[np.ndarray, dict]:
    """Not-open and under-etched holes from their predicted depth against the frame's population.

    The rule: the frame's *expected depth* at each hole is a plane plus a bowl fitted robustly to
    the ``population`` holes' predicted depths (:func:`fit_trend`); ``z_depth`` is a hole's
    residual over the residuals' robust spread (1.4826 x median absolute deviation). Likewise
    ``z_bright`` for the log of the hole centre's brightness (``bottom``): deeper holes image
    darker (escape loss, :mod:`micrometry.synth.sem_physics`), so a shallow hole's centre is
    brighter than the trend. A hole is

    * ``not_open`` when even the top of its 90 % interval (``depth_high``) lies below
      ``not_open_fraction`` (0.5) of its expected depth, or when the image says it is barely a
      recess: its rim-to-centre ``contrast`` is below ``not_open_contrast`` (0.55) of the
      population's median, or ``z_bright`` exceeds ``not_open_brightness_z`` (16). The image
      criteria are needed because a hole that did not open lies far outside every depth the model
      was trained on: its window is flagged unlike the training data and the predicted depth stays
      near the bottom of the trained range;
    * ``under_etched`` otherwise, when the top of its interval lies below the expected depth and
      either ``z_depth < -sigmas`` (4) or both ``z_depth < -joint_sigmas`` and
      ``z_bright > joint_sigmas`` (2.5): the model and the image agree that it is shallow.

    Holes without a finite prediction get no flag.

    Returns
    -------
    flags : ndarray of str
        ``"not_open"``, ``"under_etched"`` or ``""`` per hole.
    trend : dict
        :func:`fit_trend`'s result (with ``sigma_nm``).
    """
    depth = np.asarray(depth, dtype=np.float64)
    depth_high = np.asarray(depth_high, dtype=np.float64)
    xy = np.asarray(xy, dtype=np.float64)
    high = np.where(np.isfinite(depth_high), depth_high, depth)
    fit = fit_trend(xy[population], depth[population], shape)
    expected = trend_at(fit, xy, shape)
    z_depth = (depth - expected) / max(fit["sigma_nm"], 1e-6)
    flags = np.full(len(depth), "", dtype=object)
    finite = np.isfinite(depth)
    not_open = finite & (high < not_open_fraction * expected)
    if contrast is not None and population.any():
        contrast = np.asarray(contrast, dtype=np.float64)
        not_open |= finite & (contrast < not_open_contrast * np.nanmedian(contrast[population]))
    z_bright = np.zeros(len(depth))
    if bottom is not None and population.any():
        log_bottom = np.log(np.maximum(np.asarray(bottom, dtype=np.float64), 1.0))
        bright = fit_trend(xy[population], log_bottom[population], shape)
        z_bright = (log_bottom - trend_at(bright, xy, shape)) / max(bright["sigma_nm"], 1e-6)
        z_bright = np.nan_to_num(z_bright)
        not_open |= finite & (z_bright > not_open_brightness_z)
    shallow = (z_depth < -sigmas) | ((z_depth < -joint_sigmas) & (z_bright > joint_sigmas))
    under = finite & ~not_open & (high < expected) & shallow
    flags[not_open] = "not_open"
    flags[under] = "under_etched"
    return flags, fit


def _trend_design(xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows, cols = shape
    u = 2.0 * xy[:, 0] / max(cols - 1, 1) - 1.0
    v = 2.0 * xy[:, 1] / max(rows - 1, 1) - 1.0
    return np.column_stack([np.ones(len(u)), u, v, (u**2 + v**2) / 2.0])


def fit_trend(xy: np.ndarray, values: np.ndarray, shape: tuple[int, int], clip_sigmas: float = 3.5) -> dict:
    """A plane plus a bowl through ``values`` at ``xy`` over a frame of ``shape``, robustly.

    ``value = centre + tilt_x * u + tilt_y * v + bowl * (u^2 + v^2) / 2`` with ``u, v`` running
    from -1 to 1 across the frame: ``tilt_x``/``tilt_y`` are the change from the centre to the
    right/bottom side, ``bowl`` from the centre to a corner. Least squares, refitted three times
    without the points beyond ``clip_sigmas`` robust spreads. With fewer than 8 points only
    the median is fitted.

    Returns
    -------
    dict
        ``centre``, ``tilt_x``, ``tilt_y``, ``bowl``, ``sigma_nm`` (robust spread of the
        residuals), ``n`` (points used).
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    xy, values = xy[ok], values[ok]
    coef = np.array([np.median(values) if len(values) else np.nan, 0.0, 0.0, 0.0])
    keep = np.ones(len(values), bool)
    if len(values) >= 8:
        design = _trend_design(xy, shape)
        for _ in range(4):
            coef, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
            residual = values - design @ coef
            sigma = 1.4826 * np.median(np.abs(residual[keep] - np.median(residual[keep])))
            keep = np.abs(residual) <= clip_sigmas * max(sigma, 1e-6)
    residual = values - _trend_design(xy, shape) @ coef if len(values) else values
    sigma = 1.4826 * np.median(np.abs(residual - np.median(residual))) if len(values) else float("nan")
    names = ("centre", "tilt_x", "tilt_y", "bowl")
    return {
        **{k: float(c) for k, c in zip(names, coef, strict=True)},
        "sigma_nm": float(sigma),
        "n": int(keep.sum()),
    }


def trend_at(fit: dict, xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """:func:`fit_trend`'s surface at ``xy``."""
    coef = np.array([fit["centre"], fit["tilt_x"], fit["tilt_y"], fit["bowl"]])
    return _trend_design(np.asarray(xy, dtype=np.float64).reshape(-1, 2), shape) @ coef


HOLE_COLUMNS = (
    "hole",
    "x_px",
    "y_px",
    "site_x_px",
    "site_y_px",
    "status",
    "defect",
    "depth_nm",
    "depth_low_nm",
    "depth_high_nm",
    "ood_score",
    "unlike_training_data",
    *FRAME_QUANTITIES[1:],
    "note",
)
SUMMARY_QUANTITIES = FRAME_QUANTITIES


@dataclass
class FrameResult:
    """Everything :func:`analyse_frame` found in one frame."""

    holes: dict[str, np.ndarray]  # HOLE_COLUMNS -> (S,) arrays
    depth_map: np.ndarray  # (H, W) float32: depth below the top surface, NaN where no window
    summary: dict
    detection: Detection


def predict_windows(method, image: np.ndarray, origins: np.ndarray) -> tuple[np.ndarray, dict]:
    """Cut the 72x48 window at each ``origins`` row and predict all in one model call.

    Returns the height maps ``(N, 72, 48)`` and the report (``depth_nm``, ``depth_low_nm``,
    ``depth_high_nm``, ``ood_score``, ``ood``; NaN / False for a model without them).
    """
    rows, cols = WINDOW
    windows = (
        np.stack([image[y : y + rows, x : x + cols] for x, y in origins])
        if len(origins)
        else np.zeros((0, rows, cols), np.uint8)
    )
    if hasattr(method, "predict_report"):
        maps, report = method.predict_report(windows)
    else:
        maps, report = method.predict(windows), None
    if report is None:
        depth = (maps.max(axis=(1, 2)) - maps.min(axis=(1, 2))) if len(maps) else np.zeros(0)
        nan = np.full(len(maps), np.nan)
        report = {
            "depth_nm": depth,
            "depth_low_nm": nan,
            "depth_high_nm": nan,
            "ood_score": nan,
            "ood": np.zeros(len(maps), bool),
        }
    return maps, report


def image_rows(image: np.ndarray) -> tuple[int, int]:
    """Rows ``[top, bottom)`` of the SEM image proper: without a data bar at its bottom or top
    (:func:`micrometry.io.scalebar.find_data_bar`: the band of flat-background rows where the tool
    prints its scale bar and settings)."""
    from micrometry.io.scalebar import find_data_bar

    top, bottom = 0, image.shape[0]
    for start, stop in find_data_bar(image):
        if start == 0:
            top = max(top, stop)
        else:
            bottom = min(bottom, start)
    return (top, bottom) if bottom - top >= WINDOW[0] else (0, image.shape[0])


def analyse_frame(method, image: np.ndarray, nm_per_px: float = 2.0) -> FrameResult:
    """Detect, predict, measure and flag every hole of one frame (module docstring)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        from micrometry.io.image import to_gray_u8

        image = to_gray_u8(image)
    top, bottom = image_rows(image)
    if (top, bottom) != (0, image.shape[0]):
        result = analyse_frame(method, image[top:bottom], nm_per_px)
        for c in ("y_px", "site_y_px"):
            result.holes[c] = result.holes[c] + top
        for flagged in result.summary["flagged"]:
            flagged["y_px"] = round(flagged["y_px"] + top, 1)
        depth_map = np.full(image.shape, np.nan, dtype=np.float32)
        depth_map[top:bottom] = result.depth_map
        result.depth_map = depth_map
        result.summary.update(height_px=int(image.shape[0]), image_rows=[int(top), int(bottom)])
        return result
    det = detect_holes(image)
    n = len(det.site_xy)
    use = det.present & det.inside
    maps, report = predict_windows(method, image, det.window_origin[use])
    holes: dict[str, np.ndarray] = {c: np.full(n, np.nan) for c in HOLE_COLUMNS}
    for c in ("status", "defect", "note", "unlike_training_data"):
        holes[c] = np.full(n, "", dtype=object)
    holes["hole"] = np.arange(n)
    holes["x_px"], holes["y_px"] = det.centre_xy[:, 0], det.centre_xy[:, 1]
    holes["site_x_px"], holes["site_y_px"] = det.site_xy[:, 0], det.site_xy[:, 1]
    holes["status"][:] = "border"
    holes["status"][~det.present] = "missing"
    holes["defect"][~det.present & det.inside] = "missing"
    rows_used = np.where(use)[0]
    for key in ("depth_nm", "depth_low_nm", "depth_high_nm", "ood_score"):
        holes[key][rows_used] = report[key]
    holes["unlike_training_data"][rows_used] = np.where(report["ood"], "yes", "no")
    for k, row in enumerate(rows_used):
        measured = measure_hole(maps[k], nm_per_px=nm_per_px)
        holes["status"][row] = measured["status"]
        holes["note"][row] = measured["note"]
        for c in ("top_cd_x_nm", "top_cd_y_nm", "bottom_cd_x_nm", "bottom_cd_y_nm", "sidewall_angle_deg"):
            holes[c][row] = measured[c]
    flags, depth_trend = flag_defects(
        holes["depth_nm"], holes["depth_high_nm"], det.centre_xy, image.shape, use, det.contrast, det.bottom
    )
    holes["defect"][use] = flags[use]
    holes["defect"][use & det.merged & (flags == "")] = "merged"
    depth_map = stitch(maps, det.window_origin[use], det.site_xy[use], image.shape)
    summary = frame_summary(holes, image.shape, depth_trend, nm_per_px)
    return FrameResult(holes, depth_map, summary, det)


def stitch(maps: np.ndarray, origins: np.ndarray, site_xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """One depth map of the frame: each pixel from the nearest site whose window holds it.

    ``maps`` are the windows' predicted height maps (bottom level + depth x shape); each is turned
    into depth below its own top surface (its maximum) before it is pasted. NaN where no window lies.
    """
    rows, cols = WINDOW
    out = np.full(shape, np.nan, dtype=np.float32)
    best = np.full(shape, np.inf, dtype=np.float32)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    for m, (x0, y0), (sx, sy) in zip(maps, origins, site_xy, strict=True):
        d2 = (xx + x0 - sx) ** 2 + (yy + y0 - sy) ** 2
        region = (slice(y0, y0 + rows), slice(x0, x0 + cols))
        closer = d2 < best[region]
        best[region][closer] = d2[closer]
        out[region][closer] = (m.max() - m)[closer]
    return out


def frame_summary(holes: dict, shape: tuple[int, int], depth_trend: dict, nm_per_px: float) -> dict:
    """Per-frame statistics: counts by status and defect, mean/SD/3-sigma of the normal holes,
    the across-frame trends of depth and top CDs, and the flagged holes."""
    status = holes["status"]
    defect = holes["defect"]
    normal = np.isin(status, ("ok", "partial")) & (defect == "")
    xy = np.column_stack([holes["x_px"], holes["y_px"]])
    stats = {}
    for q in SUMMARY_QUANTITIES:
        v = np.asarray(holes[q], dtype=np.float64)[normal]
        v = v[np.isfinite(v)]
        sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        stats[q] = {
            "n": int(len(v)),
            "mean": float(v.mean()) if len(v) else float("nan"),
            "sd": sd,
            "three_sigma": 3 * sd,
        }
    trends = {"depth_nm": depth_trend}
    for q in ("top_cd_x_nm", "top_cd_y_nm"):
        trends[q] = fit_trend(xy[normal], np.asarray(holes[q], dtype=np.float64)[normal], shape)
    flagged = [
        {
            "hole": int(i),
            "x_px": round(float(xy[i, 0]), 1),
            "y_px": round(float(xy[i, 1]), 1),
            "defect": str(defect[i]),
            "depth_nm": None
            if not np.isfinite(holes["depth_nm"][i])
            else round(float(holes["depth_nm"][i]), 2),
        }
        for i in np.where(defect != "")[0]
    ]
    return {
        "height_px": int(shape[0]),
        "width_px": int(shape[1]),
        "nm_per_px": float(nm_per_px),
        "holes": int(len(status)),
        "status": {s: int((status == s).sum()) for s in STATUSES},
        "defects": {d: int((defect == d).sum()) for d in ("not_open", "under_etched", "merged", "missing")},
        # unflagged measured holes whose window looks unlike the model's training data
        "unlike_training_data": int((normal & (holes["unlike_training_data"] == "yes")).sum()),
        "measured_unflagged": int(normal.sum()),
        "statistics": stats,
        "trend": trends,
        "flagged": flagged,
    }


def hole_rows(name: str, holes: dict) -> list[dict]:
    """CSV-ready rows (``frame`` then :data:`HOLE_COLUMNS`) of one frame's hole table."""
    rows = []
    for i in range(len(holes["hole"])):
        row = {"frame": name}
        for c in HOLE_COLUMNS:
            v = holes[c][i]
            if isinstance(v, (float, np.floating)):
                digits = 1 if c.endswith("_deg") or c in ("x_px", "y_px", "site_x_px", "site_y_px") else 2
                row[c] = "" if not np.isfinite(v) else f"{float(v):.{digits}f}"
            else:
                row[c] = str(v)
        rows.append(row)
    return rows


def analyse_frames(
    paths: list[Path], method, out: str | Path, nm_per_px: float = 2.0, overwrite: bool = False
) -> dict:
    """:func:`analyse_frame` for each frame file; writes ``out/holes.csv`` (every hole, a ``frame``
    column first), ``out/<frame>_depth.tif`` (stitched depth, :func:`write_depth_tiff`) and
    ``out/summary.json`` (``{"frames": {name: summary}}``). The folder appears whole or not at all.

    Returns the summaries by frame name.
    """
    import csv
    import json

    from micrometry.io.atomic import atomic_dir
    from micrometry.io.image import read_image
    from micrometry.io.output_names import unique_output_names
    from micrometry.progress import track

    names = unique_output_names(paths, "_depth.tif")
    summaries: dict[str, dict] = {}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        rows = []
        for path, tif_name in track(list(zip(paths, names, strict=True)), "analysing frames"):
            image = read_image(path)
            if image.ndim != 2:
                raise InputError("not a gray image", path)
            try:
                result = analyse_frame(method, image, nm_per_px)
            except InputError as exc:
                raise InputError(exc.message, path) from None
            write_depth_tiff(tmp / tif_name, result.depth_map, nm_per_px)
            rows += hole_rows(Path(path).name, result.holes)
            summaries[Path(path).name] = {
                **result.summary,
                "source": str(Path(path).resolve()),
                "depth_map": tif_name,
            }
        with open(tmp / "holes.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=("frame", *HOLE_COLUMNS))
            writer.writeheader()
            writer.writerows(rows)
        (tmp / "summary.json").write_text(
            json.dumps({"frames": json_safe(summaries)}, indent=2, allow_nan=False) + "\n"
        )
    return summaries


def json_safe(value):
    """NaN and infinities -> None (JSON null), recursively."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
