"""Synthetic particle datasets on disk: COCO splits, image batches, hidden truth, and named presets.

:func:`generate_dataset` writes the layout of ``docs/particles-data.md``
(train/test/batches and a separate truth folder); :func:`with_options` turns
the command line's presets (imaging mode mix, noise level, size range, density)
into :class:`SuspensionParams`. Each image records its imaging mode, in its
COCO image entry (``imaging_mode``) and in the truth rows.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from micrometry.io.coco import DEFAULT_CATEGORY
from micrometry.synth.particle_optics import check_mode
from micrometry.synth.particle_scene import SuspensionParams, image_rng, render_image

# The two batches differ in shape only: B is more elongated and rougher.
BATCH_POPULATIONS = {
    "A": {
        "aspect_median": 1.25,
        "roughness": 0.02,
        "shape_weights": {"ellipse": 0.4, "polygon": 0.2, "blob": 0.4, "rod": 0.0},
    },
    "B": {
        "aspect_median": 1.9,
        "roughness": 0.08,
        "shape_weights": {"ellipse": 0.4, "polygon": 0.2, "blob": 0.4, "rod": 0.0},
    },
}


def batch_params(params: SuspensionParams, batch: str) -> SuspensionParams:
    """The parameters of batch ``A`` or ``B`` (see :data:`BATCH_POPULATIONS`)."""
    population = dataclasses.replace(params.population, **BATCH_POPULATIONS[batch])
    return dataclasses.replace(params, population=population)


# Noise presets: photo-electrons at gray level 255 (Poisson) and read noise (gray levels).
NOISE_LEVELS = {
    "low": {"full_well": 4000.0, "read_noise_dn": 0.8},
    "normal": {"full_well": 800.0, "read_noise_dn": 2.0},
    "high": {"full_well": 150.0, "read_noise_dn": 6.0},
}

# Density presets: PopulationParams fields. "normal" keeps count_range (40-200 per 1024x1280 frame).
DENSITIES = {
    "sparse": {"coverage": 0.04, "cluster_fraction": 0.0},
    "normal": {},
    "crowded": {"coverage": 0.3, "cluster_fraction": 0.5, "cluster_gap_range": (0.9, 1.05)},
    "touching": {
        "coverage": 0.2,
        "cluster_fraction": 0.85,
        "cluster_gap_range": (0.98, 1.04),
        "keep_apart": True,
    },
    # texture only (with ``tissue`` or ``dic``): the right answer is no particle at all
    "none": {"count_range": (0, 0), "coverage": None},
    # instance separation is the hard part: most particles overlap others and hide part of them
    "overlapping": {
        "coverage": 0.55,
        "cluster_fraction": 0.7,
        "cluster_gap_range": (0.45, 0.85),
        "occlusion": True,
    },
}


def size_population(size_range_px: tuple[float, float]) -> dict:
    """PopulationParams fields for diameters over ``size_range_px``: log-normal, range = median x e^(+-2 sigma)."""
    lo, hi = float(size_range_px[0]), float(size_range_px[1])
    if not 0 < lo < hi:
        raise ValueError(f"size range {lo:g}-{hi:g} px must have 0 < min < max")
    return {
        "size_range_px": (lo, hi),
        "size_median_px": math.sqrt(lo * hi),
        "size_sigma": max(math.log(hi / lo) / 4, 0.01),
    }


def with_options(
    params: SuspensionParams,
    modes: list[str] | None = None,
    noise: str | None = None,
    density: str | None = None,
    size_range_px: tuple[float, float] | None = None,
) -> SuspensionParams:
    """``params`` with the command line's presets applied (None leaves a setting as it is).

    Parameters
    ----------
    modes : list of str
        Imaging mode mix (:data:`~micrometry.synth.particle_optics.MODES`).
    noise : str
        A key of :data:`NOISE_LEVELS`.
    density : str
        A key of :data:`DENSITIES`.
    size_range_px : (float, float)
        Smallest and largest area-equivalent diameter (px).

    Raises
    ------
    ValueError
        An unknown mode, noise level or density, or an empty size range.
    """
    population, optics = params.population, params.optics
    if modes is not None:
        if not modes:
            raise ValueError("--modes needs at least one imaging mode")
        params = dataclasses.replace(params, modes=tuple(check_mode(m) for m in modes))
    if noise is not None:
        if noise not in NOISE_LEVELS:
            raise ValueError(f"unknown noise level {noise!r}; known: {', '.join(NOISE_LEVELS)}")
        optics = dataclasses.replace(optics, **NOISE_LEVELS[noise])
    if density is not None:
        if density not in DENSITIES:
            raise ValueError(f"unknown density {density!r}; known: {', '.join(DENSITIES)}")
        population = dataclasses.replace(population, **DENSITIES[density])
    if size_range_px is not None:
        population = dataclasses.replace(population, **size_population(size_range_px))
    return dataclasses.replace(params, population=population, optics=optics)


def _coco_image(image_id: int, file_name: str, h: int, w: int, mode: str) -> dict:
    return {"id": image_id, "file_name": file_name, "height": h, "width": w, "imaging_mode": mode}


def write_split(
    folder: Path, split: str, n: int, params: SuspensionParams, seed: int, progress=None, task=None
) -> tuple[dict, list[dict]]:
    """Render ``n`` images into ``folder/images/``; returns (COCO dict, descriptor rows).

    Image ``k`` is imaged in ``params.mode_of(k)``, recorded as ``imaging_mode``
    in its COCO image entry and in its descriptor rows.
    """
    from micrometry.io.image import write_image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [dict(DEFAULT_CATEGORY)]}
    rows: list[dict] = []
    for index in range(n):
        mode = params.mode_of(index)
        rendered = render_image(params, image_rng(seed, split, index), mode)
        file_name = f"{split}_{index:04d}.png"
        image_id = index + 1
        write_image(folder / "images" / file_name, rendered.image)
        coco["images"].append(_coco_image(image_id, file_name, params.height, params.width, mode))
        for ann in rendered.annotations:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id, **ann})
        rows.extend(
            {"image": file_name, "image_id": image_id, "imaging_mode": mode, **row}
            for row in rendered.particles
        )
        if progress is not None:
            progress.advance(task)
    return coco, rows


def generate_dataset(
    out: Path,
    truth: Path,
    params: SuspensionParams | None = None,
    seed: int = 0,
    n_train: int = 8,
    n_test: int = 4,
    n_batch: int = 3,
    overwrite: bool = False,
) -> dict:
    """Write the whole synthetic particle dataset (see ``docs/particles-data.md``).

    ::

        OUT/train/images/*.png + OUT/train/annotations.json   (COCO, visible-part polygons)
        OUT/test/images/*.png  + OUT/test/images.json         (images and categories only)
        OUT/batches/A/*.png, OUT/batches/B/*.png               (two populations, see BATCH_POPULATIONS)
        OUT/synth_config.json                                   (seed and every parameter)
        TRUTH/test_annotations.json                             (hidden answers for test/)
        TRUTH/test_particles.csv                                (true descriptors of test particles)
        TRUTH/batches/A.csv, B.csv                              (true descriptors per particle)
        TRUTH/batches/A_annotations.json, B_annotations.json

    Both folders are written atomically. Returns counts and seconds per image.
    """
    import time

    import pandas as pd

    from micrometry.errors import InputError
    from micrometry.io.atomic import atomic_dir, write_json
    from micrometry.progress import make_progress

    params = params or SuspensionParams()
    out, truth = Path(out), Path(truth)
    out_r, truth_r = out.resolve(), truth.resolve()
    if out_r == truth_r or out_r in truth_r.parents or truth_r in out_r.parents:
        raise InputError(
            "the truth folder must be separate from the output folder (it holds the hidden answers)", truth
        )
    if params.height < 32 or params.width < 32:
        raise InputError(f"image size {params.height}x{params.width} is too small (at least 32x32)")
    t0 = time.perf_counter()
    total = n_train + n_test + 2 * n_batch
    with atomic_dir(out, overwrite=overwrite) as tmp_out, atomic_dir(truth, overwrite=overwrite) as tmp_truth:
        with make_progress() as progress:
            task = progress.add_task("rendering particle images", total=total, info="")
            train, _ = write_split(tmp_out / "train", "train", n_train, params, seed, progress, task)
            write_json(tmp_out / "train" / "annotations.json", train)
            test, test_rows = write_split(tmp_out / "test", "test", n_test, params, seed, progress, task)
            write_json(tmp_out / "test" / "images.json", {**test, "annotations": []})
            write_json(tmp_truth / "test_annotations.json", test)
            pd.DataFrame(test_rows).to_csv(tmp_truth / "test_particles.csv", index=False)
            (tmp_truth / "batches").mkdir()
            for batch in ("A", "B"):
                batch_folder = tmp_out / "batches" / batch
                coco, rows = write_split(
                    batch_folder, batch, n_batch, batch_params(params, batch), seed, progress, task
                )
                # the batch folders are plain image folders
                for f in (batch_folder / "images").iterdir():
                    f.rename(batch_folder / f.name)
                (batch_folder / "images").rmdir()
                write_json(tmp_truth / "batches" / f"{batch}_annotations.json", coco)
                pd.DataFrame(rows).to_csv(tmp_truth / "batches" / f"{batch}.csv", index=False)
        config = {
            "seed": seed,
            "n_train": n_train,
            "n_test": n_test,
            "n_batch": n_batch,
            "params": params.to_dict(),
            "batches": BATCH_POPULATIONS,
        }
        write_json(tmp_out / "synth_config.json", config)
        write_json(tmp_truth / "synth_config.json", config)
    seconds = time.perf_counter() - t0
    return {
        "images": total,
        "train_annotations": len(train["annotations"]),
        "test_annotations": len(test["annotations"]),
        "seconds": seconds,
        "seconds_per_image": seconds / max(total, 1),
    }
