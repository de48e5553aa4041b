"""Tiled prediction of dense maps for images larger than one tile.

Instances are never cut at tile borders because tiles are stitched at the
level of the network's *maps*, before any instance exists: overlapping tiles
are predicted, each keeps only its central part (the overlap hides the
border effects of the convolutions, which reach ``overlap / 2`` pixels), and
the stitched maps are decoded once for the whole image. A particle crossing a
tile border therefore comes out as exactly one instance, as in a single pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

Forward = Callable[[torch.Tensor], torch.Tensor]


def balanced_tile(size: int, tile: int, overlap: int, multiple: int = 1) -> int:
    """The tile length, at most ``tile``, that covers ``size`` with the fewest tiles and least overlap.

    Cutting 856 px into 768 px tiles would compute 88 % of the axis twice;
    two balanced tiles of 464 px cover it with just the requested overlap.
    The length is rounded up to ``multiple`` (keep ``tile`` a multiple of it).
    """
    if size <= tile:
        return size
    n = math.ceil((size - overlap) / (tile - overlap))
    length = math.ceil((size + (n - 1) * overlap) / n)
    return min(tile, math.ceil(length / multiple) * multiple)


def tile_spans(size: int, tile: int, overlap: int, multiple: int = 1) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis, balanced (:func:`balanced_tile`).

    Returns
    -------
    list of (start, stop, keep_start, keep_stop)
        Each tile covers ``[start, stop)`` and contributes ``[keep_start,
        keep_stop)``; the kept parts partition ``[0, size)`` and each lies at
        least ``overlap // 2`` pixels inside its tile, except at the image border.
    """
    if size <= tile:
        return [(0, size, 0, size)]
    if overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    tile = balanced_tile(size, tile, overlap, multiple)
    step = tile - overlap
    starts = list(range(0, size - tile, step)) + [size - tile]
    spans = []
    for i, start in enumerate(starts):
        keep_start = 0 if i == 0 else (starts[i - 1] + tile + start) // 2
        keep_stop = size if i == len(starts) - 1 else (start + tile + starts[i + 1]) // 2
        spans.append((start, start + tile, keep_start, keep_stop))
    return spans


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad the last two dimensions up to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def predict_padded(forward: Forward, x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Run ``forward`` on ``(B, C, H, W)`` padded to a multiple and crop back."""
    h, w = x.shape[-2:]
    return forward(pad_to_multiple(x, multiple))[..., :h, :w]


#: Network pixels per forward call of tiles (at least one tile): four tiles of 768 px, as before 2026-12-08.
BATCH_PIXELS = 4 * 768 * 768


def predict_tiled(
    forward: Forward,
    image: torch.Tensor,
    tile: int,
    overlap: int,
    multiple: int,
    batch_pixels: int = BATCH_PIXELS,
) -> torch.Tensor:
    """Maps for a whole image, predicted in overlapping tiles and stitched.

    Parameters
    ----------
    forward : callable
        ``(B, 1, h, w) -> (B, C, h, w)``; sides are multiples of ``multiple``.
    image : Tensor
        ``(1, H, W)`` normalised image.
    tile, overlap : int
        Tile side and overlap, in pixels of ``image``; an image no larger than
        one tile is predicted in a single pass.
    multiple : int
        The network's size multiple (tiles are padded to it).
    batch_pixels : int
        Tiles are predicted together up to this many pixels (at least one tile per call).

    Returns
    -------
    Tensor
        ``(C, H, W)`` maps.
    """
    _, h, w = image.shape
    if h <= tile and w <= tile:
        # (C, H, W) in row-major order whatever layout the network computed in
        return predict_padded(forward, image[None], multiple)[0].contiguous()
    # Pad once for the whole image so that its borders are treated as in a single pass.
    padded = pad_to_multiple(image[None], multiple)[0]
    tile = max(multiple, tile - tile % multiple)
    rows = tile_spans(padded.shape[1], tile, overlap, multiple)
    cols = tile_spans(padded.shape[2], tile, overlap, multiple)
    jobs = [(r, c) for r in rows for c in cols]
    batch_size = max(1, batch_pixels // ((rows[0][1] - rows[0][0]) * (cols[0][1] - cols[0][0])))
    out: torch.Tensor | None = None
    for first in range(0, len(jobs), batch_size):
        chunk = jobs[first : first + batch_size]
        crops = [padded[:, r[0] : r[1], c[0] : c[1]] for r, c in chunk]
        # Tiles share one size unless the image is smaller than a tile along one axis.
        same = all(cr.shape == crops[0].shape for cr in crops)
        batches = [torch.stack(crops)] if same else [cr[None] for cr in crops]
        maps = torch.cat([predict_padded(forward, b, multiple) for b in batches])
        if out is None:
            out = maps.new_zeros((maps.shape[1], *padded.shape[1:]))
        for (r, c), m in zip(chunk, maps, strict=False):
            out[:, r[2] : r[3], c[2] : c[3]] = m[:, r[2] - r[0] : r[3] - r[0], c[2] - c[0] : c[3] - c[0]]
    assert out is not None
    return out[:, :h, :w]


def flip_tta(forward: Forward, vector_channels: tuple[int, int] | None) -> Forward:
    """Average ``forward`` over the four flips; vector channels (dy, dx) change sign when flipped."""

    def averaged(x: torch.Tensor) -> torch.Tensor:
        total = None
        for dims in ((), (-2,), (-1,), (-2, -1)):
            y = forward(x.flip(dims) if dims else x)
            y = y.flip(dims) if dims else y
            if vector_channels is not None:
                y = y.clone()
                if -2 in dims:
                    y[:, vector_channels[0]] *= -1
                if -1 in dims:
                    y[:, vector_channels[1]] *= -1
            total = y if total is None else total + y
        return total / 4

    return averaged
