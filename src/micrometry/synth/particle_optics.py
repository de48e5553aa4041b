"""Imaging of the synthetic suspensions: how each microscope mode turns particles into gray levels.

Every mode builds a noise-free *field* object by object, in local patches (an
image costs a few full-frame operations plus a small patch per object), then
scales it by a smooth illumination and adds noise (:func:`add_noise`: Poisson
photon noise at a given full-well count, Gaussian read noise, 8-bit
quantisation). Two families of modes (:data:`MODES`):

* **transmission** (``brightfield``, ``low-contrast``, ``uneven``, ``phase``,
  ``phase-negative``): a camera looks through the cell lit from behind. The
  field is a transmission that starts at 1; every object multiplies its patch
  by ``1 + delta``, where ``delta`` is its optical signature blurred by the
  optics' PSF plus its own defocus. In brightfield, absorbing particles darken
  (darker edge, textured interior), transparent ones barely change inside but
  show a refraction rim and a halo whose sign flips with the side of the focal
  plane. Phase contrast turns the optical path into intensity: particles dark
  (``phase``) or bright (``phase-negative``), framed by the opposite-signed
  halo that phase rings leave, with the interior of large particles fading
  back towards the background (shade-off).
* **emission** (``fluorescence``, ``darkfield``): the background is dark. The
  field starts at 0 and objects add the light they emit (fluorescence: a soft,
  PSF-blurred body brighter where the particle is thicker) or scatter (dark
  field: bright edges, a dim interior). The image is ``illumination x (floor +
  signal x field)``: the floor is the autofluorescence or stray light whose
  photon noise sets the noise floor.

Bubbles, specks, fibres and out-of-focus ghosts are drawn the same way in every
mode (dark in transmission, glowing in emission, as they would) and never
annotated. With occlusion (:attr:`PopulationParams.occlusion`) each particle is
composited opaque over the field below it instead of multiplied or added.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

# name -> (family, what it looks like); the CLI help and docs/particles-data.md follow this table
MODES = {
    "brightfield": ("transmission", "dark particles on a bright background (transmitted light; the default)"),
    "low-contrast": (
        "transmission",
        "brightfield with particles (and debris) at a fraction of their contrast",
    ),
    "uneven": ("transmission", "brightfield under a strong illumination gradient, vignetting and blotches"),
    "phase": (
        "transmission",
        "positive phase contrast: dark particles with a bright halo, interior shade-off",
    ),
    "phase-negative": ("transmission", "negative phase contrast: bright particles with a dark halo"),
    "fluorescence": ("emission", "bright, soft-edged particles on a dark, noisy background"),
    "darkfield": ("emission", "dark background; particles scatter light: bright edges, dim interior"),
}

# The realism modes: what real microscopy shows and the seven modes above lack. A third family,
# ``relief`` (DIC), images the gradient of the optical path instead of its value.
REALISM_MODES = {
    "tissue": (
        "transmission",
        "brightfield particles, some with a pale or dark centre, on a textured ground (tissue- or TEM-like "
        "grain and membranes)",
    ),
    "dic": (
        "relief",
        "differential interference contrast: particles and a rough ground in shaded relief (one side "
        "bright, the other dark)",
    ),
    "chromatin": (
        "emission",
        "fluorescent nuclei with texture inside: chromatin speckles, a bright or pale centre, a dim half; "
        "in some images dim cell bodies (cytoplasm) around them",
    ),
    "fluorescence-hdr": (
        "emission",
        "16-bit fluorescence over two decades of brightness: dim particles beside saturated ones",
    ),
}
#: Every imaging mode ``synth particles --modes`` knows.
ALL_MODES = {**MODES, **REALISM_MODES}
#: Modes written as 16-bit images.
SIXTEEN_BIT_MODES = ("fluorescence-hdr",)


def check_mode(mode: str) -> str:
    """``mode`` if it is known; otherwise a ValueError naming the known ones."""
    if mode not in ALL_MODES:
        raise ValueError(f"unknown imaging mode {mode!r}; known: {', '.join(ALL_MODES)}")
    return mode


def mode_family(mode: str) -> str:
    """``transmission``, ``emission`` or ``relief``: how a mode's field turns into gray levels."""
    return ALL_MODES[check_mode(mode)][0]


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
class ImagingParams:
    """Settings of the imaging modes other than plain brightfield (:data:`MODES`).

    Gray levels are on the 8-bit scale; every mode also uses the optics'
    illumination shape (gradient, vignetting, blotches), PSF, defocus and noise.

    Attributes
    ----------
    low_contrast_factor : float
        ``low-contrast``: particle densities, gains, rims and halos, and the
        distractors' darkness, are multiplied by this.
    uneven_gradient, uneven_vignetting, uneven_blotch_amplitude : float
        ``uneven``: these replace the optics' ``gradient``, ``vignetting`` and
        ``blotch_amplitude``.
    phase_background_range : (float, float)
        Phase contrast: mean background gray level (the phase ring dims it).
    phase_depth_range : (float, float)
        Phase contrast: relative darkening (brightening when negative) at a
        particle's edge.
    phase_shade_off : float
        Phase contrast: fraction of the edge contrast left deep inside a
        large particle.
    phase_shade_off_px : float
        Phase contrast: decay length of the contrast from the edge inwards.
    phase_halo_range : (float, float)
        Phase contrast: relative halo amplitude just outside the edge.
    phase_halo_width_px : float
        Phase contrast: decay length of the halo.
    fluorescence_floor_range : (float, float)
        Fluorescence: background gray level (autofluorescence and offset).
    fluorescence_signal_range : (float, float)
        Fluorescence: gray level of the brightest particle of an image.
    fluorescence_brightness_range : (float, float)
        Fluorescence: per-particle relative brightness (labelling varies).
    fluorescence_psf_sigma_px : float
        Fluorescence: in-focus blur (replaces the optics' ``psf_sigma_px``).
    darkfield_floor_range : (float, float)
        Dark field: background gray level (stray light).
    darkfield_signal_range : (float, float)
        Dark field: gray level of the brightest edge of an image.
    darkfield_brightness_range : (float, float)
        Dark field: per-particle relative scattering strength.
    darkfield_edge_width_px : float
        Dark field: decay length of the bright edge inwards.
    darkfield_interior : float
        Dark field: interior brightness relative to the edge (absorbing
        particles; transparent ones scatter less inside).
    """

    low_contrast_factor: float = 0.25
    uneven_gradient: float = 0.6
    uneven_vignetting: float = 0.7
    uneven_blotch_amplitude: float = 0.12
    phase_background_range: tuple[float, float] = (100.0, 150.0)
    phase_depth_range: tuple[float, float] = (0.25, 0.55)
    phase_shade_off: float = 0.35
    phase_shade_off_px: float = 6.0
    phase_halo_range: tuple[float, float] = (0.25, 0.6)
    phase_halo_width_px: float = 3.5
    fluorescence_floor_range: tuple[float, float] = (3.0, 15.0)
    fluorescence_signal_range: tuple[float, float] = (70.0, 220.0)
    fluorescence_brightness_range: tuple[float, float] = (0.35, 1.0)
    fluorescence_psf_sigma_px: float = 1.5
    darkfield_floor_range: tuple[float, float] = (3.0, 12.0)
    darkfield_signal_range: tuple[float, float] = (120.0, 240.0)
    darkfield_brightness_range: tuple[float, float] = (0.4, 1.0)
    darkfield_edge_width_px: float = 2.0
    darkfield_interior: float = 0.2
    #: ``tissue``/``dic``: relative amplitude of the ground's grain, and darkness of its membranes
    ground_grain_range: tuple[float, float] = (0.05, 0.25)
    ground_membrane_range: tuple[float, float] = (0.0, 0.35)
    #: ``tissue``/``dic``: size (px) of the ground's coarsest grain and of its membrane cells
    ground_scale_range_px: tuple[float, float] = (4.0, 40.0)
    #: ``tissue``/``chromatin``: share of particles with a pale (or bright) centre, and its depth
    centre_fraction: float = 0.5
    centre_depth_range: tuple[float, float] = (0.3, 0.85)
    #: ``chromatin``: relative amplitude of the speckled texture inside a nucleus
    chromatin_texture_range: tuple[float, float] = (0.3, 0.9)
    #: ``chromatin``: share of nuclei with one half dimmer, and how much dimmer
    dim_half_fraction: float = 0.3
    dim_half_range: tuple[float, float] = (0.3, 0.7)
    #: ``chromatin``: share of images whose nuclei lie in dim cell bodies (cytoplasmic background or
    #: another channel's bleed-through: never annotated), their brightness relative to a nucleus's,
    #: and their size relative to the nucleus (radius)
    cytoplasm_fraction: float = 0.5
    cytoplasm_brightness_range: tuple[float, float] = (0.04, 0.2)
    cytoplasm_scale_range: tuple[float, float] = (1.6, 3.5)
    #: ``dic``: edge contrast (relative), and the ground's relief relative to a particle's
    dic_contrast_range: tuple[float, float] = (0.15, 0.5)
    dic_ground_relief_range: tuple[float, float] = (0.02, 0.25)
    dic_background_range: tuple[float, float] = (100.0, 160.0)
    #: ``fluorescence-hdr``: gray level (8-bit scale, clipped at 255) of the brightest particle,
    #: decades of brightness between particles, and the camera's full well relative to ``full_well``
    hdr_signal_range: tuple[float, float] = (300.0, 1500.0)
    hdr_decades: float = 2.0
    hdr_full_well_factor: float = 10.0


def _scaled(pair: tuple[float, float], factor: float) -> tuple[float, float]:
    return (pair[0] * factor, pair[1] * factor)


def mode_optics(opt: OpticsParams, imaging: ImagingParams, mode: str) -> OpticsParams:
    """The optics a mode images with: ``opt`` with the fields the mode sets replaced."""
    if mode == "low-contrast":
        k = imaging.low_contrast_factor
        return dataclasses.replace(
            opt,
            absorbing_density_range=_scaled(opt.absorbing_density_range, k),
            transparent_gain_range=_scaled(opt.transparent_gain_range, k),
            rim_depth_range=_scaled(opt.rim_depth_range, k),
            halo_amplitude_range=_scaled(opt.halo_amplitude_range, k),
        )
    if mode == "uneven":
        return dataclasses.replace(
            opt,
            gradient=imaging.uneven_gradient,
            vignetting=imaging.uneven_vignetting,
            blotch_amplitude=imaging.uneven_blotch_amplitude,
        )
    if mode in ("phase", "phase-negative"):
        return dataclasses.replace(opt, background_level_range=imaging.phase_background_range)
    if mode == "fluorescence":
        # the illumination is then a shape of mean ~1 that scales floor and signal alike
        return dataclasses.replace(
            opt, background_level_range=(1.0, 1.0), psf_sigma_px=imaging.fluorescence_psf_sigma_px
        )
    if mode == "darkfield":
        return dataclasses.replace(opt, background_level_range=(1.0, 1.0))
    if mode in ("chromatin", "fluorescence-hdr"):
        well = opt.full_well * (imaging.hdr_full_well_factor if mode == "fluorescence-hdr" else 1.0)
        return dataclasses.replace(
            opt,
            background_level_range=(1.0, 1.0),
            psf_sigma_px=imaging.fluorescence_psf_sigma_px,
            full_well=well,
        )
    if mode == "dic":
        return dataclasses.replace(opt, background_level_range=imaging.dic_background_range)
    return opt


def distractor_gains(imaging: ImagingParams, mode: str) -> dict | None:
    """How strongly each kind of distractor shows in a mode (None: brightfield as drawn)."""
    if mode == "low-contrast":
        return dict.fromkeys(("ghost", "bubble", "fibre", "speck"), imaging.low_contrast_factor)
    if mode in ("fluorescence", "chromatin", "fluorescence-hdr"):
        # out-of-focus labelled particles glow, dust fluoresces a little, bubbles are invisible
        return {"ghost": 1.5, "bubble": 0.0, "fibre": 0.4, "speck": 1.2}
    if mode == "dic":
        # debris stands out in relief as particles do, ghosts barely
        return {"ghost": 0.3, "bubble": 0.6, "fibre": 1.0, "speck": 1.0}
    if mode == "darkfield":
        # every edge scatters: dust and fibres shine, a bubble's ring too
        return {"ghost": 0.4, "bubble": 0.8, "fibre": 1.2, "speck": 2.0}
    return None


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


def _coverage(
    outline: np.ndarray, pad: float, h: int, w: int
) -> tuple[int, int, np.ndarray, np.ndarray] | None:
    """A polygon rasterised in its patch (its box padded by ``pad``, cut to the ``h`` x ``w`` frame).

    Returns the patch's corner ``(x0, y0)`` and the :func:`_fill` coverage
    ``(soft, hard)``, or None where the patch misses the frame.
    """
    bounds = _patch_bounds(outline, pad, h, w)
    if bounds is None:
        return None
    x0, y0, x1, y1 = bounds
    soft, hard = _fill(outline, x0, y0, (y1 - y0, x1 - x0))
    return x0, y0, soft, hard


def _count(rng: np.random.Generator, count_range: tuple[int, int]) -> int:
    """A number drawn uniformly from the inclusive ``count_range``."""
    return int(rng.integers(count_range[0], count_range[1] + 1))


def _blur(delta: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(delta, (0, 0), sigma) if sigma > 0.05 else delta


def _depth_inside(hard: np.ndarray) -> np.ndarray:
    """Distance (px) of each pixel of a hard mask to the nearest pixel outside it (0 outside)."""
    return cv2.distanceTransform(hard.astype(np.uint8), cv2.DIST_L2, 3)


def _depth_outside(hard: np.ndarray) -> np.ndarray:
    """Distance (px) of each pixel outside a hard mask to the mask (0 inside)."""
    return cv2.distanceTransform((~hard).astype(np.uint8), cv2.DIST_L2, 3)


def _relative_depth(hard: np.ndarray) -> np.ndarray:
    """:func:`_depth_inside` over its maximum (at least 1 px): 0 at the edge, 1 at the deepest point."""
    d_in = _depth_inside(hard)
    return d_in / max(float(d_in.max()), 1.0)


def _dome(hard: np.ndarray) -> np.ndarray:
    """A particle's thickness profile: the square root of :func:`_relative_depth`, in [0, 1]."""
    return np.sqrt(np.clip(_relative_depth(hard), 0.0, 1.0))


def _smooth_texture(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise for particle interiors."""
    noise = rng.normal(0, 1, shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), max(scale, 1.0))
    return noise / max(float(noise.std()), 1e-6)


def particle_delta(
    p: Particle, soft: np.ndarray, hard: np.ndarray, opt: OpticsParams, rng: np.random.Generator
) -> np.ndarray:
    """The particle's signature ``delta`` (transmission = 1 + delta) in its patch, before blur."""
    d_in, d_out = _depth_inside(hard), _depth_outside(hard)
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


def phase_delta(
    soft: np.ndarray, hard: np.ndarray, imaging: ImagingParams, rng: np.random.Generator, sign: float = 1.0
) -> np.ndarray:
    """Phase-contrast signature (transmission ``1 + delta``): dark body, bright halo (``sign`` -1 swaps them).

    The phase ring turns the particle's optical path into a darkening that is
    strongest at the edge and fades inwards (shade-off) and leaves the light it
    removes as a halo just outside.
    """
    d_in, d_out = _depth_inside(hard), _depth_outside(hard)
    depth = rng.uniform(*imaging.phase_depth_range)
    halo = rng.uniform(*imaging.phase_halo_range)
    s = imaging.phase_shade_off
    body = -depth * (s + (1 - s) * np.exp(-d_in / imaging.phase_shade_off_px)) * soft
    ring = halo * np.exp(-d_out / imaging.phase_halo_width_px) * (1.0 - soft)
    return (sign * (body + ring)).astype(np.float32)


def fluorescence_emission(
    soft: np.ndarray, hard: np.ndarray, opt: OpticsParams, imaging: ImagingParams, rng: np.random.Generator
) -> np.ndarray:
    """Light a labelled particle emits (relative to the image's signal level), before blur.

    Emission follows the particle's thickness: a plateau of 60 % at the edge
    rising to 100 % in the middle, with a mild texture of uneven labelling.
    """
    thickness = _dome(hard)
    texture = 1.0 + 0.5 * opt.texture_amplitude * _smooth_texture(soft.shape, 3.0, rng)
    brightness = rng.uniform(*imaging.fluorescence_brightness_range)
    return (brightness * (0.6 + 0.4 * thickness) * texture * soft).astype(np.float32)


def darkfield_emission(
    p: Particle,
    soft: np.ndarray,
    hard: np.ndarray,
    opt: OpticsParams,
    imaging: ImagingParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """Light a particle scatters into the dark-field objective, before blur: bright edge, dim interior."""
    edge = np.exp(-_depth_inside(hard) / imaging.darkfield_edge_width_px)
    interior = imaging.darkfield_interior * (0.4 if p.transparent else 1.0)
    texture = 1.0 + opt.texture_amplitude * _smooth_texture(soft.shape, 3.0, rng)
    brightness = rng.uniform(*imaging.darkfield_brightness_range)
    return (brightness * np.maximum(edge, interior * texture) * soft).astype(np.float32)


def centre_profile(hard: np.ndarray, depth: float) -> np.ndarray:
    """``1 - depth`` at a particle's centre rising to 1 at its edge (``depth`` < 0: a brighter centre).

    A red blood cell's pale centre, a nucleus whose middle stains less or more.
    """
    rel = _relative_depth(hard)
    return (1.0 - depth * np.exp(-(((1.0 - rel) / 0.45) ** 2))).astype(np.float32)


def _random_centre(hard: np.ndarray, imaging: ImagingParams, rng: np.random.Generator) -> np.ndarray | float:
    """A random :func:`centre_profile` (pale or bright) for ``centre_fraction`` of particles, else 1."""
    if rng.random() >= imaging.centre_fraction:
        return 1.0
    depth = rng.uniform(*imaging.centre_depth_range)
    return centre_profile(hard, depth if rng.random() < 0.6 else -0.6 * depth)


def _dim_half(shape: tuple[int, int], imaging: ImagingParams, rng: np.random.Generator) -> np.ndarray | float:
    """For ``dim_half_fraction`` of particles, a ramp that dims one side of the patch; else 1."""
    if rng.random() >= imaging.dim_half_fraction:
        return 1.0
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    t = (xx - shape[1] / 2) * np.cos(angle) + (yy - shape[0] / 2) * np.sin(angle)
    t = np.clip(t / max(float(np.abs(t).max()), 1.0), -1.0, 1.0)
    return 1.0 - rng.uniform(*imaging.dim_half_range) * (0.5 + 0.5 * t)


def tissue_delta(
    p: Particle,
    soft: np.ndarray,
    hard: np.ndarray,
    opt: OpticsParams,
    imaging: ImagingParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """``tissue``: a brightfield signature whose absorption may fall (or rise) towards the centre."""
    delta = particle_delta(p, soft, hard, opt, rng)
    inside = np.minimum(delta, 0.0) * _random_centre(hard, imaging, rng)
    return (inside + np.maximum(delta, 0.0)).astype(np.float32)


def chromatin_emission(
    soft: np.ndarray, hard: np.ndarray, imaging: ImagingParams, rng: np.random.Generator
) -> np.ndarray:
    """``chromatin``: a fluorescent nucleus with speckled texture, maybe a pale/bright centre or a dim half."""
    thickness = _dome(hard)
    speckle = np.maximum(_smooth_texture(soft.shape, rng.uniform(0.8, 2.5), rng), 0.0) ** 1.5
    speckle /= max(float(speckle.mean()), 1e-6)
    amplitude = rng.uniform(*imaging.chromatin_texture_range)
    texture = np.maximum(1.0 + amplitude * (speckle - 1.0), 0.15)
    brightness = rng.uniform(*imaging.fluorescence_brightness_range)
    body = (0.6 + 0.4 * thickness) * texture * _random_centre(hard, imaging, rng)
    return (brightness * body * _dim_half(soft.shape, imaging, rng) * soft).astype(np.float32)


def hdr_emission(
    soft: np.ndarray, hard: np.ndarray, opt: OpticsParams, imaging: ImagingParams, rng: np.random.Generator
) -> np.ndarray:
    """``fluorescence-hdr``: fluorescence whose brightness spans ``hdr_decades`` (log-uniform)."""
    emission = fluorescence_emission(soft, hard, opt, imaging, rng)
    lo, hi = imaging.fluorescence_brightness_range
    # undo the ordinary spread, then spread over decades
    return emission / ((lo + hi) / 2) * 10.0 ** (-rng.uniform(0.0, imaging.hdr_decades))


def cell_bodies(
    h: int, w: int, particles: list[Particle], imaging: ImagingParams, rng: np.random.Generator
) -> np.ndarray:
    """``chromatin``: the dim, irregular, elongated cell body around each nucleus, as emitted light.

    What a nuclear stain shows of the cytoplasm (its own background, or another channel bleeding
    through): never annotated, so a model learns that the nucleus ends where its bright core does.
    """
    field = np.zeros((h, w), np.float32)
    theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radii = []
    for p in particles:
        centre = p.outline.mean(axis=0)
        r = np.sqrt(max(polygon_area_px(p.outline), 1.0) / np.pi)
        radii.append(r)
        # an elongated body with a lumpy outline, along a random direction, the nucleus off its centre
        body = r * rng.uniform(*imaging.cytoplasm_scale_range)
        lumps = sum(rng.uniform(0, 0.2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
        radius = body * (1 + lumps)
        stretch, angle = rng.uniform(1.0, 2.5), rng.uniform(0, np.pi)
        x, y = radius * np.cos(theta) * stretch, radius * np.sin(theta) / np.sqrt(stretch)
        shift = rng.uniform(-0.3, 0.3, 2) * body
        outline = np.stack(
            [x * np.cos(angle) - y * np.sin(angle), x * np.sin(angle) + y * np.cos(angle)], axis=1
        )
        outline += centre + shift
        canvas = np.zeros((h, w), np.uint8)
        cv2.fillPoly(
            canvas, [np.round((outline - 0.5) * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4
        )
        brightness = rng.uniform(*imaging.cytoplasm_brightness_range) * np.mean(
            imaging.fluorescence_brightness_range
        )
        np.maximum(field, brightness * canvas, out=field)  # touching cells do not add up
    if not radii:
        return field
    sigma = max(1.5, 0.25 * float(np.median(radii)))
    texture = np.clip(1.0 + 0.2 * _smooth_texture((h, w), sigma, rng), 0.3, None)
    return (_blur(field, sigma) * texture).astype(np.float32)


def relief_height(
    soft: np.ndarray, hard: np.ndarray, opt: OpticsParams, rng: np.random.Generator
) -> np.ndarray:
    """``dic``: a particle's optical path (a textured dome), in units of its own height."""
    dome = _dome(hard)
    texture = 1.0 + opt.texture_amplitude * _smooth_texture(soft.shape, 2.0, rng)
    return (rng.uniform(0.5, 1.5) * (0.3 + 0.7 * dome) * texture * soft).astype(np.float32)


def particle_signature(
    mode: str,
    p: Particle,
    soft: np.ndarray,
    hard: np.ndarray,
    opt: OpticsParams,
    imaging: ImagingParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """A particle's signature in ``mode``, before blur: ``delta`` (transmission) or emitted light (emission)."""
    if mode == "fluorescence":
        return fluorescence_emission(soft, hard, opt, imaging, rng)
    if mode == "chromatin":
        return chromatin_emission(soft, hard, imaging, rng)
    if mode == "fluorescence-hdr":
        return hdr_emission(soft, hard, opt, imaging, rng)
    if mode == "dic":
        return relief_height(soft, hard, opt, rng)
    if mode == "tissue":
        return tissue_delta(p, soft, hard, opt, imaging, rng)
    if mode == "darkfield":
        return darkfield_emission(p, soft, hard, opt, imaging, rng)
    if mode in ("phase", "phase-negative"):
        return phase_delta(soft, hard, imaging, rng, -1.0 if mode == "phase-negative" else 1.0)
    return particle_delta(p, soft, hard, opt, rng)


def ground_texture(h: int, w: int, imaging: ImagingParams, rng: np.random.Generator) -> np.ndarray:
    """A textured ground, zero-mean-ish (relative units): multi-scale grain plus dark membrane lines.

    The grain sums smooth noise over octaves up to the coarsest scale; membranes
    are the zero crossings of another smooth noise (closed, curving lines like
    cell walls or the membranes of a TEM section).
    """
    coarse = rng.uniform(*imaging.ground_scale_range_px)
    grain = np.zeros((h, w), np.float32)
    sigma = 1.0
    while sigma <= coarse:
        grain += _smooth_texture((h, w), sigma, rng) * (sigma / coarse) ** 0.3
        sigma *= 2.0
    grain /= max(float(grain.std()), 1e-6)
    cells = _smooth_texture((h, w), rng.uniform(0.5, 1.5) * coarse, rng)
    membranes = np.exp(-((cells / 0.12) ** 2))
    return (
        rng.uniform(*imaging.ground_grain_range) * grain
        - rng.uniform(*imaging.ground_membrane_range) * membranes
    ).astype(np.float32)


def dic_image(
    opd: np.ndarray, scale_px: float, imaging: ImagingParams, rng: np.random.Generator
) -> np.ndarray:
    """Relative DIC intensity ``1 + contrast x shear derivative`` of an optical-path field.

    ``scale_px`` (a typical particle radius) turns the derivative into an edge
    contrast that does not depend on the particles' size.
    """
    angle = rng.uniform(0, 2 * np.pi)
    gy = cv2.Sobel(opd, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    gx = cv2.Sobel(opd, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    shear = np.cos(angle) * gx + np.sin(angle) * gy
    return 1.0 + rng.uniform(*imaging.dic_contrast_range) * scale_px * shear


def illumination(opt: OpticsParams, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth lamp field (gray levels): level x gradient x vignetting x blotches, built at low resolution."""
    sh, sw = max(2, h // 16), max(2, w // 16)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    u = (xx + 0.5) / sw * 2 - 1
    v = (yy + 0.5) / sh * 2 - 1
    direction = rng.uniform(0, 2 * np.pi)
    gradient = 1 + opt.gradient * (u * np.cos(direction) + v * np.sin(direction)) / np.sqrt(2)
    cx, cy = rng.normal(0, 0.15, 2)
    # floored: strong vignetting (``uneven``) with an off-centre optical axis would go negative in a corner
    vignette = np.maximum(1 - opt.vignetting * ((u - cx) ** 2 + (v - cy) ** 2) / 2, 0.15)
    blotches = cv2.GaussianBlur(rng.normal(0, 1, (sh, sw)).astype(np.float32), (0, 0), max(sh, sw) / 8)
    blotches *= opt.blotch_amplitude / max(float(blotches.std()), 1e-6)
    small = rng.uniform(*opt.background_level_range) * gradient * vignette * (1 + blotches)
    return cv2.resize(small.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def _apply(
    field: np.ndarray, delta: np.ndarray, x0: int, y0: int, emission: bool = False, gain: float = 1.0
) -> None:
    region = field[y0 : y0 + delta.shape[0], x0 : x0 + delta.shape[1]]
    if emission:
        region += gain * np.abs(delta)
    elif gain == 1.0:
        region *= 1.0 + delta
    else:
        region *= 1.0 + gain * delta


def render_distractors(
    field: np.ndarray,
    dp: DistractorParams,
    opt: OpticsParams,
    rng: np.random.Generator,
    gains: dict | None = None,
    emission: bool = False,
) -> None:
    """Bubbles, specks, fibres and ghosts, drawn into ``field`` in place (never annotated).

    Each is drawn as its brightfield signature (negative where it absorbs);
    ``gains`` scales it per kind (``ghost``, ``bubble``, ``fibre``, ``speck``),
    and in an ``emission`` field its magnitude is added as light.
    """
    h, w = field.shape
    gains = gains or {}

    def put(kind: str, delta: np.ndarray, x0: int, y0: int) -> None:
        _apply(field, delta, x0, y0, emission, gains.get(kind, 1.0))

    theta = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    circle = np.stack([np.cos(theta), np.sin(theta)], axis=1)

    for _ in range(_count(rng, dp.ghosts_range)):
        d = rng.uniform(*dp.ghost_diameter_range_px)
        sigma = rng.uniform(*dp.ghost_blur_range_px)
        outline = circle * (d / 2) * rng.uniform(0.7, 1.3, (1, 2)) + rng.uniform([0, 0], [w, h])
        patch = _coverage(outline, 3 * sigma + 2, h, w)
        if patch:
            x0, y0, soft, _ = patch
            put("ghost", _blur(-rng.uniform(*dp.ghost_darkness_range) * soft, sigma), x0, y0)

    for _ in range(_count(rng, dp.bubbles_range)):
        d = rng.uniform(*dp.bubble_diameter_range_px)
        outline = circle * d / 2 + rng.uniform([0, 0], [w, h])
        patch = _coverage(outline, 4, h, w)
        if patch:
            x0, y0, soft, hard = patch
            d_in = _depth_inside(hard)
            ring_width = 0.18 * d
            # total internal reflection: a thick dark ring, a bright centre
            delta = (
                -dp.bubble_ring_darkness * (d_in < ring_width)
                + dp.bubble_centre_gain * (d_in > 1.6 * ring_width)
            ) * soft
            put("bubble", _blur(delta.astype(np.float32), opt.psf_sigma_px + 0.5), x0, y0)

    for _ in range(_count(rng, dp.fibres_range)):
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
            cv2.polylines(
                patch,
                [np.round((path - [x0 + 0.5, y0 + 0.5]) * 16).astype(np.int32)],
                False,
                255,
                thickness=max(1, int(round(width))),
                lineType=cv2.LINE_AA,
                shift=4,
            )
            delta = -rng.uniform(*dp.fibre_darkness_range) * patch.astype(np.float32) / 255
            put("fibre", _blur(delta, opt.psf_sigma_px + rng.uniform(0, 1.5)), x0, y0)

    for _ in range(_count(rng, dp.specks_range)):
        d = rng.uniform(*dp.speck_diameter_range_px)
        outline = circle * d / 2 + rng.uniform([0, 0], [w, h])
        patch = _coverage(outline, 4, h, w)
        if patch:
            x0, y0, soft, _ = patch
            put("speck", _blur(-rng.uniform(*dp.speck_darkness_range) * soft, opt.psf_sigma_px), x0, y0)


def render_particles(
    field: np.ndarray,
    owner: np.ndarray,
    particles: list[Particle],
    opt: OpticsParams,
    rng: np.random.Generator,
    mode: str = "brightfield",
    imaging: ImagingParams | None = None,
    occlusion: bool = False,
) -> None:
    """Draw particles in order (later ones on top) into ``field``; ``owner`` gets the top id per pixel.

    Without ``occlusion`` a particle multiplies a transmission field by
    ``1 + delta`` or adds its light to an emission field (translucent layers).
    With it, the particle is composited over what lies below with its blurred
    coverage ``alpha``: ``field = field (1 - alpha) + alpha background + signature``,
    so a lower particle is hidden exactly where ``owner`` says the upper one is.
    """
    imaging = imaging or ImagingParams()
    emission = mode_family(mode) != "transmission"  # relief adds optical path as emission adds light
    halo_px = imaging.phase_halo_width_px if mode in ("phase", "phase-negative") else opt.halo_width_px
    h, w = field.shape
    for pid, p in enumerate(particles, start=1):
        sigma = opt.psf_sigma_px + p.defocus_sigma
        patch = _coverage(p.outline, 3 * sigma + 4 * halo_px + 2, h, w)
        if patch is None or not patch[3].any():
            continue
        x0, y0, soft, hard = patch
        y1, x1 = y0 + hard.shape[0], x0 + hard.shape[1]
        delta = _blur(particle_signature(mode, p, soft, hard, opt, imaging, rng), sigma)
        if occlusion:
            alpha = _blur(soft, sigma)
            region = field[y0:y1, x0:x1]
            region *= 1.0 - alpha
            region += delta if emission else alpha + delta
        else:
            _apply(field, delta, x0, y0, emission)
        owner[y0:y1, x0:x1][hard] = pid


def expected_image(
    particles: list[Particle],
    h: int,
    w: int,
    opt: OpticsParams,
    distractors: DistractorParams,
    imaging: ImagingParams,
    mode: str,
    rng: np.random.Generator,
    occlusion: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The noise-free image (float gray levels) of a scene in ``mode``, and its owner map.

    Parameters
    ----------
    particles : list of Particle
        In drawing order (later on top).
    opt : OpticsParams
        The mode's optics (:func:`mode_optics`).

    Returns
    -------
    (ndarray, ndarray)
        ``(H, W)`` float32 expected gray levels; ``(H, W)`` int32 id (1-based
        index into ``particles``) of the top particle per pixel, 0 elsewhere.
    """
    family = mode_family(mode)
    emission = family != "transmission"
    field = np.zeros((h, w), np.float32) if emission else np.ones((h, w), np.float32)
    owner = np.zeros((h, w), np.int32)
    if mode == "tissue":  # drawn first: particles lie on the ground and hide it
        field *= np.clip(1.0 + ground_texture(h, w, imaging, rng), 0.05, None)
    elif mode == "dic":
        field += rng.uniform(*imaging.dic_ground_relief_range) * ground_texture(h, w, imaging, rng)
    elif mode == "chromatin" and rng.random() < imaging.cytoplasm_fraction:  # under the nuclei
        field += cell_bodies(h, w, particles, imaging, rng)
    render_distractors(field, distractors, opt, rng, distractor_gains(imaging, mode), emission)
    render_particles(field, owner, particles, opt, rng, mode, imaging, occlusion)
    if family == "relief":
        radius = (
            float(np.median([np.sqrt(polygon_area_px(p.outline) / np.pi) for p in particles]))
            if particles
            else 10.0
        )
        relief = np.clip(dic_image(field, radius, imaging, rng), 0.02, None)
        return illumination(opt, h, w, rng) * relief, owner
    if not emission:
        np.clip(field, 0.02, None, out=field)
        return illumination(opt, h, w, rng) * field, owner
    np.clip(field, 0.0, None, out=field)
    shape = illumination(opt, h, w, rng)
    floor_range, signal_range = {
        "fluorescence": (imaging.fluorescence_floor_range, imaging.fluorescence_signal_range),
        "chromatin": (imaging.fluorescence_floor_range, imaging.fluorescence_signal_range),
        "fluorescence-hdr": (imaging.fluorescence_floor_range, imaging.hdr_signal_range),
    }.get(mode, (imaging.darkfield_floor_range, imaging.darkfield_signal_range))
    floor, signal = rng.uniform(*floor_range), rng.uniform(*signal_range)
    return (shape * (floor + signal * field)).astype(np.float32), owner


def polygon_area_px(outline: np.ndarray) -> float:
    """Area (px^2) enclosed by an ``(n, 2)`` outline (shoelace)."""
    x, y = outline[:, 0], outline[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def add_noise(expected: np.ndarray, opt: OpticsParams, rng: np.random.Generator, bits: int = 8) -> np.ndarray:
    """Poisson photon noise + Gaussian read noise, quantised to uint8 (or uint16 with ``bits=16``).

    ``expected`` is on the 8-bit scale either way; a 16-bit image maps gray
    level 255 to 65535 and saturates (clips) above it, as a camera does.
    """
    electrons_per_dn = opt.full_well / 255.0
    photons = rng.poisson(np.clip(expected, 0, None) * electrons_per_dn).astype(np.float32)
    noisy = photons / electrons_per_dn + rng.normal(0, opt.read_noise_dn, expected.shape).astype(np.float32)
    if bits == 16:
        return np.clip(np.rint(noisy * 257.0), 0, 65535).astype(np.uint16)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
