"""Height fields of etched contact holes, as seen in a 72x48 top-down SEM crop.

A *base structure* is one hole geometry: an elliptical opening with a jittered
centre, a tapered (straight) sidewall, a rounded bottom, a rough edge, and
optionally the neighbouring holes of the array cut by the image border. It is
stored as a *shape* ``s`` in [0, 1] per pixel (1 = top surface, 0 = deepest
point), so that one geometry can be etched to any depth ``D``:

    height = bottom + D * s        (bottom = 30, top = 30 + D)

which is how the competition's four simulation cases share their geometries
(tops at 140/150/160/170, i.e. D = 110/120/130/140).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

HEIGHT, WIDTH = 72, 48
BOTTOM_LEVEL = 30.0
CASE_DEPTHS = (110, 120, 130, 140)  # Case_1..Case_4 and the real Depth_* folders
FAMILIES = (80, 81, 82, 83, 84)


@dataclass
class GeometryConfig:
    """Distribution of hole geometries (all lengths in pixels).

    Attributes
    ----------
    semi_axis_x, semi_axis_y : (float, float)
        Mean and standard deviation of the top opening's semi-axes along columns
        (x) and rows (y). The image is 48 columns x 72 rows, so holes are taller
        than wide.
    family_growth : float
        Each geometry family 80..84 widens the mean opening by this fraction
        per step: families stand for process windows of one layer.
    centre_jitter : float
        Standard deviation of the hole centre around the image centre.
    taper : (float, float)
        Range of the bottom-to-top radius ratio; lower means a more tapered wall.
    bottom_rounding : (float, float)
        Range of the rounded bottom's height as a fraction of the depth.
    roughness : (float, float)
        Range of the edge roughness amplitude, relative to the radius.
    neighbour_probability : float
        Chance that the neighbouring holes of the (staggered) array appear at the
        image corners.
    pitch : (float, float)
        Mean distance to the neighbours along x and y.
    neighbour_jitter : float
        Standard deviation of each neighbour's position around the lattice site.
    """

    semi_axis_x: tuple[float, float] = (14.0, 1.2)
    semi_axis_y: tuple[float, float] = (20.0, 1.6)
    family_growth: float = 0.03
    centre_jitter: float = 1.2
    taper: tuple[float, float] = (0.45, 0.75)
    bottom_rounding: tuple[float, float] = (0.0, 0.12)
    roughness: tuple[float, float] = (0.0, 0.05)
    neighbour_probability: float = 0.6
    pitch: tuple[float, float] = (48.0, 72.0)
    neighbour_jitter: float = 1.5

    @classmethod
    def real_process(cls) -> GeometryConfig:
        """A physical layer: one process window (tight CD control), a fixed array
        pitch, slightly larger, rougher and less tapered holes than the simulation's
        average. Contained in the simulation's range, but not centred on it."""
        return cls(
            semi_axis_x=(14.6, 0.45),
            semi_axis_y=(20.8, 0.65),
            family_growth=0.0,
            centre_jitter=1.4,
            taper=(0.56, 0.68),
            bottom_rounding=(0.02, 0.10),
            roughness=(0.02, 0.08),
            neighbour_probability=1.0,
            neighbour_jitter=0.3,
        )


@dataclass
class HoleParams:
    """Sampled parameters of a batch of base structures (one row per structure)."""

    family: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    ax: np.ndarray
    ay: np.ndarray
    taper: np.ndarray
    rounding: np.ndarray
    rough_coef: np.ndarray  # (N, K, 2) Fourier coefficients of the radius
    neighbours: np.ndarray  # (N,) bool
    neighbour_offsets: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 2)))

    def __len__(self) -> int:
        return len(self.cx)


def sample_holes(
    n: int, rng: np.random.Generator, config: GeometryConfig | None = None, families: np.ndarray | None = None
) -> HoleParams:
    """Draw ``n`` base structures from ``config``."""
    c = config or GeometryConfig()
    if families is None:
        families = rng.choice(np.asarray(FAMILIES), size=n)
    grow = 1.0 + c.family_growth * (np.asarray(families) - FAMILIES[0])
    n_harmonics = 6
    # Roughness lives in low harmonics (a slightly wavy outline), decaying with order.
    amplitude = rng.uniform(*c.roughness, size=(n, 1, 1)) / np.sqrt(n_harmonics)
    decay = 1.0 / np.arange(1, n_harmonics + 1)[None, :, None] ** 0.5
    rough = rng.normal(size=(n, n_harmonics, 2)) * amplitude * decay
    # Staggered array: the four diagonal neighbours sit near the corners.
    signs = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=float)
    offsets = signs[None] * np.array(c.pitch)[None, None] / 2.0
    offsets = offsets + rng.normal(scale=c.neighbour_jitter, size=(n, 4, 2))
    return HoleParams(
        family=np.asarray(families),
        cx=(WIDTH - 1) / 2 + rng.normal(scale=c.centre_jitter, size=n),
        cy=(HEIGHT - 1) / 2 + rng.normal(scale=c.centre_jitter, size=n),
        ax=np.clip(rng.normal(c.semi_axis_x[0], c.semi_axis_x[1], size=n) * grow, 6, 22),
        ay=np.clip(rng.normal(c.semi_axis_y[0], c.semi_axis_y[1], size=n) * grow, 8, 33),
        taper=rng.uniform(*c.taper, size=n),
        rounding=rng.uniform(*c.bottom_rounding, size=n),
        rough_coef=rough,
        neighbours=rng.random(n) < c.neighbour_probability,
        neighbour_offsets=offsets,
    )


def _hole_shape(x: np.ndarray, y: np.ndarray, cx, cy, ax, ay, taper, rounding, rough) -> np.ndarray:
    """Shape in [0, 1] of one elliptical hole per batch row; arrays broadcast as (N, H, W)."""
    dx, dy = (x - cx) / ax, (y - cy) / ay
    theta = np.arctan2(dy, dx)
    k = np.arange(1, rough.shape[1] + 1)[None, :, None, None]
    wobble = (
        rough[:, :, 0, None, None] * np.cos(k * theta[:, None])
        + rough[:, :, 1, None, None] * np.sin(k * theta[:, None])
    ).sum(axis=1)
    r = np.hypot(dx, dy) / (1.0 + wobble)  # 1 on the (rough) top edge
    wall = rounding + (1.0 - rounding) * np.clip((r - taper) / (1.0 - taper), 0.0, 1.0)
    bowl = rounding * (r / taper) ** 2
    return np.where(r >= taper, wall, bowl)


def shape_at(params: HoleParams, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Shape ``s`` of each structure at points ``(x, y)`` (pixels; arrays broadcastable to ``(N, A, B)``).

    The one definition of the surface: :func:`hole_shapes` samples it on the
    pixel grid, :func:`centre_chords` along lines through the hole centre.
    """
    col = lambda v: np.asarray(v, dtype=np.float64)[:, None, None]  # noqa: E731
    shape = _hole_shape(
        x,
        y,
        col(params.cx),
        col(params.cy),
        col(params.ax),
        col(params.ay),
        col(params.taper),
        col(params.rounding),
        params.rough_coef,
    )
    for j in range(4):
        ox = params.neighbour_offsets[:, j, 0]
        oy = params.neighbour_offsets[:, j, 1]
        neighbour = _hole_shape(
            x,
            y,
            col(params.cx + ox),
            col(params.cy + oy),
            col(params.ax),
            col(params.ay),
            col(params.taper),
            col(params.rounding),
            params.rough_coef[:, ::-1],
        )
        # Where present, neighbours are etched by the same process: the union of holes is the lower surface.
        shape = np.where(params.neighbours[:, None, None], np.minimum(shape, neighbour), shape)
    return shape


def hole_shapes(params: HoleParams) -> np.ndarray:
    """Render the shapes ``s`` of a batch of structures.

    Returns
    -------
    ndarray
        ``(N, 72, 48)`` float32 in [0, 1]: 1 on the top surface, 0 at the deepest point.
    """
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    return shape_at(params, x[None], y[None]).astype(np.float32)


def _shape_on_line(params: HoleParams, axis: str, pos: np.ndarray) -> np.ndarray:
    """Shape at positions ``pos`` ``(N, P)`` along the row (``axis="x"``) or column through each centre."""
    if axis == "x":
        return shape_at(params, pos[:, None, :], params.cy[:, None, None])[:, 0, :]
    return shape_at(params, params.cx[:, None, None], pos[:, None, :])[:, 0, :]


def _first_at_or_above(s: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Index of the first sample of each row at or above ``level`` (0 if none) and whether there is one."""
    reached = s >= level
    return reached.argmax(axis=1), reached.any(axis=1)


def _side_crossings(params: HoleParams, axis: str, sign: int, levels, fine: int = 64) -> np.ndarray:
    """Distance from the centre to the first crossing of each level on one side, ``(N, L)`` pixels.

    Coarse samples at the pixel centres (the last one is the image's last pixel, as for a
    measurement), then ``fine`` steps inside the bracketing interval; linear interpolation
    in between places a crossing to well under 0.01 px (the surface is linear or quadratic
    between kinks).
    """
    size = WIDTH if axis == "x" else HEIGHT
    centre = params.cx if axis == "x" else params.cy
    k = np.arange(size + 1)[None, :]
    first = np.floor(centre)[:, None] - k if sign < 0 else np.ceil(centre)[:, None] + k
    pos = np.concatenate([centre[:, None], first], axis=1)
    inside = (pos >= 0) & (pos <= size - 1)
    pos = np.clip(pos, 0, size - 1)
    coarse = np.where(inside, _shape_on_line(params, axis, pos), -np.inf)  # outside never reaches a level
    rows = np.arange(len(centre))
    out = np.full((len(centre), len(levels)), np.nan)
    steps = np.linspace(0.0, 1.0, fine + 1)[None, :]
    for j, level in enumerate(levels):
        i, found = _first_at_or_above(coarse, level)
        found &= i > 0
        i = np.maximum(i, 1)
        a, b = pos[rows, i - 1], pos[rows, i]
        line = a[:, None] + (b - a)[:, None] * steps
        s = _shape_on_line(params, axis, line)
        m, _ = _first_at_or_above(s, level)
        m = np.maximum(m, 1)
        s0, s1 = s[rows, m - 1], s[rows, m]
        frac = np.clip((level - s0) / np.where(s1 > s0, s1 - s0, 1.0), 0.0, 1.0)
        crossing = line[rows, m - 1] + frac * (line[rows, m] - line[rows, m - 1])
        out[:, j] = np.where(found, np.abs(crossing - centre), np.nan)
    return out


def centre_chords(params: HoleParams, levels) -> dict[str, np.ndarray]:
    """Where the analytic surface crosses each level along the row and column through the hole centre.

    Walking outward from the centre ``(cx, cy)`` in each of the four directions,
    the first point where the shape reaches ``level`` (a fraction of the depth
    above the deepest point, which is also the shape value) is found to a small
    fraction of a pixel, neighbours and rough edge included: what ``depth measure``
    reads off a pixel map, without the pixels. Only points inside the image (pixel
    centres 0..W-1, 0..H-1) count, as for the measurement.

    Returns
    -------
    dict
        ``"x"`` and ``"y"``: ``(N, len(levels))`` chord widths in pixels (NaN
        where the hole runs off the image at that level).
    """
    levels = [float(v) for v in levels]
    return {
        axis: _side_crossings(params, axis, -1, levels) + _side_crossings(params, axis, +1, levels)
        for axis in ("x", "y")
    }


def subset(params: HoleParams, index) -> HoleParams:
    """The structures ``index`` (a slice or index array) of a batch."""
    return HoleParams(
        **{name: np.asarray(getattr(params, name))[index] for name in params.__dataclass_fields__}
    )


def heights(shapes: np.ndarray, depths: np.ndarray | float) -> np.ndarray:
    """Height maps (nm; = depth-map pixel values) for shapes etched to ``depths``."""
    depths = np.asarray(depths, dtype=np.float32).reshape(-1, 1, 1)
    return BOTTOM_LEVEL + depths * shapes
