"""Digitised analytic shapes with known descriptors, to validate morphometry.

A shape is sampled at pixel centres (pixel (r, c) is inside when its centre is),
which is what a perfect segmentation of a perfectly focused particle gives.
Used by the tests and by ``bench/morphometry_shapes.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class AnalyticShape:
    """A digitised shape and its exact descriptors (pixels; angles in degrees, y up)."""

    name: str
    mask: np.ndarray
    area: float
    perimeter: float
    feret: float
    min_feret: float
    major_angle: float  # direction of the long axis, 0..180 counter-clockwise on screen


def _frame(size: int, angle_deg: float, centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u along the shape's long axis, v across) of every pixel centre."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = math.radians(angle_deg)
    dx, dy = xx - centre[0], yy - centre[1]
    # y points down on screen: a counter-clockwise angle on screen is clockwise in (x, y)
    u = dx * math.cos(theta) - dy * math.sin(theta)
    v = dx * math.sin(theta) + dy * math.cos(theta)
    return u, v


def _size_and_centre(extent: float, offset: tuple[float, float]) -> tuple[int, tuple[float, float]]:
    size = int(math.ceil(extent)) + 6
    return size, (size / 2 + offset[0], size / 2 + offset[1])


def ellipse(
    a: float, b: float, angle: float = 0.0, offset: tuple[float, float] = (0.3, 0.1)
) -> AnalyticShape:
    """Ellipse with semi-axes ``a >= b`` (a disc when equal), long axis at ``angle`` degrees."""
    size, centre = _size_and_centre(2 * a, offset)
    u, v = _frame(size, angle, centre)
    mask = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    h = ((a - b) / (a + b)) ** 2  # Ramanujan's second approximation: error < 1e-9 here
    perimeter = math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
    name = f"disc r={a:g}" if a == b else f"ellipse {a:g}x{b:g} @{angle:g}"
    return AnalyticShape(name, mask, math.pi * a * b, perimeter, 2 * a, 2 * b, angle % 180.0)


def rectangle(
    length: float, width: float, angle: float = 0.0, offset: tuple[float, float] = (0.3, 0.1)
) -> AnalyticShape:
    """Rectangle ``length >= width`` (a square when equal), long side at ``angle`` degrees."""
    size, centre = _size_and_centre(math.hypot(length, width), offset)
    u, v = _frame(size, angle, centre)
    mask = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
    kind = "square" if length == width else "rectangle"
    # The longest caliper of a rectangle is its diagonal.
    diagonal_angle = (angle + math.degrees(math.atan2(width, length))) % 180.0
    return AnalyticShape(
        f"{kind} {length:g}x{width:g} @{angle:g}",
        mask,
        length * width,
        2 * (length + width),
        math.hypot(length, width),
        width,
        diagonal_angle,
    )


def validation_shapes() -> list[AnalyticShape]:
    """The shape set of the validation table in docs/morphometry.md."""
    shapes = [ellipse(r, r) for r in (5, 10, 20, 50)]
    shapes += [ellipse(a, a / ratio, angle) for a in (10, 40) for ratio in (2, 4) for angle in (0, 30, 60)]
    shapes += [rectangle(s, s, angle) for s in (10, 40) for angle in (0, 20, 45)]
    shapes += [rectangle(s, s / 3, angle) for s in (15, 60) for angle in (0, 15, 30, 45, 75)]
    return shapes
