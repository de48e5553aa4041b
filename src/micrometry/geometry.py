"""Plane geometry of polygons, shared by both jobs: shoelace areas and caliper widths.

Polygons are ``(K, 2)`` arrays of (x, y) vertices, closed implicitly (the last
vertex joins the first; a repeated first vertex is harmless). Image y points
down, so an outline traced clockwise on screen has a positive signed area here.
"""

from __future__ import annotations

import math

import numpy as np


def signed_polygon_area(xy: np.ndarray) -> float:
    """Shoelace area of a polygon, positive counter-clockwise in (x, y).

    Examples
    --------
    >>> signed_polygon_area(np.array([[0, 0], [2, 0], [2, 1], [0, 1]], float))
    2.0
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(x[:-1] @ y[1:] - x[1:] @ y[:-1] + x[-1] * y[0] - x[0] * y[-1])


def polygon_area(xy: np.ndarray) -> float:
    """Enclosed area of a simple polygon (either orientation)."""
    return abs(signed_polygon_area(xy))


def calipers(hull: np.ndarray) -> tuple[float, float, float]:
    """Maximum and minimum caliper diameters of a convex polygon (rotating calipers).

    Parameters
    ----------
    hull : ndarray
        ``(K, 2)`` convex hull vertices (x, y with y pointing down), in order.

    Returns
    -------
    tuple of float
        ``(feret, min_feret, feret_angle)``: the largest vertex-to-vertex
        distance, the smallest width (attained with one side of the hull flush
        against a caliper jaw, so it is the minimum over edges of the farthest
        vertex from that edge's line), and the angle of the Feret diameter in
        degrees 0..180, counter-clockwise from the x axis as seen on screen.
    """
    hull = np.asarray(hull, dtype=np.float64).reshape(-1, 2)
    if len(hull) < 2:
        return (0.0, 0.0, 0.0)
    diff = hull[:, None, :] - hull[None, :, :]
    dist2 = np.einsum("ijk,ijk->ij", diff, diff)
    longest = dist2.max()
    feret = math.sqrt(longest)
    # Equally long diameters (a square's two diagonals) are common on the pixel grid:
    # report the smallest angle among them, so the result does not depend on vertex order.
    i, j = np.nonzero(dist2 >= longest * (1 - 1e-12))
    dx, dy = hull[j, 0] - hull[i, 0], hull[j, 1] - hull[i, 1]
    feret_angle = float(np.min(np.degrees(np.arctan2(-dy, dx)) % 180.0))
    if len(hull) < 3:
        return (feret, 0.0, feret_angle)
    edges = np.vstack([hull[1:], hull[:1]]) - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    keep = lengths > 0
    edges, starts, lengths = edges[keep], hull[keep], lengths[keep]
    # distance of every vertex from every edge line: |cross(edge, vertex - start)| / |edge|
    rel = hull[None, :, :] - starts[:, None, :]
    cross = np.abs(edges[:, None, 0] * rel[..., 1] - edges[:, None, 1] * rel[..., 0])
    widths = cross.max(axis=1) / lengths
    return (feret, float(widths.min()), feret_angle)
