"""Render top-down secondary-electron (SE) images from height maps.

The model follows the usual SEM image simulators (Gwyddion ``semsim``, NIST
ARTIMAGEN), kept to what matters for contact holes:

1. **Tilt contrast**: SE yield rises with the local surface tilt,
   ``delta(theta) = delta0 / cos(theta)**n``: walls are brighter than flats.
2. **Edge effect**: convex edges (the hole rim) glow because SEs escape
   through two surfaces.
3. **Escape loss and pit shadowing**: SEs generated down a hole are partly
   absorbed by the walls before they reach the detector, so the bottom is dark
   and *deeper holes image darker*; narrow pits are darker still.
4. **Beam**: a Gaussian probe (astigmatic if ``psf_sigma`` differs in x and y).
5. **Noise**: Poisson shot noise of the collected electrons plus Gaussian
   detector/readout noise, then 8-bit quantisation.

The "real" domain (:class:`RealDomain`) adds what a physical tool adds on top:
per-site gain and offset, a wider astigmatic probe, charging (a brightness drift
along the slow scan axis), scan-line jitter and a different dose.

All functions are vectorised over a batch ``(N, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class SemPhysics:
    """Physical knobs of the renderer (defaults: a simulation tool's idealised SEM).

    Attributes
    ----------
    nm_per_px : float
        Pixel size; converts height gradients (nm per pixel) into surface tilt.
    tilt_exponent : float
        ``n`` in ``delta0 / cos(theta)**n`` (0.8-1.2 for most materials).
    max_tilt_deg : float
        Tilt beyond which the yield stops rising (steep walls are barely seen
        from the top).
    edge_glow : float
        Strength of the edge effect at convex edges.
    edge_sigma_px : float
        Width of the edge-effect zone.
    escape_length_nm : float
        Depth at which the escape probability of SEs from inside a hole falls to
        1/e: the reason deeper holes look darker.
    shadow : float
        Extra darkening of narrow pits (fraction of the hemisphere hidden by walls).
    shadow_sigma_px : float
        Neighbourhood over which a point compares its height with its
        surroundings for shadowing.
    psf_sigma : (float, float)
        Gaussian probe standard deviation along rows (y) and columns (x), pixels.
    dose : float
        Detected electrons per pixel on a flat surface: sets the shot noise.
    read_noise : float
        Detector noise, in units of the flat-surface signal.
    gain, offset : float
        Grey levels per unit signal and the black level (8-bit output).
    """

    nm_per_px: float = 2.0
    tilt_exponent: float = 0.9
    max_tilt_deg: float = 72.0
    edge_glow: float = 0.8
    edge_sigma_px: float = 1.5
    escape_length_nm: float = 60.0
    shadow: float = 0.4
    shadow_sigma_px: float = 6.0
    psf_sigma: tuple[float, float] = (0.6, 0.6)
    dose: float = 60.0
    read_noise: float = 0.03
    gain: float = 80.0
    offset: float = 20.0


@dataclass
class RealDomain:
    """What a physical SEM adds to the idealised render: the sim-to-real gap.

    Attributes
    ----------
    psf_sigma : (float, float)
        A wider, astigmatic probe (rows, columns).
    dose : float
        Electrons per pixel (real images are noisier than simulations).
    site_gain_sd, site_offset_sd : float
        Per-site variation of detector gain (relative) and black level (grey levels).
    charging : float
        Maximum relative brightness drift along the slow scan axis (rows).
    line_jitter_px : float
        Standard deviation of the horizontal shift of each scan line.
    escape_length_scale : float
        Real holes' walls absorb a little differently from the simulation's model.
    gain, offset : float
        Mean grey levels per unit signal and black level of the real detector.
    rgb_fraction : float
        Fraction of images saved as 3-channel RGB (as the competition's were).
    """

    psf_sigma: tuple[float, float] = (1.0, 1.4)
    dose: float = 35.0
    site_gain_sd: float = 0.004
    site_offset_sd: float = 0.4
    charging: float = 0.03
    line_jitter_px: float = 0.35
    escape_length_scale: float = 1.08
    gain: float = 72.0
    offset: float = 28.0
    rgb_fraction: float = 2.0 / 3.0


def secondary_yield(height: np.ndarray, physics: SemPhysics) -> np.ndarray:
    """Noise-free SE signal of a batch of height maps (1.0 = flat top surface).

    Parameters
    ----------
    height : ndarray
        ``(N, H, W)`` heights in nm.
    physics : SemPhysics

    Returns
    -------
    ndarray
        ``(N, H, W)`` float32 signal, before the probe blur.
    """
    h = np.asarray(height, dtype=np.float64)
    gy, gx = np.gradient(h, axis=(1, 2))
    slope = np.hypot(gx, gy) / physics.nm_per_px
    cos_tilt = np.maximum(1.0 / np.sqrt(1.0 + slope**2), np.cos(np.radians(physics.max_tilt_deg)))
    tilt = cos_tilt ** (-physics.tilt_exponent)

    # Edge effect: positive where the surface is locally convex (the rim).
    smooth = ndimage.gaussian_filter(
        h, sigma=(0, physics.edge_sigma_px, physics.edge_sigma_px), mode="nearest"
    )
    convexity = np.clip(h - smooth, 0.0, None) / (physics.edge_sigma_px * physics.nm_per_px)
    glow = physics.edge_glow * np.tanh(convexity)

    # Escape loss below the top surface, and extra shadowing in narrow pits.
    top = h.max(axis=(1, 2), keepdims=True)
    escape = np.exp(-(top - h) / physics.escape_length_nm)
    surround = ndimage.gaussian_filter(
        h, sigma=(0, physics.shadow_sigma_px, physics.shadow_sigma_px), mode="nearest"
    )
    pit = np.clip(surround - h, 0.0, None) / max(float(np.ptp(h)), 1.0)
    shadowing = 1.0 - physics.shadow * np.tanh(2.0 * pit)

    return ((tilt + glow) * escape * shadowing).astype(np.float32)


def blur(signal: np.ndarray, psf_sigma: tuple[float, float]) -> np.ndarray:
    """Gaussian probe; different sigmas along rows and columns model astigmatism."""
    return ndimage.gaussian_filter(signal, sigma=(0, psf_sigma[0], psf_sigma[1]), mode="reflect")


def add_noise(signal: np.ndarray, dose: float, read_noise: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson shot noise of the detected electrons plus Gaussian read noise."""
    counts = rng.poisson(np.clip(signal, 0.0, None) * dose)
    return counts / dose + rng.normal(scale=read_noise, size=signal.shape)


def to_uint8(signal: np.ndarray, gain: np.ndarray | float, offset: np.ndarray | float) -> np.ndarray:
    """Detector response: grey = offset + gain * signal, clipped and quantised to 8 bits."""
    return np.clip(np.rint(offset + gain * signal), 0, 255).astype(np.uint8)


def render_simulated(height: np.ndarray, physics: SemPhysics, rng: np.random.Generator) -> np.ndarray:
    """Idealised SEM renders of ``(N, H, W)`` heights: ``(N, H, W)`` uint8."""
    signal = blur(secondary_yield(height, physics), physics.psf_sigma)
    return to_uint8(add_noise(signal, physics.dose, physics.read_noise, rng), physics.gain, physics.offset)


def render_real(
    height: np.ndarray,
    physics: SemPhysics,
    real: RealDomain,
    rng: np.random.Generator,
    site_gain: np.ndarray | None = None,
    site_offset: np.ndarray | None = None,
) -> np.ndarray:
    """Renders of ``(N, H, W)`` heights as a physical tool would record them.

    Parameters
    ----------
    site_gain, site_offset : ndarray, optional
        ``(N,)`` per-image detector gain factor and offset shift (the same for all
        images of one site); drawn per image when omitted.
    """
    n, rows, cols = height.shape
    tool = SemPhysics(
        **{**physics.__dict__, "escape_length_nm": physics.escape_length_nm * real.escape_length_scale}
    )
    signal = blur(secondary_yield(height, tool), real.psf_sigma)

    # Scan-line jitter: each row lands a fraction of a pixel left or right.
    shifts = rng.normal(scale=real.line_jitter_px, size=(n, rows))
    x = np.arange(cols)[None, None, :] - shifts[:, :, None]
    x0 = np.clip(np.floor(x).astype(int), 0, cols - 1)
    x1 = np.clip(x0 + 1, 0, cols - 1)
    frac = np.clip(x - np.floor(x), 0.0, 1.0)
    signal = (
        np.take_along_axis(signal, x0, axis=2) * (1 - frac) + np.take_along_axis(signal, x1, axis=2) * frac
    )

    # Charging: brightness drifts along the slow (row) scan axis.
    drift = rng.uniform(-real.charging, real.charging, size=(n, 1, 1))
    ramp = np.linspace(0.0, 1.0, rows)[None, :, None]
    signal = signal * (1.0 + drift * (1.0 - np.exp(-3.0 * ramp)))

    noisy = add_noise(signal, real.dose, physics.read_noise, rng)
    gain = real.gain * (
        site_gain if site_gain is not None else 1.0 + rng.normal(scale=real.site_gain_sd, size=n)
    )
    offset = real.offset + (
        site_offset if site_offset is not None else rng.normal(scale=real.site_offset_sd, size=n)
    )
    return to_uint8(noisy, np.asarray(gain).reshape(-1, 1, 1), np.asarray(offset).reshape(-1, 1, 1))
