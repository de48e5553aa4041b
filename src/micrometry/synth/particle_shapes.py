"""Particle outlines for the synthetic suspensions: population knobs, shape families, true descriptors.

Particles come from a log-normal size distribution (area-equivalent diameter),
with four shape families (ellipses, rounded polygons, irregular blobs, rods),
an aspect-ratio distribution and a roughness (high-frequency outline noise).
Their true ImageJ-style descriptors are computed analytically on the outline
polygon (areas and calipers from :mod:`micrometry.geometry`, shared with the
morphometry of measured masks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from micrometry.geometry import calipers, polygon_area

SHAPES = ("ellipse", "polygon", "blob", "rod")


@dataclass
class PopulationParams:
    """What particles there are: how many, how big, which shapes, how placed.

    Attributes
    ----------
    count_range : (int, int)
        Particles per image, drawn uniformly (inclusive), for a 1024x1280
        frame; scaled with the image area for other sizes.
    size_median_px : float
        Median area-equivalent diameter (log-normal).
    size_sigma : float
        Standard deviation of ln(diameter).
    size_range_px : (float, float)
        Diameters outside are redrawn (truncated log-normal).
    shape_weights : dict
        Relative frequency of each shape family (``ellipse``, ``polygon``,
        ``blob``, ``rod``).
    aspect_median : float
        Median aspect ratio (major/minor) of ellipses, polygons and blobs (log-normal, >= 1).
    aspect_sigma : float
        Standard deviation of ln(aspect); draws below 1 are set to 1.
    rod_aspect_range : (float, float)
        Aspect ratio of rods (length/width), uniform.
    roughness : float
        Relative amplitude (standard deviation of the radius) of
        high-frequency outline noise (harmonics 6-20); 0 gives smooth outlines.
    blob_irregularity : float
        Amplitude of the low harmonics (2-5) that make blobs irregular.
    transparent_fraction : float
        Share of transparent (refracting) particles; the others absorb.
    cluster_fraction : float
        Share of particles placed against an earlier one (touching or overlapping).
    cluster_gap_range : (float, float)
        Centre distance of a clustered pair as a fraction of the sum of their
        radii: below 1 overlaps, about 1 touches.
    border_margin : float
        Centres may lie this fraction of a diameter outside the frame (border-cut particles).
    min_visible_area : int
        Visible parts smaller than this (px) are not annotated.
    min_fragment_area : int
        Pieces of a visible part smaller than this (px) are not annotated.
    coverage : float or None
        When set, particles are added until their summed (whole) area
        reaches this fraction of the frame, instead of drawing a count from
        ``count_range``: the density then stays the same whatever the sizes.
    keep_apart : bool
        Place particles so that they touch rather than overlap: a clustered
        particle is set against its neighbour at ``cluster_gap_range`` of the
        distance between their outlines along the line of centres, and a
        placement that would cut into another particle is redrawn (up to 10
        times). False (the default) measures the gap between equivalent
        circles and lets particles land on each other.
    occlusion : bool
        Draw each particle opaque over the ones below it, so the image shows
        exactly the visible parts the annotations hold. False (the default)
        draws particles as translucent layers: an overlap shows both, and the
        annotation gives it to the later (top) particle.
    """

    count_range: tuple[int, int] = (40, 200)
    size_median_px: float = 30.0
    size_sigma: float = 0.5
    size_range_px: tuple[float, float] = (12.0, 110.0)
    shape_weights: dict = field(
        default_factory=lambda: {"ellipse": 0.3, "polygon": 0.2, "blob": 0.35, "rod": 0.15}
    )
    aspect_median: float = 1.35
    aspect_sigma: float = 0.2
    rod_aspect_range: tuple[float, float] = (2.5, 6.0)
    roughness: float = 0.03
    blob_irregularity: float = 0.12
    transparent_fraction: float = 0.35
    cluster_fraction: float = 0.3
    cluster_gap_range: tuple[float, float] = (0.7, 1.05)
    border_margin: float = 0.4
    min_visible_area: int = 20
    min_fragment_area: int = 8
    coverage: float | None = None
    keep_apart: bool = False
    occlusion: bool = False


def _chaikin(points: np.ndarray, iterations: int) -> np.ndarray:
    """Corner cutting: a polygon with rounded corners."""
    for _ in range(iterations):
        nxt = np.roll(points, -1, axis=0)
        points = np.stack([0.75 * points + 0.25 * nxt, 0.25 * points + 0.75 * nxt], axis=1).reshape(-1, 2)
    return points


def _radial_noise(
    theta: np.ndarray, amplitude: float, harmonics: range, rng: np.random.Generator
) -> np.ndarray:
    """Smooth random radius modulation with the given harmonics, standard deviation ``amplitude``."""
    if amplitude <= 0:
        return np.zeros_like(theta)
    ks = np.asarray(list(harmonics))
    coeffs = rng.normal(0, 1, len(ks)) / np.sqrt(ks)
    phases = rng.uniform(0, 2 * np.pi, len(ks))
    wave = (coeffs[:, None] * np.cos(ks[:, None] * theta[None, :] + phases[:, None])).sum(0)
    return amplitude * wave / max(float(np.sqrt((coeffs**2).sum() / 2)), 1e-9)


def unit_outline(
    kind: str, aspect: float, pop: PopulationParams, rng: np.random.Generator, n: int = 128
) -> np.ndarray:
    """A closed outline ``(n, 2)`` centred near 0 with its long axis along x (arbitrary scale)."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    if kind == "ellipse":
        pts = np.stack([np.sqrt(aspect) * np.cos(theta), np.sin(theta) / np.sqrt(aspect)], axis=1)
    elif kind == "polygon":
        k = int(rng.integers(3, 9))
        angles = np.sort((np.arange(k) + rng.uniform(-0.3, 0.3, k)) * 2 * np.pi / k)
        radii = rng.uniform(0.85, 1.15, k)
        corners = np.stack(
            [radii * np.cos(angles) * np.sqrt(aspect), radii * np.sin(angles) / np.sqrt(aspect)], 1
        )
        pts = _chaikin(corners, 4)
        theta = np.arctan2(pts[:, 1], pts[:, 0])
    elif kind == "blob":
        r = 1.0 + _radial_noise(theta, pop.blob_irregularity, range(2, 6), rng)
        r = np.maximum(r, 0.35)
        pts = np.stack([r * np.cos(theta) * np.sqrt(aspect), r * np.sin(theta) / np.sqrt(aspect)], axis=1)
    elif kind == "rod":
        # stadium: a rectangle with semicircular caps; aspect = length / width
        # radius 1 (width 2), length 2 * half + 2 = 2 * aspect
        half = max(aspect - 1.0, 0.0)
        cap = np.linspace(-np.pi / 2, np.pi / 2, n // 2)
        right = np.stack([half + np.cos(cap), np.sin(cap)], axis=1)
        left = np.stack([-half - np.cos(cap), -np.sin(cap)], axis=1)
        pts = np.concatenate([right, left])
        theta = np.arctan2(pts[:, 1], pts[:, 0])
    else:
        raise ValueError(f"unknown shape {kind!r}; choose one of {SHAPES}")
    if pop.roughness > 0:
        centre = pts.mean(axis=0)
        pts = (
            centre + (pts - centre) * (1.0 + _radial_noise(theta, pop.roughness, range(6, 21), rng))[:, None]
        )
    return pts


def polygon_descriptors(pts: np.ndarray) -> dict:
    """ImageJ-style descriptors of a closed polygon, computed analytically (px, degrees).

    The ellipse is the one with the polygon's second moments (as ImageJ fits);
    Feret and MinFeret are the largest and smallest caliper widths of the
    convex hull (exact rotating calipers).

    Parameters
    ----------
    pts : ndarray
        ``(n, 2)`` outline vertices (x, y), in order.

    Returns
    -------
    dict
        ``Area, Perim., Circ., Major, Minor, AR, Angle, Round, Solidity,
        Feret, MinFeret, EqDiameter, X, Y``.
    """
    x, y = pts[:, 0], pts[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    a = cross.sum() / 2
    cx = ((x + xn) * cross).sum() / (6 * a)
    cy = ((y + yn) * cross).sum() / (6 * a)
    sxx = ((x**2 + x * xn + xn**2) * cross).sum() / 12 / a - cx**2
    syy = ((y**2 + y * yn + yn**2) * cross).sum() / 12 / a - cy**2
    sxy = ((x * yn + 2 * x * y + 2 * xn * yn + xn * y) * cross).sum() / 24 / a - cx * cy
    common = np.sqrt(((sxx - syy) / 2) ** 2 + sxy**2)
    l1, l2 = (sxx + syy) / 2 + common, max((sxx + syy) / 2 - common, 1e-12)
    # image y points down: ImageJ's angle is counter-clockwise as seen on screen
    angle = np.degrees(np.arctan2(-2 * sxy, sxx - syy) / 2) % 180
    area = abs(a)
    perimeter = float(np.hypot(xn - x, yn - y).sum())
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    feret, min_feret, _ = calipers(hull)
    return {
        "Area": area,
        "Perim.": perimeter,
        "Circ.": min(1.0, 4 * np.pi * area / perimeter**2),
        "Major": 4 * np.sqrt(l1),
        "Minor": 4 * np.sqrt(l2),
        "AR": float(np.sqrt(l1 / l2)),
        "Angle": float(angle),
        "Round": 4 * area / (np.pi * (4 * np.sqrt(l1)) ** 2),
        "Solidity": area / polygon_area(hull),
        "Feret": feret,
        "MinFeret": min_feret,
        "EqDiameter": float(np.sqrt(4 * area / np.pi)),
        "X": float(cx),
        "Y": float(cy),
    }


def sample_diameters(pop: PopulationParams, n: int, rng: np.random.Generator) -> np.ndarray:
    """Truncated log-normal area-equivalent diameters."""
    lo, hi = pop.size_range_px
    out = np.empty(0)
    while out.size < n:
        d = np.exp(rng.normal(np.log(pop.size_median_px), pop.size_sigma, 2 * n + 8))
        out = np.concatenate([out, d[(d >= lo) & (d <= hi)]])
    return out[:n]
