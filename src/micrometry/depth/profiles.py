"""Dips that no hole has: measured along lines, filled as basins.

Networks trained on one geometry draw dips of a few nm into the flat top surface around holes
shaped otherwise (docs/depth.md, "Why the render loss does not reach the predicted top surface"):
:func:`excess_variation` measures them without a label, :func:`fill_dips` fills the closed ones.
"""

from __future__ import annotations

import torch


def excess_variation(heights: torch.Tensor) -> torch.Tensor:
    """Mean variation (nm per pixel) of height maps ``(N, H, W)`` beyond what their walls need.

    Along a row or column, the least total variation that reaches the line's highest and lowest
    points from its ends is ``2 (max - min) - |first - last|``: one fall and one rise, whatever the
    walls' profile. The excess over it counts twice the depth of every extra dip or bump (true hole
    maps: about 0.01 nm/px; docs/depth.md, "Why the render loss does not reach the predicted top
    surface").
    """

    def along_rows(h: torch.Tensor) -> torch.Tensor:
        total = (h[..., 1:] - h[..., :-1]).abs().sum(-1)
        needed = 2 * (h.amax(-1) - h.amin(-1)) - (h[..., 0] - h[..., -1]).abs()
        return (total - needed).sum()

    return (along_rows(heights) + along_rows(heights.transpose(-1, -2))) / heights.numel()


def _sweep_lines(g: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """One pass each way along the last axis of ``g <- max(floor, min(g, the neighbour's g))``."""
    # the swept axis first and contiguous: each step then reads and writes whole rows of memory
    g = g.movedim(-1, 0).contiguous()
    floor = floor.movedim(-1, 0).contiguous()
    for order in (range(1, len(g)), range(len(g) - 2, -1, -1)):
        step = 1 if order.step == 1 else -1
        for i in order:
            torch.minimum(g[i], g[i - step], out=g[i])
            torch.maximum(g[i], floor[i], out=g[i])
    return g.movedim(0, -1)


def reconstruct_by_erosion(marker: torch.Tensor, mask: torch.Tensor, max_rounds: int = 200) -> torch.Tensor:
    """Morphological reconstruction by erosion of ``marker`` above ``mask`` (both ``(N, H, W)``).

    Each pixel ``p`` takes the least, over the 4-connected paths from ``p`` to any pixel ``q``, of
    ``max(marker[q], the highest mask value on the path)``: a low marker value spreads as water
    would, over every pass lower than itself. Computed by sweeps along rows and columns, each image
    until it settles (a smooth map settles in a few rounds).
    """
    g = torch.maximum(marker, mask)
    active = torch.arange(len(g), device=g.device)
    for _ in range(max_rounds):
        if not len(active):
            break
        sub, floor = g[active], mask[active]
        nxt = _sweep_lines(sub, floor)
        nxt = _sweep_lines(nxt.transpose(-1, -2), floor.transpose(-1, -2)).transpose(-1, -2)
        changed = (nxt != sub).flatten(1).any(1)
        g[active] = nxt
        active = active[changed]
    return g


def fill_dips(maps: torch.Tensor, dynamic: float) -> torch.Tensor:
    """``maps`` ``(N, H, W)`` with every closed dip shallower than ``dynamic`` filled to its rim.

    A dip is a basin of the map that does not reach the crop's edge; its depth (dynamic) is how far
    its lowest point lies below the lowest pass out of it. Basins at least ``dynamic`` deep (the
    holes) and basins that reach the edge (a neighbour's hole cut by the crop) are left exactly as
    they were: the h-minima transform marks the deep ones, and a reconstruction from them and the
    edge restores their slopes. True hole maps are unchanged by it (docs/depth.md, "Filling the
    top surface's dips").
    """
    if dynamic <= 0:
        return maps
    raised = reconstruct_by_erosion(maps + dynamic, maps)
    seeds = raised - maps >= dynamic * (1 - 1e-4)  # the bottoms of basins at least `dynamic` deep
    seeds[..., 0, :] = seeds[..., -1, :] = True
    seeds[..., :, 0] = seeds[..., :, -1] = True
    # Started from `raised` (never below the result) rather than from the top: the same result in
    # fewer rounds, since only the deep basins' lower parts still have to be restored.
    return reconstruct_by_erosion(torch.where(seeds, maps, raised), maps)


def closed_dip_depth(maps: torch.Tensor) -> torch.Tensor:
    """Per map ``(N, H, W)``, the depth of its deepest closed dip, as a fraction of the map's range.

    Every basin but the deepest and those that reach the crop's edge counts: 0 for a crop that holds
    one hole and parts of its neighbours cut by the edge (every simulated map of the bench's three
    data sets), so :func:`fill_dips` cannot change it.
    """
    low = maps.amin((-1, -2), keepdim=True)
    span = (maps.amax((-1, -2), keepdim=True) - low).clamp_min(1e-6)
    shapes = (maps - low) / span
    return (fill_dips(shapes, 1.0) - shapes).flatten(1).amax(1)
