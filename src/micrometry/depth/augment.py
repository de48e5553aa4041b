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


def _gaussian_kernel(sigma: float, dtype, device) -> torch.Tensor:
    r = torch.arange(-3, 4, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (r / max(sigma, 1e-3)) ** 2)
    return k / k.sum()


def random_blur(x: torch.Tensor, generator: torch.Generator, max_sigma: float) -> torch.Tensor:
    """Blur the batch with one random astigmatic Gaussian (sigma_x, sigma_y in [0, max_sigma]):
    a wider, astigmatic real probe on top of the simulator's."""
    sy, sx = (torch.rand(2, generator=generator) * max_sigma).tolist()
    if sy > 0.2:
        k = _gaussian_kernel(sy, x.dtype, x.device).view(1, 1, 7, 1)
        x = nn.functional.conv2d(nn.functional.pad(x, (0, 0, 3, 3), mode="replicate"), k)
    if sx > 0.2:
        k = _gaussian_kernel(sx, x.dtype, x.device).view(1, 1, 1, 7)
        x = nn.functional.conv2d(nn.functional.pad(x, (3, 3, 0, 0), mode="replicate"), k)
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
