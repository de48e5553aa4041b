"""Particle size distributions: D10/D50/D90 with bootstrap confidence intervals.

Image analysis counts particles, so its natural percentiles are
**number-weighted** (D50 = median particle). Laser diffraction reports
**volume-weighted** percentiles (each particle weighted by d^3, assuming
spheres of the area-equivalent diameter); both are offered so the numbers can
be set beside a diffraction report. Volume weighting assumes every particle is
a sphere of its area-equivalent diameter (:data:`VOLUME_ASSUMPTION`): meaningful
for (near-)spherical particles only. ISO 13322-1 asks for thousands of particles
for stable percentiles: every percentile comes with its count and a bootstrap CI,
and :func:`count_adequacy` says how precise D50 and D90 are for the measured
count and spread, and how many particles a stated precision needs
(docs/morphometry.md, "Count adequacy").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PERCENTILES = (10, 50, 90)

#: What the volume-weighted percentiles assume, said in every summary and report.
VOLUME_ASSUMPTION = "spheres of the area-equivalent diameter (EqDiam)"

#: The precision a count is judged against by default: +-5 % (relative CI half-width) at 95 %.
DEFAULT_TARGET = 0.05
DEFAULT_CONFIDENCE = 0.95

#: The percentiles whose precision is reported (name, level, weighting tag).
ADEQUACY_PERCENTILES = (("D50", 0.5, "n"), ("D90", 0.9, "n"), ("D50", 0.5, "v"), ("D90", 0.9, "v"))


def weighted_quantiles(values: np.ndarray, weights: np.ndarray | None, q: np.ndarray) -> np.ndarray:
    """Quantiles ``q`` (0..1) of each row of ``values`` under per-value ``weights``.

    Parameters
    ----------
    values : ndarray
        ``(n,)`` or ``(B, n)`` samples.
    weights : ndarray or None
        Same shape as ``values``; None means equal weights.
    q : ndarray
        ``(k,)`` quantile levels.

    Returns
    -------
    ndarray
        ``(k,)`` or ``(B, k)``: for each level the smallest value whose
        cumulative weight share reaches it (the inverse of the step CDF that a
        PSD plot shows), interpolated linearly between neighbouring values.
    """
    values = np.atleast_2d(values)
    weights = np.ones_like(values) if weights is None else np.atleast_2d(weights)
    order = np.argsort(values, axis=1)
    v = np.take_along_axis(values, order, axis=1)
    w = np.take_along_axis(weights, order, axis=1)
    cum = np.cumsum(w, axis=1)
    # midpoint rule: the value at position i carries cumulative share (cum_i - w_i / 2) / total
    share = (cum - 0.5 * w) / cum[:, -1:]
    out = np.stack([_interp_rows(qi, share, v) for qi in np.atleast_1d(q)], axis=1)
    return out[0] if out.shape[0] == 1 else out


def _interp_rows(level: float, share: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Row-wise ``np.interp(level, share[b], v[b])`` without a Python loop."""
    n = share.shape[1]
    if n == 1:
        return v[:, 0]
    # first position whose share reaches the level; clipped so both neighbours exist
    idx = np.clip((share < level).sum(axis=1), 1, n - 1)
    rows = np.arange(len(share))
    s0, s1 = share[rows, idx - 1], share[rows, idx]
    v0, v1 = v[rows, idx - 1], v[rows, idx]
    t = np.clip((level - s0) / np.where(s1 > s0, s1 - s0, 1.0), 0.0, 1.0)
    return v0 + t * (v1 - v0)


def bootstrap_indices(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n)`` resampling indices."""
    return rng.integers(0, n, size=(n_boot, n))


# Up to this many particles the CIs are percentile-bootstrap intervals; above it
# Woodruff's O(n) intervals (see woodruff_intervals), which agree at that size.
BOOTSTRAP_MAX = 2000


def woodruff_intervals(
    sizes: np.ndarray, weights: np.ndarray | None, q: np.ndarray, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Confidence intervals of weighted quantiles by Woodruff's method (O(n), for large samples).

    The standard error of the weighted CDF at the quantile, from its
    linearisation sum(w_i (1[x_i <= x_q] - q)) / sum(w), is carried through the
    inverse CDF: CI = [Q(q - z se), Q(q + z se)]. It agrees with the percentile
    bootstrap for large n (tests/test_morphometry.py) at a fraction of the cost:
    a bootstrap of 100 000 particles takes tens of seconds.
    """
    from scipy.stats import norm

    z = norm.ppf(0.5 + confidence / 2)
    values = weighted_quantiles(sizes, weights, q)
    low, high = [], []
    for level, value in zip(q, values, strict=False):
        se = _cdf_se(sizes, weights, value, level)
        bounds = np.clip([level - z * se, level + z * se], 0.0, 1.0)
        lo, hi = weighted_quantiles(sizes, weights, bounds)
        low.append(lo)
        high.append(hi)
    return np.array(low), np.array(high)


def _cdf_se(sizes: np.ndarray, weights: np.ndarray | None, value: float, level: float) -> float:
    """Standard error of the weighted CDF at ``value`` (whose share is ``level``), from its
    linearisation sum(w_i (1[x_i <= value] - level)) / sum(w)."""
    w = np.ones_like(sizes) if weights is None else weights
    terms = w * ((sizes <= value) - level)
    return float(np.sqrt(np.sum((terms - terms.mean()) ** 2)) / w.sum())


def quantile_relative_se(sizes: np.ndarray, level: float, weighting: str = "number") -> float:
    """Relative standard error of one (weighted) sample quantile, by its asymptotic variance.

    The asymptotic variance of a sample quantile is Var(F_n(x_p)) / f(x_p)^2:
    the CDF's variance at the quantile (:func:`_cdf_se`, which for number
    weighting is p(1-p)/n) over the squared density there. 1/f(x_p) (the
    *sparsity*, dQ/dp) is estimated by Siddiqui's difference quotient
    (Q(p+h) - Q(p-h)) / 2h with the Hall-Sheather bandwidth h ~ n^(-1/3), so
    no distribution is assumed.

    Parameters
    ----------
    sizes : ndarray
        Particle diameters (finite, positive).
    level : float
        Quantile level in (0, 1), e.g. 0.9 for D90.
    weighting : {"number", "volume"}
        As :func:`percentiles_with_ci`.

    Returns
    -------
    float
        se(x_p) / x_p; it falls as 1/sqrt(n). NaN for fewer than 2 particles.
    """
    from scipy.stats import norm

    sizes = np.asarray(sizes, dtype=np.float64)
    sizes = sizes[np.isfinite(sizes)]
    n = sizes.size
    if n < 2:
        return float("nan")
    weights = sizes**3 if weighting == "volume" else None
    value = float(weighted_quantiles(sizes, weights, np.array([level]))[0])
    if value <= 0:
        return float("nan")
    se_cdf = _cdf_se(sizes, weights, value, level)
    # Hall-Sheather bandwidth (for a 95 % interval), clipped so both ends stay inside (0, 1)
    zq = norm.ppf(level)
    h = n ** (-1 / 3) * norm.ppf(0.975) ** (2 / 3) * (1.5 * norm.pdf(zq) ** 2 / (2 * zq**2 + 1)) ** (1 / 3)
    lo, hi = max(level - h, 0.5 / n), min(level + h, 1 - 0.5 / n)
    q_lo, q_hi = weighted_quantiles(sizes, weights, np.array([lo, hi]))
    sparsity = (q_hi - q_lo) / max(hi - lo, 1e-12)
    return float(se_cdf * sparsity / value)


def lognormal_relative_se(gsd: float, level: float, weighting: str = "number", n: int = 1) -> float:
    """The same relative standard error for a log-normal population, in closed form.

    For sizes ln X ~ N(mu, s^2), s = ln(gsd), and weights X^k (k = 0 number,
    3 volume): sqrt(n) se(x_p)/x_p = s sqrt(exp(k^2 s^2) [(1-p)^2 Phi(z_p - k s)
    + p^2 (1 - Phi(z_p - k s))]) / phi(z_p), which for k = 0 is the textbook
    s sqrt(p(1-p)) / phi(z_p). A reference for :func:`quantile_relative_se`
    and for planning a measurement from an expected spread.
    """
    from scipy.stats import norm

    k = 3 if weighting == "volume" else 0
    s = np.log(gsd)
    zp = norm.ppf(level)
    tail = norm.cdf(zp - k * s)
    var = np.exp(k**2 * s**2) * ((1 - level) ** 2 * tail + level**2 * (1 - tail))
    return float(s * np.sqrt(var) / norm.pdf(zp) / np.sqrt(n))


#: The asymptotic variance is not trusted below this many particles: no count below it is adequate.
MIN_COUNT = 100


def count_needed(
    relative_se: float, n: int, target: float = DEFAULT_TARGET, confidence: float = DEFAULT_CONFIDENCE
) -> int:
    """Particles needed for a relative CI half-width of ``target`` at ``confidence``.

    The half-width z se falls as 1/sqrt(n): n_needed = n (z se / target)^2,
    and never fewer than :data:`MIN_COUNT`.
    """
    from scipy.stats import norm

    if not np.isfinite(relative_se) or n < 1:
        return -1
    z = norm.ppf(0.5 + confidence / 2)
    return max(MIN_COUNT, int(np.ceil(n * (z * relative_se / target) ** 2)))


def count_adequacy(
    sizes: np.ndarray, target: float = DEFAULT_TARGET, confidence: float = DEFAULT_CONFIDENCE
) -> pd.DataFrame:
    """How precise D50 and D90 are for this count and spread, and how many particles a target needs.

    Number-weighted: the distribution-free asymptotic variance
    (:func:`quantile_relative_se`). Volume-weighted: the larger of that and the
    log-normal reference (:func:`lognormal_relative_se`) at the sample's
    geometric standard deviation, because a small sample under-represents the
    large particles that dominate the volume.

    Parameters
    ----------
    sizes : ndarray
        Particle diameters.
    target : float
        Wanted relative CI half-width (0.05: +-5 %).
    confidence : float
        Central coverage of that interval.

    Returns
    -------
    DataFrame
        Rows ``D50_n, D90_n, D50_v, D90_v``; columns ``precision`` (achieved
        relative half-width z se / D at ``confidence``), ``count_needed`` (-1
        when unknown) and ``adequate`` (the count reaches ``count_needed``).
    """
    from scipy.stats import norm

    sizes = np.asarray(sizes, dtype=np.float64)
    sizes = sizes[np.isfinite(sizes)]
    z = norm.ppf(0.5 + confidence / 2)
    positive = sizes[sizes > 0]
    gsd = float(np.exp(np.std(np.log(positive)))) if positive.size > 1 else float("nan")
    rows = {}
    for name, level, tag in ADEQUACY_PERCENTILES:
        rse = quantile_relative_se(sizes, level, "volume" if tag == "v" else "number")
        if tag == "v" and np.isfinite(gsd):
            # volume-weighted percentiles hang on the few largest particles: until the tail is
            # sampled the distribution-free estimate understates their variance, so the
            # log-normal reference at the sample's spread bounds it from below
            rse = max(rse, lognormal_relative_se(gsd, level, "volume", sizes.size))
        needed = count_needed(rse, sizes.size, target, confidence)
        rows[f"{name}_{tag}"] = {
            "precision": z * rse,
            "count_needed": needed,
            "adequate": bool(needed >= 0 and sizes.size >= needed),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def adequacy_row(
    sizes: np.ndarray, target: float = DEFAULT_TARGET, confidence: float = DEFAULT_CONFIDENCE
) -> dict[str, object]:
    """Flat summary columns of :func:`count_adequacy`: ``Precision_D90_n`` (relative
    half-width), ``CountNeeded_D90_n``, ... , ``PrecisionTarget``, ``Confidence``,
    ``CountAdequate`` (every reported percentile meets the target)."""
    table = count_adequacy(sizes, target, confidence)
    row: dict[str, object] = {"PrecisionTarget": target, "Confidence": confidence}
    for name, rec in table.iterrows():
        row[f"Precision_{name}"] = rec["precision"]
        row[f"CountNeeded_{name}"] = int(rec["count_needed"])
    row["CountAdequate"] = bool(table["adequate"].all()) if len(table) else False
    return row


def adequacy_warning(row: dict | pd.Series, count: int) -> str | None:
    """One line when the count is too small for the target precision of some percentile, else None."""
    short = [
        (name, row[f"CountNeeded_{name}"], row[f"Precision_{name}"])
        for name in (f"{n}_{t}" for n, _, t in ADEQUACY_PERCENTILES)
        if f"CountNeeded_{name}" in row and row[f"CountNeeded_{name}"] > count
    ]
    if not short:
        return None
    if count < MIN_COUNT:
        return (
            f"{count} particles are too few to judge the precision of D50 and D90 (at least {MIN_COUNT}; "
            "ISO 13322-1 asks for thousands)"
        )
    name, needed, precision = max(short, key=lambda s: s[1])
    label = f"{name[:3]} ({'volume' if name.endswith('_v') else 'number'})"
    others = f"; {len(short) - 1} more percentile(s) short too" if len(short) > 1 else ""
    return (
        f"{count} particles give {label} to +-{100 * precision:.0f} % at "
        f"{100 * row['Confidence']:.0f} %; +-{100 * row['PrecisionTarget']:g} % needs about "
        f"{needed:,} (ISO 13322-1){others}"
    )


def percentiles_with_ci(
    sizes: np.ndarray,
    weighting: str = "number",
    n_boot: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
    max_elements: int = 4_000_000,
) -> pd.DataFrame:
    """D10/D50/D90 of ``sizes`` with confidence intervals.

    Percentile-bootstrap intervals up to :data:`BOOTSTRAP_MAX` particles,
    Woodruff intervals above (same coverage at that size, O(n) instead of
    O(n_boot n log n)).

    Parameters
    ----------
    sizes : ndarray
        Particle diameters (e.g. the ``EqDiam`` column).
    weighting : {"number", "volume"}
        Each particle counts once, or in proportion to ``size ** 3``.
    n_boot : int
        Bootstrap resamples (resampled in chunks of at most ``max_elements`` values).
    confidence : float
        Central coverage of the interval.

    Returns
    -------
    DataFrame
        Rows D10, D50, D90; columns ``value``, ``ci_low``, ``ci_high``.
    """
    if weighting not in ("number", "volume"):
        raise ValueError(f"weighting must be 'number' or 'volume', got {weighting!r}")
    sizes = np.asarray(sizes, dtype=np.float64)
    sizes = sizes[np.isfinite(sizes)]
    names = [f"D{p}" for p in PERCENTILES]
    if sizes.size == 0:
        return pd.DataFrame({"value": np.nan, "ci_low": np.nan, "ci_high": np.nan}, index=names)
    q = np.array(PERCENTILES) / 100.0
    weights = sizes**3 if weighting == "volume" else None
    value = weighted_quantiles(sizes, weights, q)
    if sizes.size > BOOTSTRAP_MAX:
        low, high = woodruff_intervals(sizes, weights, q, confidence)
        return pd.DataFrame({"value": value, "ci_low": low, "ci_high": high}, index=names)
    rng = np.random.default_rng(seed)
    chunk = max(1, max_elements // sizes.size)
    boots = []
    for start in range(0, n_boot, chunk):
        idx = bootstrap_indices(sizes.size, min(chunk, n_boot - start), rng)
        boots.append(
            np.atleast_2d(weighted_quantiles(sizes[idx], None if weights is None else weights[idx], q))
        )
    boots = np.concatenate(boots)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boots, [alpha, 1 - alpha], axis=0)
    return pd.DataFrame({"value": value, "ci_low": low, "ci_high": high}, index=names)


def psd_row(sizes: np.ndarray, n_boot: int = 500, seed: int = 0) -> dict[str, float]:
    """One flat summary row: number- and volume-weighted D10/D50/D90 and their CIs."""
    row: dict[str, float] = {}
    for weighting, tag in (("number", "n"), ("volume", "v")):
        table = percentiles_with_ci(sizes, weighting, n_boot=n_boot, seed=seed)
        for name, rec in table.iterrows():
            row[f"{name}_{tag}"] = rec["value"]
            row[f"{name}_{tag}_low"] = rec["ci_low"]
            row[f"{name}_{tag}_high"] = rec["ci_high"]
    return row


def cumulative_distribution(sizes: np.ndarray, weighting: str = "number") -> tuple[np.ndarray, np.ndarray]:
    """Sorted sizes and the cumulative percentage (0..100) below each, for a PSD curve."""
    sizes = np.sort(np.asarray(sizes, dtype=np.float64)[np.isfinite(sizes)])
    weights = sizes**3 if weighting == "volume" else np.ones_like(sizes)
    cum = np.cumsum(weights)
    return sizes, 100.0 * cum / cum[-1] if cum.size else cum
