"""RoIAlign with ``grid_sample``: a fixed-size feature patch for each box, no compiled extension.

Semantics are those of torchvision's ``roi_align`` with ``aligned=True`` and a
fixed ``sampling_ratio``: box coordinates are scaled by ``spatial_scale`` and
shifted by half a pixel (pixel centres sit at integer coordinates of the
feature map), each output bin averages ``sampling_ratio**2`` bilinear samples
at the centres of a regular sub-grid, a sample within one pixel outside the
map takes the border value, and one further out counts as zero.

``grid_sample`` with ``align_corners=True`` and border padding reads exactly
that bilinear value at integer-indexed coordinates; a mask zeroes the samples
more than one pixel outside. All boxes of an image go through one
``grid_sample`` call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sample_points(
    rois: torch.Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature-map coordinates of every sample: ``y (K, ph * s)`` and ``x (K, pw * s)``."""
    ph, pw = output_size
    offset = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    w = (rois[:, 3] - rois[:, 1]) * spatial_scale
    h = (rois[:, 4] - rois[:, 2]) * spatial_scale
    if not aligned:  # the legacy rule: boxes are at least one pixel
        w, h = w.clamp(min=1.0), h.clamp(min=1.0)
    s = sampling_ratio
    fy = (torch.arange(ph * s, device=rois.device, dtype=rois.dtype) + 0.5) / (ph * s)
    fx = (torch.arange(pw * s, device=rois.device, dtype=rois.dtype) + 0.5) / (pw * s)
    return y1[:, None] + fy[None] * h[:, None], x1[:, None] + fx[None] * w[:, None]


def _normalised(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel index -> grid_sample's [-1, 1] with align_corners=True."""
    return coord * (2.0 / (size - 1)) - 1.0 if size > 1 else torch.zeros_like(coord)


def roi_align(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 2,
    aligned: bool = True,
) -> torch.Tensor:
    """Pool a ``(ph, pw)`` patch of ``features`` under each region.

    Parameters
    ----------
    features : Tensor
        ``(N, C, H, W)``.
    rois : Tensor
        ``(K, 5)``: batch index, then ``x1, y1, x2, y2`` in input-image pixels.
    output_size : int or (int, int)
    spatial_scale : float
        Feature-map pixels per input pixel (1 / stride).
    sampling_ratio : int
        Samples per bin along each axis (> 0; torchvision's adaptive ``-1`` is
        not supported: it makes every box's grid a different size).
    aligned : bool
        Half-pixel shift (True is the correct geometry).

    Returns
    -------
    Tensor
        ``(K, C, ph, pw)``.
    """
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    if sampling_ratio <= 0:
        raise ValueError("sampling_ratio must be positive")
    n, c, h, w = features.shape
    k, s = rois.shape[0], sampling_ratio
    out = features.new_zeros((k, c, ph, pw))
    if k == 0:
        return out
    ys, xs = sample_points(rois.to(features.dtype), (ph, pw), spatial_scale, s, aligned)
    inside = ((ys >= -1.0) & (ys <= h))[:, :, None] & ((xs >= -1.0) & (xs <= w))[:, None, :]
    grid = torch.stack(
        torch.broadcast_tensors(_normalised(xs, w)[:, None, :], _normalised(ys, h)[:, :, None]), dim=-1
    )  # (K, ph*s, pw*s, 2) as (x, y)
    batch = rois[:, 0].long()
    for b in torch.unique(batch).tolist():
        idx = torch.nonzero(batch == b).flatten()
        g = grid[idx].reshape(1, idx.numel() * ph * s, pw * s, 2)
        sampled = F.grid_sample(
            features[b : b + 1], g, mode="bilinear", padding_mode="border", align_corners=True
        )
        sampled = sampled.reshape(c, idx.numel(), ph * s, pw * s).permute(1, 0, 2, 3)
        sampled = sampled * inside[idx][:, None].to(sampled.dtype)
        out[idx] = F.avg_pool2d(sampled, s) if s > 1 else sampled  # the mean of each bin's samples
    return out


def level_of_boxes(
    boxes: torch.Tensor, min_level: int, max_level: int, canonical_size: float, canonical_level: int
) -> torch.Tensor:
    """The pyramid level (log2 of its stride) each box is pooled from (FPN paper, eq. 1).

    A box of side ``canonical_size`` goes to ``canonical_level``; each doubling
    of the side one level coarser.
    """
    side = torch.sqrt(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1e-6))
    level = torch.floor(canonical_level + torch.log2(side / canonical_size + 1e-6))
    return level.clamp(min_level, max_level).long()


def multiscale_roi_align(
    features: list[torch.Tensor],
    strides: list[int],
    rois: torch.Tensor,
    output_size: int,
    sampling_ratio: int = 2,
    canonical_size: float = 32.0,
    canonical_level: int = 3,
) -> torch.Tensor:
    """RoIAlign from the pyramid level that suits each box's size.

    ``features[i]`` has stride ``strides[i]`` (powers of two, increasing).
    """
    levels = [int(round(math.log2(s))) for s in strides]
    which = level_of_boxes(rois[:, 1:], levels[0], levels[-1], canonical_size, canonical_level)
    c = features[0].shape[1]
    out = features[0].new_zeros((rois.shape[0], c, output_size, output_size))
    for feature, stride, level in zip(features, strides, levels, strict=False):
        idx = torch.nonzero(which == level).flatten()
        if idx.numel():
            out[idx] = roi_align(feature, rois[idx], output_size, 1.0 / stride, sampling_ratio)
    return out
