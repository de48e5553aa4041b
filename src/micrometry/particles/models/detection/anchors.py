"""Anchor boxes: a few sizes and aspect ratios centred on every cell of each pyramid level."""

from __future__ import annotations

import torch


def cell_anchors(sizes: tuple[float, ...], ratios: tuple[float, ...]) -> torch.Tensor:
    """``(A, 4)`` anchors centred on the origin; ``ratio`` is height / width, area ``size**2``."""
    out = []
    for size in sizes:
        for ratio in ratios:
            w = size / ratio**0.5
            h = size * ratio**0.5
            out.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(out, dtype=torch.float32)


def grid_anchors(base: torch.Tensor, stride: int, height: int, width: int) -> torch.Tensor:
    """``(height * width * A, 4)`` anchors, cell-major (the order in which the RPN head's maps flatten).

    Cell ``(i, j)`` covers input pixels ``[j * stride, (j + 1) * stride)``: its
    anchors are centred on ``((j + 0.5) * stride, (i + 0.5) * stride)``.
    """
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
    return (shifts + base[None]).reshape(-1, 4)


class AnchorGenerator:
    """Anchors for every level of a feature pyramid, cached by map size.

    Parameters
    ----------
    sizes : tuple of tuple of float
        Anchor sides (pixels) per level.
    ratios : tuple of float
        Height / width ratios, the same on every level.
    strides : tuple of int
        Each level's stride.
    """

    def __init__(
        self, sizes: tuple[tuple[float, ...], ...], ratios: tuple[float, ...], strides: tuple[int, ...]
    ):
        if len(sizes) != len(strides):
            raise ValueError("one tuple of anchor sizes per level")
        self.bases = [cell_anchors(s, ratios) for s in sizes]
        self.strides = strides
        self._cache: dict[tuple, list[torch.Tensor]] = {}

    @property
    def per_cell(self) -> int:
        """Anchors per cell (the same on every level)."""
        return self.bases[0].shape[0]

    def __call__(self, shapes: list[tuple[int, int]], device: torch.device) -> list[torch.Tensor]:
        """One ``(h * w * A, 4)`` tensor per level for maps of the given ``(h, w)``."""
        key = (tuple(shapes), str(device))
        if key not in self._cache:
            self._cache = {
                key: [
                    grid_anchors(b, s, h, w).to(device)
                    for b, s, (h, w) in zip(self.bases, self.strides, shapes, strict=False)
                ]
            }
        return self._cache[key]
