"""Calibrate a network's etch depth on real sites' average depths.

A network trained on simulation predicts a depth ``D`` per image; on a real
tool its brightness scale differs, so the depth is corrected by a map fitted on
the real training images, whose only labels are their site's average depth:
:func:`fit_site_affine` (one line through the site means) or :func:`fit_ridge`
(a ridge regression on ``D`` and the image's brightness statistics).
"""

from __future__ import annotations

import numpy as np
import torch

from micrometry.depth.nets import image_statistics


def calibration_features(depth: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(B, 6)``: the network's depth and the image's brightness statistics."""
    return torch.cat([depth[:, None], image_statistics(x)], dim=1)


def fit_ridge(features: np.ndarray, target: np.ndarray, alpha: float = 1.0) -> tuple:
    """Ridge regression on standardised features; returns ``(mean, scale, coef, intercept)``."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    z = (features - mean) / scale
    intercept = float(target.mean())
    coef = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (target - intercept))
    return (mean.astype(np.float32), scale.astype(np.float32), coef.astype(np.float32), np.float32(intercept))


N_FEATURES = 6  # calibration_features: the depth and five brightness statistics


def check_ridge(ridge) -> tuple:
    """A stored ridge calibration as ``(mean, scale, coef, intercept)`` float32 arrays, checked.

    Raises
    ------
    ValueError
        Not four parts, vectors not of :data:`N_FEATURES` finite values, a zero
        scale, or a non-finite intercept (a damaged or edited model file).
    """
    try:
        mean, scale, coef, intercept = (np.asarray(v, dtype=np.float32) for v in ridge)
    except (TypeError, ValueError):
        raise ValueError("ridge calibration must be four arrays (mean, scale, coef, intercept)") from None
    for name, v in (("mean", mean), ("scale", scale), ("coef", coef)):
        if v.shape != (N_FEATURES,) or not np.isfinite(v).all():
            raise ValueError(f"ridge {name} must hold {N_FEATURES} finite numbers, got shape {v.shape}")
    if intercept.shape != () or not np.isfinite(intercept) or not (scale != 0).all():
        raise ValueError("ridge intercept must be one finite number and its scales non-zero")
    return mean, scale, coef, intercept


def apply_ridge(ridge: tuple, features: torch.Tensor) -> torch.Tensor:
    """The ridge prediction ``(B,)`` of :func:`fit_ridge`'s ``(mean, scale, coef, intercept)``."""
    mean, scale, coef, intercept = (
        torch.as_tensor(v, dtype=features.dtype, device=features.device) for v in ridge
    )
    return ((features - mean) / scale) @ coef + intercept


def fit_site_affine(pred_depth: np.ndarray, site: np.ndarray, site_depth: np.ndarray) -> tuple[float, float]:
    """Least-squares ``a, b`` with ``a * mean_pred(site) + b ~ site average``, one point per site.

    With fewer than 3 sites, or predicted site means that barely vary, only the
    offset is fitted (a slope from two points is noise).
    """
    sites = np.unique(site)
    pred_mean = np.array([pred_depth[site == s].mean() for s in sites])
    true_mean = np.array([site_depth[site == s][0] for s in sites])
    if len(sites) >= 3 and pred_mean.std() > 1e-3:
        a, b = np.polyfit(pred_mean, true_mean, 1)
        return float(a), float(b)
    return 1.0, float((true_mean - pred_mean).mean())


def conformal_halfwidth(residuals: np.ndarray, coverage: float = 0.9) -> float:
    """Half-width of a symmetric interval that holds ``coverage`` of new errors (split conformal).

    ``residuals`` must come from images the calibration was not fitted to; the
    ``ceil((n + 1) * coverage)``-th smallest absolute residual then covers a new
    image's error with probability >= ``coverage`` (exchangeable images).
    """
    r = np.sort(np.abs(np.asarray(residuals, dtype=np.float64)))
    if not len(r):
        return float("nan")
    k = int(np.ceil((len(r) + 1) * coverage))
    return float(r[min(k, len(r)) - 1])


def site_conformal_halfwidth(residuals: np.ndarray, sites: np.ndarray, coverage: float = 0.9) -> float:
    """Half-width of a ``coverage`` interval for an image of a *new* site.

    :func:`conformal_halfwidth` treats the held-out images as exchangeable with a new one, but
    the images of one site share most of their error: 200 residuals from 8 held-out sites say
    little more than 8 would about how a new site's error spreads. The split-conformal
    half-width is therefore widened by the normal-theory factor for a spread estimated from
    ``k`` sites, ``t(k - 1) / z`` at the interval's quantile (k = 8, 90 %: x1.15). With fewer
    than 2 sites it is the plain split-conformal half-width (its measured coverage: docs/depth.md,
    "Why unet-weak's defaults").
    """
    from scipy import stats  # training-time only: prediction never imports scipy

    half = conformal_halfwidth(residuals, coverage)
    k = len(np.unique(np.asarray(sites)))
    if k < 2:
        return half
    q = 0.5 + coverage / 2.0
    return float(half * stats.t.ppf(q, k - 1) / stats.norm.ppf(q))
