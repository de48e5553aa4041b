"""Write a synthetic SEM depth dataset in the 2022 Samsung 3D-metrology layout.

::

    OUT/simulation_data/Depth/Case_{1..4}/{80..84}/<base>.png
    OUT/simulation_data/SEM/Case_{1..4}/{80..84}/<base>_itr0.png, <base>_itr1.png
    OUT/train/SEM/Depth_{110,120,130,140}/site_XXXXX/SEM_XXXXXX.png
    OUT/train/average_depth.csv        header "0,1"; rows "depth_140_site_00233,138.966170"
    OUT/test/SEM/XXXXXX.png

    TRUTH/test_depth/XXXXXX.png        true depth maps of the test images
    TRUTH/test_truth.csv               file, case, nominal_depth, site, site_depth, hole_depth
    TRUTH/test_geometry.csv            true depth, top/bottom CD, sidewall angle per test image (units in
                                       the column names; definitions as ``depth measure``, docs/depth.md)
    TRUTH/train_depth/Depth_*/site_*/SEM_*.png, TRUTH/train_truth.csv, TRUTH/train_geometry.csv
                                       (the same for real train images)
    TRUTH/simulation_geometry.csv      the same for every simulated depth map

The truth never goes under OUT: OUT is what a user would have.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from micrometry.errors import InputError
from micrometry.holes import BOTTOM_FRACTION, METROLOGY_COLUMNS, TOP_FRACTION, WALL_LEVELS, wall_angle_deg
from micrometry.io.atomic import atomic_dir
from micrometry.io.image import write_image
from micrometry.progress import make_progress
from micrometry.synth.sem_geometry import (
    BOTTOM_LEVEL,
    CASE_DEPTHS,
    GeometryConfig,
    HoleParams,
    centre_chords,
    heights,
    hole_shapes,
    sample_holes,
    subset,
)
from micrometry.synth.sem_physics import RealDomain, SemPhysics, render_real, render_simulated


@dataclass
class SemSynthConfig:
    """Size, seed and physics of a synthetic SEM dataset.

    Attributes
    ----------
    seed : int
        Everything is a deterministic function of the seed.
    n_structures : int
        Simulated base structures; each is written for all four cases with two
        noisy renders, so ``8 * n_structures`` simulated SEM images.
    n_sites, images_per_site : int
        Real training sites (spread evenly over Depth_110..140) and images per site.
    n_test : int
        Real test images (from their own sites).
    site_depth_sd : float
        Spread of a site's true depth around its nominal depth (nm).
    image_depth_sd : float
        Spread of one image's hole depth around its site's depth (nm).
    geometry : GeometryConfig
        Simulated geometry distribution.
    real_geometry : GeometryConfig
        The real tool's geometry distribution: one process window (tighter),
        slightly larger, rougher, less tapered holes than the simulation's average.
    physics : SemPhysics
    real : RealDomain
    """

    seed: int = 0
    n_structures: int = 200
    n_sites: int = 40
    images_per_site: int = 25
    n_test: int = 200
    site_depth_sd: float = 2.5
    image_depth_sd: float = 1.0
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    real_geometry: GeometryConfig = field(default_factory=GeometryConfig.real_process)
    physics: SemPhysics = field(default_factory=SemPhysics)
    real: RealDomain = field(default_factory=RealDomain)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RealImages:
    """Real-domain images with their hidden truth."""

    images: np.ndarray  # (N, 72, 48) uint8
    depth_maps: np.ndarray  # (N, 72, 48) float32 heights
    nominal: np.ndarray  # (N,) 110..140
    site: np.ndarray  # (N,) site number
    site_depth: np.ndarray  # (N,) the site's true depth
    hole_depth: np.ndarray  # (N,) this image's true depth
    params: HoleParams | None = None  # the geometry drawn, for the truth tables


def simulate_pairs(config: SemSynthConfig, rng: np.random.Generator, with_params: bool = False):
    """Simulated base structures rendered for every case with two noise realisations.

    Returns
    -------
    families : (S,) int
    depth_maps : (S, 4, 72, 48) float32 heights
    sem : (S, 4, 2, 72, 48) uint8
    params : HoleParams
        Only with ``with_params``: the geometries drawn.
    """
    params = sample_holes(config.n_structures, rng, config.geometry)
    shapes = hole_shapes(params)
    depth_maps = np.stack([heights(shapes, d) for d in CASE_DEPTHS], axis=1)
    flat = depth_maps.reshape(-1, *depth_maps.shape[2:])
    sem = np.stack([render_simulated(flat, config.physics, rng) for _ in range(2)], axis=1)
    sem = sem.reshape(config.n_structures, 4, 2, *sem.shape[2:])
    return (params.family, depth_maps, sem, params) if with_params else (params.family, depth_maps, sem)


def simulate_real(
    config: SemSynthConfig, n_sites: int, per_site: int, rng: np.random.Generator, first_site: int = 0
) -> RealImages:
    """Real-domain sites: each has a true depth near its nominal one; each image a hole near that depth."""
    nominal_site = np.asarray(CASE_DEPTHS)[np.arange(n_sites) % 4]
    # Sites scatter below their nominal depth more than above (range seen: 105-142).
    site_depth = nominal_site + np.clip(rng.normal(-1.0, config.site_depth_sd, size=n_sites), -5.0, 2.0)
    nominal = np.repeat(nominal_site, per_site)
    site_of_image = np.repeat(np.arange(n_sites) + first_site, per_site)
    depth_of_site = np.repeat(site_depth, per_site)
    hole_depth = depth_of_site + rng.normal(scale=config.image_depth_sd, size=n_sites * per_site)

    params = sample_holes(n_sites * per_site, rng, config.real_geometry)
    maps = heights(hole_shapes(params), hole_depth)
    gain = np.repeat(1.0 + rng.normal(scale=config.real.site_gain_sd, size=n_sites), per_site)
    offset = np.repeat(rng.normal(scale=config.real.site_offset_sd, size=n_sites), per_site)
    images = render_real(maps, config.physics, config.real, rng, site_gain=gain, site_offset=offset)
    return RealImages(images, maps, nominal, site_of_image, depth_of_site, hole_depth, params)


def site_average_depths(real: RealImages) -> dict[int, float]:
    """What the competition gives per site: the mean hole depth of its images."""
    return {int(s): float(real.hole_depth[real.site == s].mean()) for s in np.unique(real.site)}


def _depth_png(height_map: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(height_map), 0, 255).astype(np.uint8)


def write_sem_dataset(
    out: str | Path, truth: str | Path, config: SemSynthConfig | None = None, overwrite: bool = False
) -> dict:
    """Synthesise a dataset and write it to ``out`` (what a user has) and ``truth`` (hidden answers).

    Both folders appear whole or not at all.

    Returns
    -------
    dict
        Counts of what was written.
    """
    config = config or SemSynthConfig()
    out, truth = Path(out).resolve(), Path(truth).resolve()
    if truth == out or out in truth.parents or truth in out.parents:
        raise InputError("the truth folder must lie outside the dataset folder (and vice versa)", truth)
    for name, value in (
        ("n_structures", config.n_structures),
        ("n_sites", config.n_sites),
        ("images_per_site", config.images_per_site),
        ("n_test", config.n_test),
    ):
        if value < 0:
            raise InputError(f"{name} must be >= 0, got {value}")

    sim_rng, real_rng, test_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(3)
    )
    families, sim_depth, sim_sem, sim_params = simulate_pairs(config, sim_rng, with_params=True)
    real = simulate_real(config, config.n_sites, config.images_per_site, real_rng)
    # Test images come from their own sites, never seen in training.
    test = simulate_real(config, max(config.n_test, 1), 1, test_rng, first_site=config.n_sites)
    n_files = sim_sem.size // (72 * 48) + sim_depth.size // (72 * 48) + len(real.images) + config.n_test

    with (
        atomic_dir(out, overwrite) as out_tmp,
        atomic_dir(truth, overwrite) as truth_tmp,
        make_progress() as progress,
    ):
        bar = progress.add_task("writing SEM dataset", total=n_files, info="")
        for s, family in enumerate(families):
            base = f"S{s:06d}"
            for c in range(4):
                write_image(
                    out_tmp / f"simulation_data/Depth/Case_{c + 1}/{family}/{base}.png",
                    _depth_png(sim_depth[s, c]),
                )
                for itr in range(2):
                    write_image(
                        out_tmp / f"simulation_data/SEM/Case_{c + 1}/{family}/{base}_itr{itr}.png",
                        sim_sem[s, c, itr],
                    )
                progress.advance(bar, 3)

        stored_rgb = real_rng.random(len(real.images)) < config.real.rgb_fraction
        train_rows = []
        for i in range(len(real.images)):
            rel = f"Depth_{real.nominal[i]}/site_{real.site[i]:05d}/SEM_{i:06d}.png"
            write_image(out_tmp / "train/SEM" / rel, real.images[i], rgb=bool(stored_rgb[i]))
            write_image(truth_tmp / "train_depth" / rel, _depth_png(real.depth_maps[i]))
            train_rows.append(
                (
                    f"train/SEM/{rel}",
                    CASE_DEPTHS.index(real.nominal[i]) + 1,
                    real.nominal[i],
                    real.site[i],
                    real.site_depth[i],
                    real.hole_depth[i],
                )
            )
            progress.advance(bar)
        if config.n_sites and config.images_per_site:
            averages = site_average_depths(real)
            nominal_of = dict(zip(real.site.tolist(), real.nominal.tolist(), strict=False))
            lines = ["0,1"] + [f"depth_{nominal_of[s]}_site_{s:05d},{d:.6f}" for s, d in averages.items()]
            (out_tmp / "train").mkdir(parents=True, exist_ok=True)
            (out_tmp / "train/average_depth.csv").write_text("\n".join(lines) + "\n")

        test_stored_rgb = test_rng.random(config.n_test) < config.real.rgb_fraction
        test_rows = []
        for i in range(config.n_test):
            name = f"{i:06d}.png"
            write_image(out_tmp / "test/SEM" / name, test.images[i], rgb=bool(test_stored_rgb[i]))
            write_image(truth_tmp / "test_depth" / name, _depth_png(test.depth_maps[i]))
            test_rows.append(
                (
                    name,
                    CASE_DEPTHS.index(test.nominal[i]) + 1,
                    test.nominal[i],
                    test.site[i],
                    test.site_depth[i],
                    test.hole_depth[i],
                )
            )
            progress.advance(bar)

        header = ("file", "case", "nominal_depth", "site", "site_depth", "hole_depth")
        _write_csv(truth_tmp / "train_truth.csv", header, train_rows)
        _write_csv(truth_tmp / "test_truth.csv", header, test_rows)
        nm = config.physics.nm_per_px
        sim_files = [
            f"simulation_data/Depth/Case_{c + 1}/{family}/S{s:06d}.png"
            for s, family in enumerate(families)
            for c in range(4)
        ]
        sim_cases = np.tile(np.arange(1, 5), len(families))
        sim_table = (
            true_geometry(sim_params, np.tile(np.asarray(CASE_DEPTHS, float), len(families)), nm, repeat=4)
            if len(families)
            else {}
        )
        _write_geometry(truth_tmp / "simulation_geometry.csv", sim_files, sim_cases, sim_table, nm)
        _write_geometry(
            truth_tmp / "train_geometry.csv",
            [r[0] for r in train_rows],
            [r[1] for r in train_rows],
            true_geometry(real.params, real.hole_depth, nm) if len(real.images) else {},
            nm,
        )
        _write_geometry(
            truth_tmp / "test_geometry.csv",
            [r[0] for r in test_rows],
            [r[1] for r in test_rows],
            true_geometry(subset(test.params, slice(config.n_test)), test.hole_depth[: config.n_test], nm)
            if config.n_test
            else {},
            nm,
        )
        (truth_tmp / "config.json").write_text(_config_json(config))

    return {
        "simulated_structures": int(config.n_structures),
        "simulated_sem": int(sim_sem.size // (72 * 48)),
        "simulated_depth": int(sim_depth.size // (72 * 48)),
        "real_sites": int(config.n_sites),
        "real_train_images": int(len(real.images)),
        "test_images": int(config.n_test),
    }


GEOMETRY_COLUMNS = (*METROLOGY_COLUMNS, "centre_x_px", "centre_y_px")


def true_geometry(
    params: HoleParams,
    depths: np.ndarray,
    nm_per_px: float,
    repeat: int = 1,
    top_fraction: float = TOP_FRACTION,
    bottom_fraction: float = BOTTOM_FRACTION,
    wall_levels: tuple[float, float] = WALL_LEVELS,
) -> dict[str, np.ndarray]:
    """True metrology of drawn holes, by ``depth measure``'s definitions on the analytic surface.

    The shape ``s`` is also the fraction of the depth above the deepest point, so the
    chords at each level come from the shape alone (:func:`centre_chords`) and hold for
    every depth a structure is etched to.

    Parameters
    ----------
    params : HoleParams
        ``S`` structures.
    depths : ndarray
        ``(S * repeat,)`` depths in nm; row ``i`` is structure ``i // repeat``.
    nm_per_px : float
        Lateral pixel size (the renderer's, ``SemPhysics.nm_per_px``).

    Returns
    -------
    dict
        :data:`GEOMETRY_COLUMNS` -> ``(S * repeat,)`` arrays; NaN where the hole runs off the image.
    """
    levels = (top_fraction, bottom_fraction, *wall_levels)
    chords = {
        axis: np.repeat(w, repeat, axis=0) * nm_per_px for axis, w in centre_chords(params, levels).items()
    }
    depths = np.asarray(depths, dtype=np.float64)
    out = {
        "depth_nm": depths,
        "top_level_nm": BOTTOM_LEVEL + depths,
        "bottom_level_nm": np.full(len(depths), BOTTOM_LEVEL),
    }
    for axis in ("x", "y"):
        out[f"top_cd_{axis}_nm"] = chords[axis][:, 0]
        out[f"bottom_cd_{axis}_nm"] = chords[axis][:, 1]
        out[f"sidewall_angle_{axis}_deg"] = np.array(
            [
                wall_angle_deg(d, lo, hi, wall_levels)
                for d, lo, hi in zip(depths, chords[axis][:, 2], chords[axis][:, 3], strict=False)
            ]
        )
    both = np.stack([out["sidewall_angle_x_deg"], out["sidewall_angle_y_deg"]])
    finite = np.isfinite(both)
    out["sidewall_angle_deg"] = np.where(
        finite.any(axis=0), np.where(finite, both, 0).sum(axis=0) / np.maximum(finite.sum(axis=0), 1), np.nan
    )
    out["centre_x_px"] = np.repeat(params.cx, repeat)
    out["centre_y_px"] = np.repeat(params.cy, repeat)
    return out


def _write_geometry(path: Path, files, cases, table: dict, nm_per_px: float) -> None:
    """One row per depth map: file, case, the true geometry (empty where undefined), the pixel scale."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("file", "case", *GEOMETRY_COLUMNS, "nm_per_px"))
        for i, (name, case) in enumerate(zip(files, cases, strict=False)):
            values = [table[c][i] for c in GEOMETRY_COLUMNS]
            writer.writerow(
                [
                    name,
                    int(case),
                    *("" if not np.isfinite(v) else f"{v:.4f}" for v in values),
                    f"{nm_per_px:g}",
                ]
            )


def _write_csv(path: Path, header, rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([f"{v:.6f}" if isinstance(v, (float, np.floating)) else v for v in row])


def _config_json(config: SemSynthConfig) -> str:
    import json

    return json.dumps(config.to_dict(), indent=2) + "\n"
