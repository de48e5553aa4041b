"""``micrometry particles measure``: instances in, per-particle and summary tables out.

Inputs are label images (one 16-bit PNG/TIFF per image, 0 background), COCO
instance/result files or images to segment; :mod:`micrometry.particles.label_sources`
turns each into one label image per source image, which
:func:`micrometry.particles.morphometry.measure_labels` measures. Three tables
come out, written together and atomically:

* ``TABLE``: one row per particle (ImageJ names, calibrated);
* ``TABLE_images``: one row per image: count, coverage, D10/D50/D90;
* ``TABLE_summary``: one row for the whole dataset.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from micrometry.errors import DatasetError, InputError
from micrometry.io.atomic import atomic_path, refuse_existing
from micrometry.io.image import list_images, read_image
from micrometry.particles.label_sources import LabelImage, iter_label_images, segmented_label_images
from micrometry.particles.morphometry import measure_labels
from micrometry.particles.psd import psd_row
from micrometry.progress import track

TABLE_SUFFIXES = (".csv", ".parquet")

# The size that D10/D50/D90 describe.
SIZE_COLUMN = "EqDiam"


@dataclass
class Measurement:
    """The three tables of a measure run."""

    particles: pd.DataFrame
    images: pd.DataFrame
    summary: pd.DataFrame


# --------------------------------------------------------------------------- measuring


def measure_source(
    source: str | Path,
    pixel_size: float = 1.0,
    unit: str = "px",
    exclude_edges: bool = False,
    images_json: str | Path | None = None,
    min_score: float = 0.0,
    model: str | Path | None = None,
    images_dir: str | Path | None = None,
    n_boot: int = 500,
) -> Measurement:
    """Measure every particle of every image in ``source`` and summarise.

    Border-touching particles are always measured and flagged
    (``TouchesBorder``); with ``exclude_edges`` they are left out of the
    particle table and of the counts and percentiles (their true size is
    unknown, and large particles touch the border more often, so keeping them
    biases the PSD), but not of the coverage, which is a property of the image.
    """
    if pixel_size <= 0:
        raise InputError(f"--pixel-size must be positive, got {pixel_size}")
    gray_by_stem = {p.stem: p for p in list_images(images_dir)} if images_dir is not None else {}
    if model is not None:
        count, items = segmented_label_images(source, model)
    else:
        count, items = iter_label_images(source, images_json, min_score)
    tables, image_rows = [], []
    for item in track(items, "measuring", total=count):
        image = _matching_image(gray_by_stem, item) if images_dir is not None else None
        table = measure_labels(item.labels, pixel_size=pixel_size, unit=unit, image=image)
        image_area = item.labels.size * pixel_size**2
        coverage = float(table["Area"].sum() / image_area) if image_area else 0.0
        touching = int(table["TouchesBorder"].sum())
        if exclude_edges:
            table = table[~table["TouchesBorder"]]
        table.insert(0, "Image", item.name)
        tables.append(table)
        image_rows.append({
            "Image": item.name, "WidthPx": item.labels.shape[1], "HeightPx": item.labels.shape[0],
            "Count": len(table), "TouchingBorder": touching, "Coverage": coverage,
            **psd_row(table[SIZE_COLUMN].to_numpy(), n_boot=max(100, n_boot // 2)),
        })
    particles = pd.concat(tables, ignore_index=True)
    images = pd.DataFrame(image_rows)
    total_area = float((images["WidthPx"] * images["HeightPx"]).sum()) * pixel_size**2
    covered = float((images["Coverage"] * images["WidthPx"] * images["HeightPx"]).sum()) * pixel_size**2
    summary = pd.DataFrame([{
        "Source": str(Path(source).resolve()), "Images": len(images), "Count": len(particles),
        "TouchingBorder": int(images["TouchingBorder"].sum()), "ExcludeEdges": exclude_edges,
        "Coverage": covered / total_area if total_area else 0.0,
        "SizeColumn": SIZE_COLUMN, "PixelSize": pixel_size, "Unit": unit,
        **psd_row(particles[SIZE_COLUMN].to_numpy(), n_boot=n_boot),
    }])
    return Measurement(particles, images, summary)


def _matching_image(gray_by_stem: dict[str, Path], item: LabelImage) -> np.ndarray:
    """The gray image for a label image, by file stem; it must exist and have the same size."""
    path = gray_by_stem.get(item.name)
    if path is None:
        raise DatasetError(f"no gray image named like the label image '{item.name}' in --images")
    image = read_image(path)
    if image.shape != item.labels.shape:
        raise DatasetError(f"size {image.shape[::-1]} differs from its label image {item.labels.shape[::-1]} "
                           "(width x height)", path)
    return image


# --------------------------------------------------------------------------- outputs


def output_paths(out: str | Path) -> dict[str, Path]:
    """Where the three tables go: ``out``, ``<stem>_images<suffix>``, ``<stem>_summary<suffix>``."""
    out = Path(out)
    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError(f"output table must end in {' or '.join(TABLE_SUFFIXES)}", out)
    return {
        "particles": out,
        "images": out.with_name(f"{out.stem}_images{out.suffix}"),
        "summary": out.with_name(f"{out.stem}_summary{out.suffix}"),
    }


def check_outputs_free(out: str | Path, overwrite: bool) -> dict[str, Path]:
    """Output paths, refusing existing files unless ``overwrite`` (checked before any work)."""
    paths = output_paths(out)
    for path in paths.values():
        refuse_existing(path, overwrite)
    return paths


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write one table as CSV or Parquet by suffix (no atomicity: see :func:`write_measurement`)."""
    if path.suffix.lower() == ".parquet":
        table.to_parquet(path, index=False)
    else:
        table.to_csv(path, index=False)


def write_measurement(measurement: Measurement, out: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """Write the three tables; all three appear together (renamed only once all are written)."""
    paths = check_outputs_free(out, overwrite)
    with contextlib.ExitStack() as stack:
        for key, path in paths.items():
            tmp = stack.enter_context(atomic_path(path))
            # pandas picks the format from the suffix; the temp name keeps it.
            write_table(getattr(measurement, key), tmp)
    return paths


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a particle table written by ``measure`` (CSV or Parquet)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError(f"expected a {' or '.join(TABLE_SUFFIXES)} table from 'micrometry particles measure'", path)
    try:
        return pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pandas/pyarrow raise many types for damaged files
        raise InputError(f"cannot read table ({type(exc).__name__}: {exc})", path) from None
