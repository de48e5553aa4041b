"""Augmentations of 72x48 SEM batches: what a real tool adds to the simulator's images.

Flips apply to image and depth map alike (holes look the same mirrored); the
imaging augmentations (a wider astigmatic probe, scan-line jitter, a charging
drift, more noise) apply to the image only. All take and return ``(B, 1, H, W)``
tensors and draw from an explicit :class:`torch.Generator`, so a seeded run
repeats exactly.
"""

from __future__ import annotations

import torch
from torch import nn

FLIP_DIMS = ([], [3], [2], [2, 3])  # identity, left-right, up-down, both


def random_flip(x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator):
    """One random flip of :data:`FLIP_DIMS` applied to the batch ``x`` and its targets ``y`` alike."""
    dims = FLIP_DIMS[int(torch.randint(0, 4, (1,), generator=generator))]
    if not dims:
        return x, y
    return x.flip(dims), None if y is None else y.flip(dims)


def gaussian_blur_axis(x: torch.Tensor, sigma: float, axis: int, radius: int = 3) -> torch.Tensor:
    """Blur ``(B, 1, H, W)`` along ``axis`` (2: rows, 3: columns) with a Gaussian of ``sigma`` px
    truncated at ``radius`` px, edges replicated."""
    r = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (r / max(sigma, 1e-3)) ** 2)
    k = k / k.sum()
    rows = axis == 2
    padding = (0, 0, radius, radius) if rows else (radius, radius, 0, 0)
    kernel = k.view(1, 1, -1, 1) if rows else k.view(1, 1, 1, -1)
    return nn.functional.conv2d(nn.functional.pad(x, padding, mode="replicate"), kernel)


def random_blur(x: torch.Tensor, generator: torch.Generator, max_sigma: float) -> torch.Tensor:
    """Blur the batch with one random astigmatic Gaussian (sigma_x, sigma_y in [0, max_sigma]):
    a wider, astigmatic real probe on top of the simulator's."""
    sy, sx = (torch.rand(2, generator=generator) * max_sigma).tolist()
    if sy > 0.2:
        x = gaussian_blur_axis(x, sy, 2)
    if sx > 0.2:
        x = gaussian_blur_axis(x, sx, 3)
    return x


def line_jitter(x: torch.Tensor, generator: torch.Generator, max_px: float) -> torch.Tensor:
    """Shift every image row by its own random sub-pixel amount (scan-line jitter), linearly interpolated."""
    b, _, h, w = x.shape
    sd = torch.rand(b, 1, generator=generator) * max_px
    shift = (torch.randn(b, h, generator=generator) * sd).to(x.device, x.dtype)  # (B, H) pixels
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w) - shift[:, :, None]
    x0 = cols.floor().clamp(0, w - 1)
    frac = (cols - cols.floor()).clamp(0, 1)
    x1 = (x0 + 1).clamp(max=w - 1)
    rows = x[:, 0]
    out = rows.gather(2, x0.long()) * (1 - frac) + rows.gather(2, x1.long()) * frac
    return out.unsqueeze(1)


def charging_ramp(x: torch.Tensor, generator: torch.Generator, max_drift: float) -> torch.Tensor:
    """Multiply by a brightness drift along the slow scan axis (rows), as charging does."""
    b, _, h, _ = x.shape
    drift = ((torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * max_drift).to(x.device, x.dtype)
    ramp = torch.linspace(0, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    return x * (1 + drift * (1 - torch.exp(-3 * ramp)))


def random_noise(x: torch.Tensor, generator: torch.Generator, max_sd: float) -> torch.Tensor:
    """Add Gaussian noise with a per-image standard deviation drawn from [0, max_sd] (a lower dose)."""
    sd = torch.rand(len(x), 1, 1, 1, generator=generator).to(x.device, x.dtype) * max_sd
    return x + sd * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)


def imaging_augment(
    x: torch.Tensor,
    generator: torch.Generator,
    blur: float = 0.0,
    jitter: float = 0.0,
    charging: float = 0.0,
    noise: float = 0.0,
) -> torch.Tensor:
    """The imaging augmentations in the order a tool applies them (probe, scan, charging, detector);
    a zero strength skips one."""
    if blur > 0:
        x = random_blur(x, generator, blur)
    if jitter > 0:
        x = line_jitter(x, generator, jitter)
    if charging > 0:
        x = charging_ramp(x, generator, charging)
    if noise > 0:
        x = random_noise(x, generator, noise)
    return x


def hole_frames(depth: torch.Tensor, bottom: float = 30.0, window: float = 0.8) -> torch.Tensor:
    """Centre and semi-axes ``(B, 4)`` = ``(cx, cy, ax, ay)`` (px) of each map's central hole opening.

    The opening is where the height lies below the top surface by more than 5 % of the etch depth
    (a uniform ellipse of semi-axes ``a, b`` has variances ``a**2 / 4, b**2 / 4``), read first within
    a central ellipse of ``window`` times the half image, then twice within 1.15 times the opening
    found: the neighbouring holes of the array, at the corners, stay outside. ``depth`` is
    ``(B, 1, H, W)`` heights in nm.
    """
    _, _, h, w = depth.shape
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=depth.dtype, device=depth.device),
        torch.arange(w, dtype=depth.dtype, device=depth.device),
        indexing="ij",
    )
    flat = depth[:, 0]
    top = flat.flatten(1).amax(1)[:, None, None]
    below = flat < top - 0.05 * (top - bottom)
    b = len(depth)
    cx = torch.full((b,), (w - 1) / 2, dtype=depth.dtype, device=depth.device)
    cy = torch.full((b,), (h - 1) / 2, dtype=depth.dtype, device=depth.device)
    ax = torch.full((b,), window * w / 2, dtype=depth.dtype, device=depth.device)
    ay = torch.full((b,), window * h / 2, dtype=depth.dtype, device=depth.device)
    for reach in (1.0, 1.15, 1.15):
        dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
        near = (dx / (reach * ax[:, None, None])) ** 2 + (dy / (reach * ay[:, None, None])) ** 2 < 1
        inside = (below & near).to(depth.dtype)
        n = inside.sum((1, 2)).clamp(min=1.0)
        cx = (inside * xx).sum((1, 2)) / n
        cy = (inside * yy).sum((1, 2)) / n
        ax = (2 * ((inside * (xx - cx[:, None, None]) ** 2).sum((1, 2)) / n).sqrt()).clamp(min=1.0)
        ay = (2 * ((inside * (yy - cy[:, None, None]) ** 2).sum((1, 2)) / n).sqrt()).clamp(min=1.0)
    return torch.stack([cx, cy, ax, ay], dim=1)


def radial_warp_grid(
    frames: torch.Tensor, scale: torch.Tensor, slope: torch.Tensor, size: tuple[int, int], outer: float = 1.6
) -> torch.Tensor:
    """Sampling grid (``grid_sample`` convention, ``(B, H, W, 2)``) of a warp of each hole about its centre.

    In the output the hole's opening has semi-axes ``scale * (ax, ay)`` (``scale``: ``(B, 2)``); inside
    it, a point at normalised elliptical radius ``r`` (1 on the rim) takes the input at radius
    ``F(r) = k r / (1 + (k - 1) r)`` with ``k = slope`` (``(B,)``): the rim stays the rim and the
    centre the centre, but every radial height profile ``s(r)`` becomes ``s(F(r))``. ``k > 1`` draws
    the bottom in (a more tapered hole, a V-like floor: a floor radius ``t`` becomes
    ``t / (k - (k - 1) t)``), ``k < 1`` widens it (a steeper wall, a flatter floor). ``F`` is a
    Moebius map: its stretch stays between ``1/k`` and ``k`` (a power law would smear the centre's
    pixels radially without bound). Outside the rim the warp fades smoothly to the identity at
    ``outer`` output radii, so the top surface and the array's neighbouring holes beyond stay in place.
    """
    h, w = size
    dtype, device = frames.dtype, frames.device
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=dtype, device=device),
        torch.arange(w, dtype=dtype, device=device),
        indexing="ij",
    )
    cx, cy, ax, ay = (frames[:, i, None, None] for i in range(4))
    u = (xx - cx) / (scale[:, 0, None, None] * ax)
    v = (yy - cy) / (scale[:, 1, None, None] * ay)
    r = torch.hypot(u, v).clamp(min=1e-6)
    k = slope[:, None, None]
    inner = r.clamp(max=1.0)
    r_in = torch.where(r <= 1, k * inner / (1 + (k - 1) * inner), r)
    warped_x = cx + u * (r_in / r) * ax
    warped_y = cy + v * (r_in / r) * ay
    t = ((r - 1) / (outer - 1)).clamp(0, 1)
    fade = t * t * (3 - 2 * t)  # smoothstep: 0 at the rim, 1 at ``outer``
    src_x = warped_x + fade * (xx - warped_x)
    src_y = warped_y + fade * (yy - warped_y)
    # grid_sample's normalised coordinates with align_corners=True: -1 and 1 are the edge pixels' centres
    return torch.stack([2 * src_x / (w - 1) - 1, 2 * src_y / (h - 1) - 1], dim=-1)


def random_shape_warp(
    x: torch.Tensor,
    y: torch.Tensor,
    frames: torch.Tensor,
    generator: torch.Generator,
    probability: float,
    max_log_scale: float,
    max_log_slope: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Warp a random ``probability`` share of the batch's holes (:func:`radial_warp_grid`), image and
    height map alike: shapes outside the simulation's geometry prior.

    Per warped hole the opening's scale is ``exp(U(-max_log_scale, max_log_scale))`` (each axis its own
    draw around a shared one, up to a quarter of the range apart) and the profile's slope at the centre
    ``exp(U(-max_log_slope, max_log_slope))``; the other holes are left as they are. ``frames`` are the
    holes' :func:`hole_frames` (of the unwarped maps). Returns the images, the maps and which rows
    were warped (``(B,)`` bool).
    """
    b = len(x)
    chosen = torch.rand(b, generator=generator) < probability
    if probability <= 0 or not bool(chosen.any()):
        return x, y, torch.zeros(b, dtype=torch.bool, device=x.device)
    idx = torch.nonzero(chosen).squeeze(1)
    k = len(idx)
    shared = (torch.rand(k, 1, generator=generator) * 2 - 1) * max_log_scale
    apart = (torch.rand(k, 2, generator=generator) * 2 - 1) * max_log_scale / 4
    scale = torch.exp(shared + apart).to(x.device, x.dtype)
    slope = torch.exp((torch.rand(k, generator=generator) * 2 - 1) * max_log_slope).to(x.device, x.dtype)
    idx = idx.to(x.device)
    grid = radial_warp_grid(frames[idx].to(x.dtype), scale, slope, tuple(x.shape[2:]))
    both = torch.cat([x[idx], y[idx]], dim=1)
    warped = nn.functional.grid_sample(both, grid, mode="bilinear", padding_mode="border", align_corners=True)
    x, y = x.clone(), y.clone()
    x[idx], y[idx] = warped[:, :1], warped[:, 1:]
    return x, y, chosen.to(x.device)
