"""Synthetic CD-SEM frames: whole arrays of contact holes, with per-hole truth and defects.

A frame is what a CD-SEM tool writes: hundreds to thousands of pixels a side
holding a lattice of holes. Each hole is drawn from the same geometry model as
the 72x48 crops (:mod:`micrometry.synth.sem_geometry`: elliptical tapered
opening, rounded bottom, rough edge) and the frame's height map is rendered by
the same real-domain SEM model (:func:`micrometry.synth.sem_physics.render_real`),
so a window cut around a hole looks like a training crop. On top of that a frame has:

* a **lattice**: ``staggered`` (the crops' array: a ``pitch_x`` x ``pitch_y`` cell
  with a hole at its centre and four diagonal neighbours), ``square`` or ``hexagonal``
  (pitch ``pitch_x``), slightly rotated;
* **slow trends** across the frame in depth and CD: a plane (tilt) and a bowl
  (centre against corners), as etch and lithography leave them;
* **defects**: ``under_etched`` holes (etched to ``under_etch_fraction`` of their
  depth), ``not_open`` holes (a shallow recess, ``not_open_fraction`` of the depth),
  ``merged`` pairs (two horizontal neighbours joined by a trench) and ``missing``
  holes (a lattice site with no hole).

Heights follow the crops' convention: the deepest level of a nominal hole is at
:data:`~micrometry.synth.sem_geometry.BOTTOM_LEVEL` and the top surface at
``BOTTOM_LEVEL + depth_nm``; the truth map written is the *depth below the top
surface* (0 on the top, positive into a hole).

::

    OUT/frame_XXXX.png                8-bit SEM frames (what a user has)
    TRUTH/frame_XXXX_depth.tif        depth below the top surface, uint16 in 0.01 nm (scale in the tags)
    TRUTH/holes.csv                   per hole: frame, site, centre, depth, CDs, sidewall angle, defect
    TRUTH/config.json
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from micrometry.errors import InputError
from micrometry.holes import FRAME_QUANTITIES, window_origins
from micrometry.io.atomic import atomic_dir
from micrometry.io.depth_tiff import write_depth_tiff
from micrometry.synth.databar import DataBarStyle, draw_databar
from micrometry.synth.sem_geometry import (
    BOTTOM_LEVEL,
    HEIGHT,
    WIDTH,
    GeometryConfig,
    HoleParams,
    _hole_shape,
    sample_holes,
)
from micrometry.synth.sem_physics import RealDomain, SemPhysics, render_real

LATTICES = ("staggered", "square", "hexagonal")
DEFECT_CLASSES = ("none", "under_etched", "not_open", "merged", "missing")


@dataclass
class FrameConfig:
    """Size, array, trends and defects of synthetic SEM frames.

    Attributes
    ----------
    seed : int
        Every frame is a deterministic function of the seed.
    n_frames : int
    height_px, width_px : int
        Frame size (a few hundred to a few thousand pixels).
    lattice : str
        ``staggered`` (the crops' array), ``square`` or ``hexagonal``.
    pitch_x, pitch_y : float
        Lattice pitch in pixels (``pitch_y`` only for ``staggered``: the cell height).
    rotation_deg : float
        The array's rotation is drawn uniformly in +-this.
    depth_nm, depth_sd_nm : float
        Nominal depth, and the spread of single holes around the frame's trend.
    depth_tilt_nm, depth_bowl_nm : float
        Largest depth change from the frame centre to a side (plane; drawn in +-) and
        from the centre to a corner (bowl; drawn in +-).
    cd_tilt, cd_bowl : float
        The same for the hole size, relative (0.03: 3 % larger at that side/corner).
    n_under_etched, n_not_open, n_merged, n_missing : int
        Defects per frame (``n_merged`` counts pairs).
    under_etch_fraction : (float, float)
        Range of an under-etched hole's depth as a fraction of its nominal depth.
    not_open_fraction : (float, float)
        The same for a hole that did not open (a shallow recess in the top surface).
    data_bar_px : int
        Height of a data bar below the image (:func:`micrometry.synth.databar.draw_databar`:
        scale bar, its label and tool settings), included in ``height_px``; 0: none.
    geometry : GeometryConfig
        Distribution of single holes (the real process's by default).
    physics, real : SemPhysics, RealDomain
        The renderer, as for the crops.
    """

    seed: int = 0
    n_frames: int = 4
    height_px: int = 1024
    width_px: int = 1024
    lattice: str = "staggered"
    pitch_x: float = 48.0
    pitch_y: float = 72.0
    rotation_deg: float = 0.5
    depth_nm: float = 125.0
    depth_sd_nm: float = 1.0
    depth_tilt_nm: float = 3.0
    depth_bowl_nm: float = 4.0
    cd_tilt: float = 0.02
    cd_bowl: float = 0.03
    n_under_etched: int = 4
    n_not_open: int = 4
    n_merged: int = 1
    n_missing: int = 2
    data_bar_px: int = 0
    under_etch_fraction: tuple[float, float] = (0.6, 0.8)
    not_open_fraction: tuple[float, float] = (0.04, 0.15)
    geometry: GeometryConfig = field(default_factory=GeometryConfig.real_process)
    physics: SemPhysics = field(default_factory=SemPhysics)
    real: RealDomain = field(default_factory=RealDomain)

    def check(self) -> None:
        """InputError for values no frame can be drawn from."""
        if self.lattice not in LATTICES:
            raise InputError(f"lattice must be one of {', '.join(LATTICES)}, got {self.lattice!r}")
        if not 0 <= self.data_bar_px <= self.height_px - 2 * HEIGHT:
            raise InputError(f"data_bar_px must be 0..{self.height_px - 2 * HEIGHT}, got {self.data_bar_px}")
        if min(self.height_px, self.width_px) < 2 * HEIGHT:
            raise InputError(
                f"frames must be at least {2 * HEIGHT} px a side, got {self.height_px}x{self.width_px}"
            )
        if self.pitch_x < 16 or self.pitch_y < 16:
            raise InputError(f"pitch must be at least 16 px, got {self.pitch_x} x {self.pitch_y}")
        for name in ("n_frames", "n_under_etched", "n_not_open", "n_merged", "n_missing"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("under_etch_fraction", "not_open_fraction"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi <= 1.0:
                raise InputError(f"{name} must be a range within 0..1, got {lo}..{hi}")


def lattice_basis(config: FrameConfig) -> np.ndarray:
    """``(2, 2)`` rows: the two lattice vectors (x, y) in pixels, before rotation."""
    p = config.pitch_x
    if config.lattice == "staggered":
        return np.array([[p, 0.0], [p / 2.0, config.pitch_y / 2.0]])
    if config.lattice == "square":
        return np.array([[p, 0.0], [0.0, p]])
    return np.array([[p, 0.0], [p / 2.0, p * np.sqrt(3.0) / 2.0]])


def lattice_sites(
    basis: np.ndarray, origin: np.ndarray, height: int, width: int, margin: float
) -> np.ndarray:
    """``(S, 2)`` integer indices of the sites ``origin + i*a + j*b`` within ``margin`` px of the frame."""
    corners = np.array([[-margin, -margin], [width + margin, -margin], [-margin, height + margin]])
    corners = np.vstack([corners, [width + margin, height + margin]])
    ij = np.linalg.solve(basis.T, (corners - origin).T).T
    lo, hi = np.floor(ij.min(axis=0)) - 1, np.ceil(ij.max(axis=0)) + 1
    i, j = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    index = np.stack([i.ravel(), j.ravel()], axis=1)
    xy = origin + index @ basis
    keep = (
        (xy[:, 0] >= -margin)
        & (xy[:, 0] <= width + margin)
        & (xy[:, 1] >= -margin)
        & (xy[:, 1] <= height + margin)
    )
    return index[keep].astype(int)


def trend(x: np.ndarray, y: np.ndarray, height: int, width: int, tilt: np.ndarray, bowl: float) -> np.ndarray:
    """A plane plus a bowl over the frame: ``tilt[0] * u + tilt[1] * v + bowl * (u^2 + v^2) / 2``.

    ``u, v`` run from -1 to 1 across the frame, so ``tilt`` is the change from the centre to a
    side and ``bowl`` the change from the centre to a corner.
    """
    u = 2.0 * np.asarray(x) / max(width - 1, 1) - 1.0
    v = 2.0 * np.asarray(y) / max(height - 1, 1) - 1.0
    return tilt[0] * u + tilt[1] * v + bowl * (u**2 + v**2) / 2.0


@dataclass
class Frame:
    """One rendered frame, its true depth map and its holes."""

    image: np.ndarray  # (H, W) uint8
    depth_map: np.ndarray  # (H, W) float32, depth below the top surface (nm)
    holes: dict[str, np.ndarray]  # HOLE_COLUMNS -> (S,) arrays, one per lattice site


HOLE_COLUMNS = (
    "site",
    "x_px",
    "y_px",
    "site_x_px",
    "site_y_px",
    *FRAME_QUANTITIES,
    "defect",
    "window_inside",
)


def _pick(rng: np.random.Generator, candidates: np.ndarray, n: int, taken: np.ndarray) -> np.ndarray:
    free = candidates[~taken[candidates]]
    chosen = rng.choice(free, size=min(n, len(free)), replace=False) if len(free) else free[:0]
    taken[chosen] = True
    return chosen


def render_frame(config: FrameConfig, rng: np.random.Generator) -> Frame:
    """Draw and render one frame of ``config``."""
    config.check()
    rows, cols = config.height_px - config.data_bar_px, config.width_px  # the SEM image, above the bar
    angle = np.radians(rng.uniform(-config.rotation_deg, config.rotation_deg))
    rot = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    basis = lattice_basis(config) @ rot
    origin = rng.uniform(0, 1, size=2) @ basis  # a random phase of the array
    margin = 2.0 * max(config.pitch_x, config.pitch_y)
    index = lattice_sites(basis, origin, rows, cols, margin)
    n = len(index)
    site_xy = origin + index @ basis

    g = config.geometry
    params = sample_holes(n, rng, g, families=np.full(n, 80))
    x = site_xy[:, 0] + (params.cx - (WIDTH - 1) / 2)  # the crops' centre jitter around the site
    y = site_xy[:, 1] + (params.cy - (HEIGHT - 1) / 2)
    tilt = rng.uniform(-1, 1, size=2) * config.depth_tilt_nm
    bowl = rng.uniform(-1, 1) * config.depth_bowl_nm
    depth = config.depth_nm + trend(x, y, rows, cols, tilt, bowl) + rng.normal(0, config.depth_sd_nm, n)
    grow = 1.0 + trend(
        x, y, rows, cols, rng.uniform(-1, 1, 2) * config.cd_tilt, rng.uniform(-1, 1) * config.cd_bowl
    )
    ax, ay = params.ax * grow, params.ay * grow

    # Defects only where the model's window lies inside the frame, so that each is scored.
    # (the window sits on the lattice site, as ``depth frame`` places it)
    x0, y0 = window_origins(site_xy).T
    inside = (x0 >= 0) & (x0 + WIDTH <= cols) & (y0 >= 0) & (y0 + HEIGHT <= rows)
    defect = np.zeros(n, dtype=object)
    defect[:] = "none"
    taken = ~inside
    candidates = np.arange(n)
    # merged pairs first: both holes of a pair need a horizontal neighbour inside the frame
    lookup = {tuple(k): s for s, k in enumerate(index.tolist())}
    bridges = []
    for s in _pick(rng, candidates, 4 * config.n_merged, taken.copy()):
        t = lookup.get((index[s, 0] + 1, index[s, 1]))
        if len(bridges) >= config.n_merged or t is None or taken[s] or taken[t]:
            continue
        taken[[s, t]] = True
        defect[[s, t]] = "merged"
        bridges.append((s, t))
    for name, count, fraction in (
        ("under_etched", config.n_under_etched, config.under_etch_fraction),
        ("not_open", config.n_not_open, config.not_open_fraction),
        ("missing", config.n_missing, (0.0, 0.0)),
    ):
        chosen = _pick(rng, candidates, count, taken)
        defect[chosen] = name
        depth[chosen] = depth[chosen] * rng.uniform(*fraction, size=len(chosen))

    top = BOTTOM_LEVEL + config.depth_nm
    height = np.full((rows, cols), top, dtype=np.float64)
    holes = [(s, x[s], y[s], ax[s], ay[s]) for s in range(n) if defect[s] != "missing"]
    for s, t in bridges:  # a trench joining the pair at the depth of the shallower
        mx, my = (x[s] + x[t]) / 2, (y[s] + y[t]) / 2
        half = abs(x[t] - x[s]) / 2
        holes.append((s, mx, my, half, 0.55 * min(ay[s], ay[t])))
    for s, cx, cy, a, b in holes:
        _carve(height, cx, cy, a, b, params.taper[s], params.rounding[s], params.rough_coef[s], top, depth[s])

    gain = 1.0 + rng.normal(scale=config.real.site_gain_sd)
    offset = rng.normal(scale=config.real.site_offset_sd)
    image = render_real(height[None], config.physics, config.real, rng, np.array([gain]), np.array([offset]))[
        0
    ]

    one = HoleParams(
        family=np.full(n, 80),
        cx=(x - np.round(x - (WIDTH - 1) / 2)),
        cy=(y - np.round(y - (HEIGHT - 1) / 2)),
        ax=ax,
        ay=ay,
        taper=params.taper,
        rounding=params.rounding,
        rough_coef=params.rough_coef,
        neighbours=np.zeros(n, bool),
        neighbour_offsets=np.zeros((n, 4, 2)),
    )
    table = _hole_geometry(one, depth, config.physics.nm_per_px)
    table["depth_nm"] = np.where(defect == "missing", 0.0, depth)
    keep = (x >= 0) & (x < cols) & (y >= 0) & (y < rows)  # the sites inside the image
    holes_out = {
        "site": np.arange(n),
        "x_px": x,
        "y_px": y,
        "site_x_px": site_xy[:, 0],
        "site_y_px": site_xy[:, 1],
        **table,
        "defect": defect,
        "window_inside": inside,
    }
    holes_out = {k: np.asarray(v)[keep] for k, v in holes_out.items()}
    holes_out["site"] = np.arange(int(keep.sum()))
    depth_map = (top - height).astype(np.float32)
    if config.data_bar_px:
        style = DataBarStyle(height_px=config.data_bar_px, font_px=max(8, min(16, config.data_bar_px // 3)))
        image, _ = draw_databar(image, config.physics.nm_per_px, "nm", style, rng)
        depth_map = np.vstack([depth_map, np.full((config.data_bar_px, cols), np.nan, np.float32)])
    return Frame(image, depth_map, holes_out)


def _carve(height, cx, cy, ax, ay, taper, rounding, rough, top, depth) -> None:
    """Lower ``height`` in place by one hole of the crops' shape etched ``depth`` below ``top``."""
    reach = 1.3  # the rough edge stays within 1 + 0.1 of the radius; beyond it the shape is 1 (flat)
    r0, r1 = int(np.floor(cy - reach * ay)) - 1, int(np.ceil(cy + reach * ay)) + 2
    c0, c1 = int(np.floor(cx - reach * ax)) - 1, int(np.ceil(cx + reach * ax)) + 2
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r1, height.shape[0]), min(c1, height.shape[1])
    if r1 <= r0 or c1 <= c0:
        return
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float64)
    shape = _hole_shape(xx[None], yy[None], cx, cy, ax, ay, taper, rounding, rough[None])[0]
    np.minimum(height[r0:r1, c0:c1], top - depth * (1.0 - shape), out=height[r0:r1, c0:c1])


def _hole_geometry(params: HoleParams, depth: np.ndarray, nm_per_px: float) -> dict[str, np.ndarray]:
    """Top/bottom CDs and sidewall angle of each single hole, by the crops' truth definitions."""
    from micrometry.synth.sem_dataset import true_geometry

    geometry = true_geometry(params, np.maximum(depth, 1e-6), nm_per_px)
    return {k: geometry[k] for k in FRAME_QUANTITIES[1:]}


def write_sem_frames(
    out: str | Path, truth: str | Path, config: FrameConfig | None = None, overwrite: bool = False
) -> dict:
    """Render ``config.n_frames`` frames to ``out`` and their truth to ``truth`` (both whole or not at all)."""
    from micrometry.io.image import write_image

    config = config or FrameConfig()
    config.check()
    out, truth = Path(out).resolve(), Path(truth).resolve()
    if truth == out or out in truth.parents or truth in out.parents:
        raise InputError("the truth folder must lie outside the frames folder (and vice versa)", truth)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(config.n_frames)]
    counts = dict.fromkeys(DEFECT_CLASSES, 0)
    with atomic_dir(out, overwrite) as out_tmp, atomic_dir(truth, overwrite) as truth_tmp:
        rows = []
        for k, rng in enumerate(rngs):
            frame = render_frame(config, rng)
            name = f"frame_{k:04d}"
            write_image(out_tmp / f"{name}.png", frame.image)
            write_depth_tiff(truth_tmp / f"{name}_depth.tif", frame.depth_map, config.physics.nm_per_px)
            for i in range(len(frame.holes["site"])):
                rows.append([f"{name}.png", *(frame.holes[c][i] for c in HOLE_COLUMNS)])
                counts[str(frame.holes["defect"][i])] += 1
        with open(truth_tmp / "holes.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("frame", *HOLE_COLUMNS))
            for row in rows:
                writer.writerow([_cell(v) for v in row])
        (truth_tmp / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    return {"frames": config.n_frames, "sites": len(rows), **{k: v for k, v in counts.items() if k != "none"}}


def _cell(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "" if not np.isfinite(value) else f"{value:.3f}"
    return str(value)
