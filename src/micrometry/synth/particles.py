"""Synthetic brightfield images of particles in suspension, with exact instance ground truth.

A camera looks through a fluid cell lit from behind. The image is
``illumination x transmission + noise``:

* **illumination**: a lamp level, a linear gradient, vignetting and slow
  blotches (dirty optics), all smooth;
* **transmission** starts at 1 and every object multiplies its own local patch
  by ``1 + delta``, where ``delta`` is the object's optical signature blurred by
  the optics' PSF plus its own defocus: absorbing particles darken (with a
  darker edge and textured interior), transparent ones barely change inside
  but show a refraction rim and a halo whose sign flips with the side of the
  focal plane; bubbles, specks, fibres and out-of-focus ghosts are drawn the
  same way but never annotated;
* **noise**: Poisson photon noise at a given full-well count, Gaussian read
  noise, 8-bit quantisation.

Particles come from a log-normal size distribution (area-equivalent diameter),
with four shape families (ellipses, rounded polygons, irregular blobs, rods),
an aspect-ratio distribution and a roughness (high-frequency outline noise).
Some are placed against earlier ones, so they touch or overlap; later ones lie
on top, and the annotated mask of a particle is its *visible* part (one pixel
belongs to one particle). Particles cut by the image border are annotated as
far as they are visible. Everything is rendered in local patches, so an image
costs a few full-frame operations plus a small patch per object.

Ground truth per particle (whole, unoccluded shape, measured analytically on
its outline polygon, ImageJ column names) goes to a CSV; the visible masks go
to COCO annotations (polygons; RLE for the rare visible part with a hole).

Every knob is a field of :class:`PopulationParams`, :class:`OpticsParams` or
:class:`DistractorParams`, gathered in :class:`SuspensionParams`. The same seed
gives the same images, byte for byte; each image has its own seed derived from
(seed, split, index), so image ``k`` of a split does not depend on how many
images are generated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi

from micrometry.io.coco import DEFAULT_CATEGORY, crop_to_rle, polygons_from_mask

SHAPES = ("ellipse", "polygon", "blob", "rod")


# ----------------------------------------------------------------------------- parameters


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
    """

    count_range: tuple[int, int] = (40, 200)
    size_median_px: float = 30.0
    size_sigma: float = 0.5
    size_range_px: tuple[float, float] = (12.0, 110.0)
    shape_weights: dict = field(default_factory=lambda: {"ellipse": 0.3, "polygon": 0.2, "blob": 0.35, "rod": 0.15})
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


@dataclass
class OpticsParams:
    """How the camera sees: illumination, optics, particle contrast, noise.

    Attributes
    ----------
    background_level_range : (float, float)
        Mean background gray level (8-bit scale).
    gradient : float
        Peak relative change of a linear illumination gradient across the frame.
    vignetting : float
        Relative darkening in the corners (``1 - v r^2``, r = 1 at a corner).
    blotch_amplitude : float
        Relative amplitude of slow illumination blotches.
    psf_sigma_px : float
        Gaussian blur of the in-focus optics.
    defocus_max_sigma_px : float
        Extra blur at the largest distance from the focal plane.
    defocus_power : float
        Blur = max * |z|**power for z uniform in [-1, 1]; > 1 keeps most particles sharp.
    absorbing_density_range : (float, float)
        Fraction of light an absorbing particle removes in its interior.
    edge_darkening : float
        Extra absorption at an absorbing particle's edge (relative to its density).
    texture_amplitude : float
        Relative variation of absorption inside a particle (smooth texture).
    transparent_gain_range : (float, float)
        Relative brightness change inside a transparent particle.
    rim_depth_range : (float, float)
        Darkening of the refraction rim just inside a transparent particle's edge.
    rim_width_px : float
        Decay length of the rim.
    halo_amplitude_range : (float, float)
        Brightening just outside a particle's edge (both kinds).
    halo_width_px : float
        Decay length of the halo.
    full_well : float
        Photo-electrons at gray level 255 (Poisson noise; lower is noisier).
    read_noise_dn : float
        Gaussian read noise in gray levels.
    """

    background_level_range: tuple[float, float] = (150.0, 200.0)
    gradient: float = 0.12
    vignetting: float = 0.3
    blotch_amplitude: float = 0.04
    psf_sigma_px: float = 0.8
    defocus_max_sigma_px: float = 5.0
    defocus_power: float = 2.0
    absorbing_density_range: tuple[float, float] = (0.2, 0.75)
    edge_darkening: float = 0.4
    texture_amplitude: float = 0.15
    transparent_gain_range: tuple[float, float] = (-0.03, 0.08)
    rim_depth_range: tuple[float, float] = (0.2, 0.5)
    rim_width_px: float = 1.8
    halo_amplitude_range: tuple[float, float] = (0.03, 0.15)
    halo_width_px: float = 2.5
    full_well: float = 800.0
    read_noise_dn: float = 2.0


@dataclass
class DistractorParams:
    """Things in the image that are not particles and must not be segmented.

    Attributes
    ----------
    bubbles_range : (int, int)
        Air bubbles per image: round, dark thick ring, bright centre.
    bubble_diameter_range_px : (float, float)
    specks_range : (int, int)
        Dust specks (tiny dark dots).
    speck_diameter_range_px : (float, float)
    fibres_range : (int, int)
        Thin curved fibres.
    fibre_length_range_px : (float, float)
    fibre_width_range_px : (float, float)
    ghosts_range : (int, int)
        Far out-of-focus particles: large, faint, very blurred.
    ghost_blur_range_px : (float, float)
    ghost_diameter_range_px : (float, float)
    ghost_darkness_range : (float, float)
        Fraction of light a ghost removes (before its blur spreads it).
    bubble_ring_darkness : float
        Fraction of light lost in a bubble's ring (total internal reflection).
    bubble_centre_gain : float
        Relative brightening of a bubble's centre (it acts as a lens).
    fibre_darkness_range : (float, float)
    speck_darkness_range : (float, float)
    """

    bubbles_range: tuple[int, int] = (0, 4)
    bubble_diameter_range_px: tuple[float, float] = (15.0, 70.0)
    specks_range: tuple[int, int] = (10, 60)
    speck_diameter_range_px: tuple[float, float] = (1.5, 5.0)
    fibres_range: tuple[int, int] = (0, 3)
    fibre_length_range_px: tuple[float, float] = (60.0, 300.0)
    fibre_width_range_px: tuple[float, float] = (1.0, 2.5)
    ghosts_range: tuple[int, int] = (0, 6)
    ghost_blur_range_px: tuple[float, float] = (7.0, 15.0)
    ghost_diameter_range_px: tuple[float, float] = (30.0, 120.0)
    ghost_darkness_range: tuple[float, float] = (0.05, 0.2)
    bubble_ring_darkness: float = 0.7
    bubble_centre_gain: float = 0.25
    fibre_darkness_range: tuple[float, float] = (0.2, 0.5)
    speck_darkness_range: tuple[float, float] = (0.3, 0.8)


@dataclass
class SuspensionParams:
    """Everything that defines a synthetic suspension image."""

    height: int = 1024
    width: int = 1280
    population: PopulationParams = field(default_factory=PopulationParams)
    optics: OpticsParams = field(default_factory=OpticsParams)
    distractors: DistractorParams = field(default_factory=DistractorParams)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SuspensionParams":
        """Parameters from a (possibly partial) nested dictionary, as ``to_dict`` writes it.

        Raises
        ------
        ValueError
            An unknown key (the message names it).
        """
        groups = {"population": PopulationParams, "optics": OpticsParams, "distractors": DistractorParams}
        kwargs = {}
        for key, value in data.items():
            if key in groups:
                if not isinstance(value, dict):
                    raise ValueError(f"{key!r} must be an object of parameters")
                known = {f.name for f in dataclasses.fields(groups[key])}
                unknown = sorted(set(value) - known)
                if unknown:
                    raise ValueError(f"unknown {key} parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
                kwargs[key] = groups[key](**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
            elif key in ("height", "width"):
                kwargs[key] = int(value)
            else:
                raise ValueError(f"unknown parameter group {key!r}; known: height, width, {', '.join(groups)}")
        return cls(**kwargs)


# The two batches differ in shape only: B is more elongated and rougher.
BATCH_POPULATIONS = {
    "A": {"aspect_median": 1.25, "roughness": 0.02, "shape_weights": {"ellipse": 0.4, "polygon": 0.2, "blob": 0.4, "rod": 0.0}},
    "B": {"aspect_median": 1.9, "roughness": 0.08, "shape_weights": {"ellipse": 0.4, "polygon": 0.2, "blob": 0.4, "rod": 0.0}},
}


def batch_params(params: SuspensionParams, batch: str) -> SuspensionParams:
    """The parameters of batch ``A`` or ``B`` (see :data:`BATCH_POPULATIONS`)."""
    population = dataclasses.replace(params.population, **BATCH_POPULATIONS[batch])
    return dataclasses.replace(params, population=population)


# ----------------------------------------------------------------------------- outlines


def _chaikin(points: np.ndarray, iterations: int) -> np.ndarray:
    """Corner cutting: a polygon with rounded corners."""
    for _ in range(iterations):
        nxt = np.roll(points, -1, axis=0)
        points = np.stack([0.75 * points + 0.25 * nxt, 0.25 * points + 0.75 * nxt], axis=1).reshape(-1, 2)
    return points


def _radial_noise(theta: np.ndarray, amplitude: float, harmonics: range, rng: np.random.Generator) -> np.ndarray:
    """Smooth random radius modulation with the given harmonics, standard deviation ``amplitude``."""
    if amplitude <= 0:
        return np.zeros_like(theta)
    ks = np.asarray(list(harmonics))
    coeffs = rng.normal(0, 1, len(ks)) / np.sqrt(ks)
    phases = rng.uniform(0, 2 * np.pi, len(ks))
    wave = (coeffs[:, None] * np.cos(ks[:, None] * theta[None, :] + phases[:, None])).sum(0)
    return amplitude * wave / max(float(np.sqrt((coeffs**2).sum() / 2)), 1e-9)


def unit_outline(kind: str, aspect: float, pop: PopulationParams, rng: np.random.Generator,
                 n: int = 128) -> np.ndarray:
    """A closed outline ``(n, 2)`` centred near 0 with its long axis along x (arbitrary scale)."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    if kind == "ellipse":
        pts = np.stack([np.sqrt(aspect) * np.cos(theta), np.sin(theta) / np.sqrt(aspect)], axis=1)
    elif kind == "polygon":
        k = int(rng.integers(3, 9))
        angles = np.sort((np.arange(k) + rng.uniform(-0.3, 0.3, k)) * 2 * np.pi / k)
        radii = rng.uniform(0.85, 1.15, k)
        corners = np.stack([radii * np.cos(angles) * np.sqrt(aspect), radii * np.sin(angles) / np.sqrt(aspect)], 1)
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
        pts = centre + (pts - centre) * (1.0 + _radial_noise(theta, pop.roughness, range(6, 21), rng))[:, None]
    return pts


def polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def polygon_descriptors(pts: np.ndarray) -> dict:
    """ImageJ-style descriptors of a closed polygon, computed analytically (px, degrees).

    The ellipse is the one with the polygon's second moments (as ImageJ fits);
    Feret and MinFeret are the largest and smallest caliper widths.
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
    dirs = np.linspace(0, np.pi, 180, endpoint=False)
    widths = np.ptp(hull @ np.stack([np.cos(dirs), np.sin(dirs)]), axis=0)
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
        "Feret": float(widths.max()),
        "MinFeret": float(widths.min()),
        "EqDiameter": float(np.sqrt(4 * area / np.pi)),
        "X": float(cx),
        "Y": float(cy),
    }


# ----------------------------------------------------------------------------- sampling


@dataclass
class Particle:
    """One particle as sampled: outline in image coordinates (COCO convention) and optics."""

    kind: str
    outline: np.ndarray  # (n, 2) x, y; pixel i spans [i, i+1)
    transparent: bool
    defocus_sigma: float
    z: float
    density: float  # absorbing: fraction of light removed; transparent: interior gain
    rim_depth: float
    halo: float


def sample_diameters(pop: PopulationParams, n: int, rng: np.random.Generator) -> np.ndarray:
    """Truncated log-normal area-equivalent diameters."""
    lo, hi = pop.size_range_px
    out = np.empty(0)
    while out.size < n:
        d = np.exp(rng.normal(np.log(pop.size_median_px), pop.size_sigma, 2 * n + 8))
        out = np.concatenate([out, d[(d >= lo) & (d <= hi)]])
    return out[:n]


def sample_particles(params: SuspensionParams, rng: np.random.Generator) -> list[Particle]:
    """Sizes, shapes, positions (some clustered), depths and optical properties."""
    pop, opt = params.population, params.optics
    h, w = params.height, params.width
    scale = (h * w) / (1024 * 1280)
    lo, hi = pop.count_range
    n = max(1, int(round(rng.integers(lo, hi + 1) * scale)))
    diameters = sample_diameters(pop, n, rng)
    kinds = list(pop.shape_weights)
    weights = np.array([pop.shape_weights[k] for k in kinds], dtype=np.float64)
    kind_idx = rng.choice(len(kinds), size=n, p=weights / weights.sum())
    particles: list[Particle] = []
    centres: list[tuple[float, float, float]] = []  # x, y, radius
    for i in range(n):
        kind = kinds[kind_idx[i]]
        d = diameters[i]
        if kind == "rod":
            aspect = rng.uniform(*pop.rod_aspect_range)
        else:
            aspect = max(1.0, float(np.exp(rng.normal(np.log(pop.aspect_median), pop.aspect_sigma))))
        pts = unit_outline(kind, aspect, pop, rng)
        pts *= np.sqrt((np.pi * d * d / 4) / polygon_area(pts))
        angle = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = pts @ rot.T
        if centres and rng.random() < pop.cluster_fraction:
            px, py, pr = centres[int(rng.integers(len(centres)))]
            direction = rng.uniform(0, 2 * np.pi)
            dist = (pr + d / 2) * rng.uniform(*pop.cluster_gap_range)
            cx, cy = px + dist * np.cos(direction), py + dist * np.sin(direction)
        else:
            margin = pop.border_margin * d
            cx, cy = rng.uniform(-margin, w + margin), rng.uniform(-margin, h + margin)
        centres.append((cx, cy, d / 2))
        z = rng.uniform(-1, 1)
        transparent = bool(rng.random() < pop.transparent_fraction)
        particles.append(Particle(
            kind=kind,
            outline=pts + np.array([cx, cy]),
            transparent=transparent,
            defocus_sigma=opt.defocus_max_sigma_px * abs(z) ** opt.defocus_power,
            z=z,
            density=rng.uniform(*(opt.transparent_gain_range if transparent else opt.absorbing_density_range)),
            rim_depth=rng.uniform(*opt.rim_depth_range),
            halo=rng.uniform(*opt.halo_amplitude_range),
        ))
    return particles


# ----------------------------------------------------------------------------- rendering


def _patch_bounds(outline: np.ndarray, pad: float, h: int, w: int) -> tuple[int, int, int, int] | None:
    x0 = max(int(np.floor(outline[:, 0].min() - pad)), 0)
    y0 = max(int(np.floor(outline[:, 1].min() - pad)), 0)
    x1 = min(int(np.ceil(outline[:, 0].max() + pad)) + 1, w)
    y1 = min(int(np.ceil(outline[:, 1].max() + pad)) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _fill(outline: np.ndarray, x0: int, y0: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(soft coverage in [0, 1], hard mask) of a polygon in a patch whose corner is (x0, y0).

    COCO coordinates put pixel centres at i + 0.5, OpenCV at i: shift by 0.5.
    """
    pts = np.round((outline - [x0 + 0.5, y0 + 0.5]) * 16).astype(np.int32)
    soft = np.zeros(shape, np.uint8)
    cv2.fillPoly(soft, [pts], 255, lineType=cv2.LINE_AA, shift=4)
    soft_f = soft.astype(np.float32) / 255.0
    return soft_f, soft >= 128


def _blur(delta: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(delta, (0, 0), sigma) if sigma > 0.05 else delta


def _smooth_texture(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise for particle interiors."""
    noise = rng.normal(0, 1, shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), max(scale, 1.0))
    return noise / max(float(noise.std()), 1e-6)


def particle_delta(p: Particle, soft: np.ndarray, hard: np.ndarray, opt: OpticsParams,
                   rng: np.random.Generator) -> np.ndarray:
    """The particle's signature ``delta`` (transmission = 1 + delta) in its patch, before blur."""
    d_in = cv2.distanceTransform(hard.astype(np.uint8), cv2.DIST_L2, 3)
    d_out = cv2.distanceTransform((~hard).astype(np.uint8), cv2.DIST_L2, 3)
    outside = 1.0 - soft
    halo = p.halo * np.exp(-d_out / opt.halo_width_px) * outside
    if p.transparent:
        rim = -p.rim_depth * np.exp(-d_in / opt.rim_width_px) * soft
        delta = p.density * soft + rim + halo
        if p.z < 0:  # the other side of focus: rim and halo swap contrast
            delta = p.density * soft - (rim + halo)
    else:
        texture = 1.0 + opt.texture_amplitude * _smooth_texture(soft.shape, 3.0, rng)
        edge = 1.0 + opt.edge_darkening * np.exp(-d_in / opt.rim_width_px)
        delta = -np.clip(p.density * texture * edge, 0, 0.97) * soft + halo
    return delta.astype(np.float32)


def illumination(params: SuspensionParams, rng: np.random.Generator) -> np.ndarray:
    """Smooth lamp field (gray levels): level x gradient x vignetting x blotches, built at low resolution."""
    opt = params.optics
    h, w = params.height, params.width
    sh, sw = max(2, h // 16), max(2, w // 16)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    u = (xx + 0.5) / sw * 2 - 1
    v = (yy + 0.5) / sh * 2 - 1
    direction = rng.uniform(0, 2 * np.pi)
    gradient = 1 + opt.gradient * (u * np.cos(direction) + v * np.sin(direction)) / np.sqrt(2)
    cx, cy = rng.normal(0, 0.15, 2)
    vignette = 1 - opt.vignetting * ((u - cx) ** 2 + (v - cy) ** 2) / 2
    blotches = cv2.GaussianBlur(rng.normal(0, 1, (sh, sw)).astype(np.float32), (0, 0), max(sh, sw) / 8)
    blotches *= opt.blotch_amplitude / max(float(blotches.std()), 1e-6)
    small = rng.uniform(*opt.background_level_range) * gradient * vignette * (1 + blotches)
    return cv2.resize(small.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def _apply(transmission: np.ndarray, delta: np.ndarray, x0: int, y0: int) -> None:
    region = transmission[y0:y0 + delta.shape[0], x0:x0 + delta.shape[1]]
    region *= 1.0 + delta


def render_distractors(transmission: np.ndarray, params: SuspensionParams, rng: np.random.Generator) -> None:
    """Bubbles, specks, fibres and ghosts, drawn into ``transmission`` in place (never annotated)."""
    dp, opt = params.distractors, params.optics
    h, w = transmission.shape
    theta = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    circle = np.stack([np.cos(theta), np.sin(theta)], axis=1)

    for _ in range(int(rng.integers(dp.ghosts_range[0], dp.ghosts_range[1] + 1))):
        d = rng.uniform(*dp.ghost_diameter_range_px)
        sigma = rng.uniform(*dp.ghost_blur_range_px)
        outline = circle * (d / 2) * rng.uniform(0.7, 1.3, (1, 2)) + rng.uniform([0, 0], [w, h])
        bounds = _patch_bounds(outline, 3 * sigma + 2, h, w)
        if bounds:
            x0, y0, x1, y1 = bounds
            soft, _ = _fill(outline, x0, y0, (y1 - y0, x1 - x0))
            _apply(transmission, _blur(-rng.uniform(*dp.ghost_darkness_range) * soft, sigma), x0, y0)

    for _ in range(int(rng.integers(dp.bubbles_range[0], dp.bubbles_range[1] + 1))):
        d = rng.uniform(*dp.bubble_diameter_range_px)
        outline = circle * d / 2 + rng.uniform([0, 0], [w, h])
        bounds = _patch_bounds(outline, 4, h, w)
        if bounds:
            x0, y0, x1, y1 = bounds
            soft, hard = _fill(outline, x0, y0, (y1 - y0, x1 - x0))
            d_in = cv2.distanceTransform(hard.astype(np.uint8), cv2.DIST_L2, 3)
            ring_width = 0.18 * d
            # total internal reflection: a thick dark ring, a bright centre
            delta = (-dp.bubble_ring_darkness * (d_in < ring_width)
                     + dp.bubble_centre_gain * (d_in > 1.6 * ring_width)) * soft
            _apply(transmission, _blur(delta.astype(np.float32), opt.psf_sigma_px + 0.5), x0, y0)

    for _ in range(int(rng.integers(dp.fibres_range[0], dp.fibres_range[1] + 1))):
        length = rng.uniform(*dp.fibre_length_range_px)
        steps = max(4, int(length / 8))
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.2, steps))
        path = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], 1) * (length / steps), axis=0)
        path += rng.uniform([0, 0], [w, h])
        bounds = _patch_bounds(path, 6, h, w)
        if bounds:
            x0, y0, x1, y1 = bounds
            patch = np.zeros((y1 - y0, x1 - x0), np.uint8)
            width = rng.uniform(*dp.fibre_width_range_px)
            cv2.polylines(patch, [np.round((path - [x0 + 0.5, y0 + 0.5]) * 16).astype(np.int32)], False, 255,
                          thickness=max(1, int(round(width))), lineType=cv2.LINE_AA, shift=4)
            delta = -rng.uniform(*dp.fibre_darkness_range) * patch.astype(np.float32) / 255
            _apply(transmission, _blur(delta, opt.psf_sigma_px + rng.uniform(0, 1.5)), x0, y0)

    for _ in range(int(rng.integers(dp.specks_range[0], dp.specks_range[1] + 1))):
        d = rng.uniform(*dp.speck_diameter_range_px)
        outline = circle * d / 2 + rng.uniform([0, 0], [w, h])
        bounds = _patch_bounds(outline, 4, h, w)
        if bounds:
            x0, y0, x1, y1 = bounds
            soft, _ = _fill(outline, x0, y0, (y1 - y0, x1 - x0))
            _apply(transmission, _blur(-rng.uniform(*dp.speck_darkness_range) * soft, opt.psf_sigma_px), x0, y0)


def render_particles(transmission: np.ndarray, owner: np.ndarray, particles: list[Particle],
                     opt: OpticsParams, rng: np.random.Generator) -> None:
    """Draw particles in order (later ones on top) into ``transmission``; ``owner`` gets the top id per pixel."""
    h, w = transmission.shape
    for pid, p in enumerate(particles, start=1):
        sigma = opt.psf_sigma_px + p.defocus_sigma
        bounds = _patch_bounds(p.outline, 3 * sigma + 4 * opt.halo_width_px + 2, h, w)
        if bounds is None:
            continue
        x0, y0, x1, y1 = bounds
        soft, hard = _fill(p.outline, x0, y0, (y1 - y0, x1 - x0))
        if not hard.any():
            continue
        delta = _blur(particle_delta(p, soft, hard, opt, rng), sigma)
        _apply(transmission, delta, x0, y0)
        owner[y0:y1, x0:x1][hard] = pid


def add_noise(expected: np.ndarray, opt: OpticsParams, rng: np.random.Generator) -> np.ndarray:
    """Poisson photon noise + Gaussian read noise, quantised to uint8."""
    electrons_per_dn = opt.full_well / 255.0
    photons = rng.poisson(np.clip(expected, 0, None) * electrons_per_dn).astype(np.float32)
    noisy = photons / electrons_per_dn + rng.normal(0, opt.read_noise_dn, expected.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def visible_parts(owner: np.ndarray, n: int, pop: PopulationParams) -> list[dict | None]:
    """Per particle: its visible mask crop (small fragments removed), or None when not annotated.

    ``owner`` is cleaned in place: pixels of dropped parts become 0, so it is
    the exact label image of the annotations.
    """
    parts: list[dict | None] = []
    slices = ndi.find_objects(owner, max_label=n)
    for pid, sl in enumerate(slices, start=1):
        if sl is None:
            parts.append(None)
            continue
        crop = owner[sl] == pid
        ncc, cc, stats, _ = cv2.connectedComponentsWithStats(crop.astype(np.uint8), connectivity=8)
        small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < pop.min_fragment_area)
        small = small[small > 0]
        if small.size:
            drop = np.isin(cc, small)
            owner[sl][drop] = 0
            crop &= ~drop
        area = int(crop.sum())
        if area < pop.min_visible_area:
            owner[sl][crop] = 0
            parts.append(None)
            continue
        parts.append({"crop": crop, "y0": sl[0].start, "x0": sl[1].start, "area": area})
    return parts


def annotation_for(part: dict, h: int, w: int) -> tuple[list | dict, list[float]]:
    """COCO segmentation (polygons; RLE when the visible part has a hole) and bbox of a visible part."""
    crop, x0, y0 = part["crop"], part["x0"], part["y0"]
    ys, xs = np.nonzero(crop)
    bbox = [float(x0 + xs.min()), float(y0 + ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
    if (ndi.binary_fill_holes(crop) & ~crop).any():
        return crop_to_rle(crop, y0, x0, h, w), bbox
    polygons = polygons_from_mask(crop)
    shifted = []
    for poly in polygons:
        xy = np.asarray(poly).reshape(-1, 2) + [x0, y0]
        shifted.append([round(float(v), 2) for v in xy.ravel()])
    return shifted, bbox


@dataclass
class RenderedImage:
    """One synthetic image with its truth."""

    image: np.ndarray  # (H, W) uint8
    labels: np.ndarray  # (H, W) int32, 0 background, i = particle i (visible, annotated part)
    annotations: list[dict]  # COCO annotations without ids / image ids
    particles: list[dict]  # true descriptors per particle (whole shape)


def render_image(params: SuspensionParams, rng: np.random.Generator) -> RenderedImage:
    """Render one image and its ground truth."""
    h, w = params.height, params.width
    particles = sample_particles(params, rng)
    transmission = np.ones((h, w), np.float32)
    owner = np.zeros((h, w), np.int32)
    render_distractors(transmission, params, rng)
    render_particles(transmission, owner, particles, params.optics, rng)
    np.clip(transmission, 0.02, None, out=transmission)
    image = add_noise(illumination(params, rng) * transmission, params.optics, rng)

    parts = visible_parts(owner, len(particles), params.population)
    annotations, rows = [], []
    relabel = np.zeros(len(particles) + 1, np.int32)
    for pid, (p, part) in enumerate(zip(particles, parts), start=1):
        row = {"particle": pid, "kind": p.kind, "transparent": p.transparent,
               "defocus_sigma": round(p.defocus_sigma, 3), **polygon_descriptors(p.outline)}
        xy = p.outline
        row["border_cut"] = bool((xy[:, 0] < 0).any() or (xy[:, 1] < 0).any() or (xy[:, 0] > w).any() or (xy[:, 1] > h).any())
        row["visible_area"] = part["area"] if part else 0
        row["visible_fraction"] = round(row["visible_area"] / row["Area"], 4)
        row["annotated"] = part is not None
        if part is not None:
            segmentation, bbox = annotation_for(part, h, w)
            annotations.append({"category_id": DEFAULT_CATEGORY["id"], "segmentation": segmentation,
                                "area": float(part["area"]), "bbox": bbox, "iscrowd": 0})
            relabel[pid] = len(annotations)
            row["label"] = len(annotations)
        else:
            row["label"] = 0
        rows.append(row)
    return RenderedImage(image, relabel[owner], annotations, rows)


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: independent of how many images are made."""
    split_key = int.from_bytes(split.encode("utf-8"), "little") % (2**32)
    return np.random.default_rng(np.random.SeedSequence([seed, split_key, index]))


# ----------------------------------------------------------------------------- datasets on disk


def _coco_image(image_id: int, file_name: str, h: int, w: int) -> dict:
    return {"id": image_id, "file_name": file_name, "height": h, "width": w}


def write_split(folder: Path, split: str, n: int, params: SuspensionParams, seed: int,
                progress=None, task=None) -> tuple[dict, list[dict]]:
    """Render ``n`` images into ``folder/images/``; returns (COCO dict, descriptor rows)."""
    from micrometry.io.image import write_image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [dict(DEFAULT_CATEGORY)]}
    rows: list[dict] = []
    for index in range(n):
        rendered = render_image(params, image_rng(seed, split, index))
        file_name = f"{split}_{index:04d}.png"
        image_id = index + 1
        write_image(folder / "images" / file_name, rendered.image)
        coco["images"].append(_coco_image(image_id, file_name, params.height, params.width))
        for ann in rendered.annotations:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id, **ann})
        rows.extend({"image": file_name, "image_id": image_id, **row} for row in rendered.particles)
        if progress is not None:
            progress.advance(task)
    return coco, rows


def generate_dataset(out: Path, truth: Path, params: SuspensionParams | None = None, seed: int = 0,
                     n_train: int = 8, n_test: int = 4, n_batch: int = 3, overwrite: bool = False) -> dict:
    """Write the whole synthetic particle dataset (see ``docs/particles-data.md``).

    ::

        OUT/train/images/*.png + OUT/train/annotations.json   (COCO, visible-part polygons)
        OUT/test/images/*.png  + OUT/test/images.json         (images and categories only)
        OUT/batches/A/*.png, OUT/batches/B/*.png               (two populations, see BATCH_POPULATIONS)
        OUT/synth_config.json                                   (seed and every parameter)
        TRUTH/test_annotations.json                             (hidden answers for test/)
        TRUTH/test_particles.csv                                (true descriptors of test particles)
        TRUTH/batches/A.csv, B.csv                              (true descriptors per particle)
        TRUTH/batches/A_annotations.json, B_annotations.json

    Both folders are written atomically. Returns counts and seconds per image.
    """
    import time

    import pandas as pd

    from micrometry.errors import InputError
    from micrometry.io.atomic import atomic_dir, write_json
    from micrometry.progress import make_progress

    params = params or SuspensionParams()
    out, truth = Path(out), Path(truth)
    out_r, truth_r = out.resolve(), truth.resolve()
    if out_r == truth_r or out_r in truth_r.parents or truth_r in out_r.parents:
        raise InputError("the truth folder must be separate from the output folder (it holds the hidden answers)", truth)
    if params.height < 32 or params.width < 32:
        raise InputError(f"image size {params.height}x{params.width} is too small (at least 32x32)")
    t0 = time.perf_counter()
    total = n_train + n_test + 2 * n_batch
    with atomic_dir(out, overwrite=overwrite) as tmp_out, atomic_dir(truth, overwrite=overwrite) as tmp_truth:
        with make_progress() as progress:
            task = progress.add_task("rendering particle images", total=total, info="")
            train, _ = write_split(tmp_out / "train", "train", n_train, params, seed, progress, task)
            write_json(tmp_out / "train" / "annotations.json", train)
            test, test_rows = write_split(tmp_out / "test", "test", n_test, params, seed, progress, task)
            write_json(tmp_out / "test" / "images.json", {**test, "annotations": []})
            write_json(tmp_truth / "test_annotations.json", test)
            pd.DataFrame(test_rows).to_csv(tmp_truth / "test_particles.csv", index=False)
            (tmp_truth / "batches").mkdir()
            for batch in ("A", "B"):
                batch_folder = tmp_out / "batches" / batch
                coco, rows = write_split(batch_folder, batch, n_batch, batch_params(params, batch), seed, progress, task)
                # the batch folders are plain image folders
                for f in (batch_folder / "images").iterdir():
                    f.rename(batch_folder / f.name)
                (batch_folder / "images").rmdir()
                write_json(tmp_truth / "batches" / f"{batch}_annotations.json", coco)
                pd.DataFrame(rows).to_csv(tmp_truth / "batches" / f"{batch}.csv", index=False)
        config = {"seed": seed, "n_train": n_train, "n_test": n_test, "n_batch": n_batch,
                  "params": params.to_dict(), "batches": BATCH_POPULATIONS}
        write_json(tmp_out / "synth_config.json", config)
        write_json(tmp_truth / "synth_config.json", config)
    seconds = time.perf_counter() - t0
    return {"images": total, "train_annotations": len(train["annotations"]),
            "test_annotations": len(test["annotations"]), "seconds": seconds,
            "seconds_per_image": seconds / max(total, 1)}
