"""Read a tool's imaging off its images: noise and probe blur.

The simulator renders with an idealised probe and dose; a real tool blurs,
drifts and adds noise in its own measure. Rather than guessing augmentation
strengths, :func:`augmentation_ranges` measures the gap between the simulated
and the real images of one data set and widens the imaging augmentations to
cover it (domain randomisation over the ranges the real images show):

* noise: the robust standard deviation of each image's residual after a 3x3
  local mean (white noise dominates it), relative to the image's median level;
* probe blur, per axis: a Gaussian probe multiplies the power spectrum by
  ``exp(-4 pi^2 sigma^2 f^2)``, so the log ratio of the real to the simulated
  spectra (noise floor removed) falls linearly in ``f^2`` with slope
  ``-4 pi^2 (sigma_real^2 - sigma_sim^2)``.

Charging drift is not measured: the top level's change along the rows is
confounded with the hole position and the neighbours at the corners (tried:
the estimate came out 0.0 where the true drift was 0.03 and 0.09).
"""

from __future__ import annotations

import numpy as np


def _unit(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float64) / 255.0


def noise_level(images: np.ndarray) -> np.ndarray:
    """Per-image noise standard deviation relative to the image's median level, ``(N,)``.

    The residual after a 3x3 mean holds 8/9 of the noise variance (times 1 + 1/8
    from the mean's own noise) and, away from edges, little signal; its median
    absolute deviation ignores the edges.
    """
    x = _unit(images)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="symmetric")
    rows, cols = x.shape[1:]
    local = sum(padded[:, i : i + rows, j : j + cols] for i in range(3) for j in range(3)) / 9.0
    resid = (x - local).reshape(len(x), -1)
    mad = np.median(np.abs(resid - np.median(resid, axis=1, keepdims=True)), axis=1) * 1.4826
    sd = mad / np.sqrt(8.0 / 9.0 + 8.0 / 81.0)
    return sd / np.maximum(np.median(x.reshape(len(x), -1), axis=1), 1e-3)


def axis_spectrum(images: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean 1-D power spectrum along ``axis`` (1: rows/y, 2: columns/x) of images scaled to unit median.

    Returns ``(frequency in cycles/px, power)``.
    """
    x = _unit(images)
    x = x / np.maximum(np.median(x.reshape(len(x), -1), axis=1), 1e-3)[:, None, None]
    x = x - x.mean(axis=axis, keepdims=True)
    n = x.shape[axis]
    window = np.hanning(n).reshape([-1 if a == axis else 1 for a in range(3)])
    power = np.abs(np.fft.rfft(x * window, axis=axis)) ** 2
    power = power.mean(axis=tuple(a for a in range(3) if a != axis))
    return np.fft.rfftfreq(n), power


def blur_gap(
    sim: np.ndarray, real: np.ndarray, band: tuple[float, float] = (0.06, 0.3)
) -> tuple[float, float]:
    """Extra Gaussian blur (sigma, px) along rows (y) and columns (x) that turns ``sim`` into ``real``.

    Fits ``log(P_real - floor_real) - log(P_sim - floor_sim) = c - 4 pi^2 dvar f^2`` over the
    frequency ``band``; the noise floor is the mean power above 0.42 cycles/px.
    Returns ``sqrt(max(dvar, 0))`` per axis.
    """
    gaps = []
    for axis in (1, 2):
        f, p_sim = axis_spectrum(sim, axis)
        _, p_real = axis_spectrum(real, axis)
        high = f > 0.42
        s = p_sim - p_sim[high].mean()
        r = p_real - p_real[high].mean()
        use = (f >= band[0]) & (f <= band[1]) & (s > 0) & (r > 0)
        if use.sum() < 3:
            gaps.append(0.0)
            continue
        slope = np.polyfit(f[use] ** 2, np.log(r[use]) - np.log(s[use]), 1)[0]
        gaps.append(float(np.sqrt(max(-slope / (4 * np.pi**2), 0.0))))
    return gaps[0], gaps[1]


def augmentation_ranges(
    sim: np.ndarray, real: np.ndarray, floor: dict[str, float] | None = None, margin: float = 1.5
) -> dict[str, float]:
    """Imaging augmentation strengths (``blur_aug``, ``noise_aug``) that cover
    the measured gap between simulated and real images, times ``margin``, never below ``floor``.

    Parameters
    ----------
    sim, real : ndarray
        ``(N, 72, 48)`` uint8 simulated renders and real images of one data set.
    floor : dict, optional
        Lower bounds (e.g. the method's fixed defaults).
    margin : float
        The augmentations draw strengths uniformly from [0, range]: a range of
        ``margin`` x the gap puts the measured gap inside, not at the edge.

    Returns
    -------
    dict
        The two ranges plus the measurements they come from (``*_measured``).
    """
    floor = floor or {}
    gap_y, gap_x = blur_gap(sim, real)
    n_sim, n_real = np.median(noise_level(sim)), np.median(noise_level(real))
    level = float(np.median(_unit(sim)))
    noise_gap = float(np.sqrt(max(n_real**2 - n_sim**2, 0.0)) * level)  # in [0, 1] input units
    measured = {"blur_y_measured": gap_y, "blur_x_measured": gap_x, "noise_measured": noise_gap}
    # Uniform draws in [0, range] average range / 2: the measured gap is then the typical draw.
    ranges = {
        "blur_aug": max(floor.get("blur_aug", 0.0), margin * max(gap_y, gap_x)),
        "noise_aug": max(floor.get("noise_aug", 0.0), 2.0 * margin * noise_gap),
    }
    return {**ranges, **measured}
