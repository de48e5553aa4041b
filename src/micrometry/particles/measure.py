"""``micrometry particles measure``: instances in, per-particle and summary tables out.

Inputs are label images (one 16-bit PNG/TIFF per image, 0 background), COCO
instance/result files or images to segment; :mod:`micrometry.particles.label_sources`
turns each into one label image per source image, which
:func:`micrometry.particles.morphometry.measure_labels` measures. Three tables
come out, written together and atomically:

* ``TABLE``: one row per particle (ImageJ names, calibrated);
* ``TABLE_images``: one row per image: count, coverage, D10/D50/D90, touching
  and agglomerate counts;
* ``TABLE_summary``: one row for the whole dataset: the same, plus the count
  adequacy of D50/D90 (:func:`micrometry.particles.psd.count_adequacy`), the
  shape distributions (P10/P50/P90 of each shape ratio) and what the volume
  weighting assumes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from micrometry.errors import DatasetError, InputError
from micrometry.io.atomic import atomic_dir, atomic_path, refuse_existing
from micrometry.io.coco import read_json
from micrometry.io.image import list_images, read_calibration, read_image
from micrometry.io.scalebar import without_band
from micrometry.options import AUTO, PIXEL_UNIT, calibration
from micrometry.particles.databar import SCALE_BAR_SOURCE, band_of, convert, scale_bar_record
from micrometry.particles.label_sources import (
    PREDICTION_JSON,
    LabelImage,
    iter_label_images,
    segmented_label_images,
)
from micrometry.particles.morphometry import measure_labels, with_unit_names, without_unit_names
from micrometry.particles.psd import (
    DEFAULT_CONFIDENCE,
    DEFAULT_TARGET,
    VOLUME_ASSUMPTION,
    adequacy_row,
    psd_row,
)
from micrometry.particles.rois import label_polygons, roiset_name, write_polygons
from micrometry.progress import track

TABLE_SUFFIXES = (".csv", ".parquet")


# Per particle and per image: False when its image's segmentation is unreliable
# (micrometry.particles.reliability); present when the source knows (a prediction folder, --model).
RELIABLE_COLUMN = "Reliable"
REASON_COLUMN = "UnreliableReason"

# The size that D10/D50/D90 describe.
SIZE_COLUMN = "EqDiam"

# Shape ratios reported as distributions (ISO 9276-6: shape is a distribution, not a mean).
SHAPE_DISTRIBUTION_COLUMNS = ("Circ.", "AR", "Round", "Solidity", "Convexity", "Elongation")
SHAPE_QUANTILES = (10, 50, 90)


def shape_quantiles(table: pd.DataFrame, columns=SHAPE_DISTRIBUTION_COLUMNS) -> dict[str, float]:
    """P10/P50/P90 of each shape ratio: ``Circ_P10``, ``AR_P50``, ... (NaN without particles)."""
    row: dict[str, float] = {}
    for column in columns:
        values = table[column].to_numpy(dtype=float) if column in table else np.zeros(0)
        values = values[np.isfinite(values)]
        for p in SHAPE_QUANTILES:
            row[f"{column.rstrip('.')}_P{p}"] = float(np.percentile(values, p)) if values.size else np.nan
    return row


def flag_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many particles carry each flag (:mod:`micrometry.particles.flags`)."""
    return {
        "Touching": int(table["Touching"].sum()) if "Touching" in table else 0,
        "Agglomerates": int(table["Agglomerate"].sum()) if "Agglomerate" in table else 0,
    }


def unreliable_warning(table: pd.DataFrame, what: str = "") -> str | None:
    """One warning line when particles of ``table`` come from images whose segmentation is unreliable; else None."""
    if RELIABLE_COLUMN not in table or "Image" not in table:
        return None
    # bool, nullable boolean, or the text a CSV round trip may leave
    bad = table[table[RELIABLE_COLUMN].astype(str).str.lower().isin(["false", "0"])]
    if bad.empty:
        return None
    names = list(dict.fromkeys(bad["Image"].astype(str)))
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    images = "image" if len(names) == 1 else "images"
    return (
        f"{what}{len(bad)} of {len(table)} particles come from {len(names)} {images} whose segmentation is "
        f"unreliable ({shown}; column {RELIABLE_COLUMN} = False): check those images before using the numbers"
    )


@dataclass
class Measurement:
    """The three tables of a measure run."""

    particles: pd.DataFrame
    images: pd.DataFrame
    summary: pd.DataFrame
    # with rois=True: each image's outlines of the particles in the table, {image: {label id: (N, 2) x, y}}
    rois: dict[str, dict[int, np.ndarray]] | None = None

    @property
    def unit(self) -> str:
        """The length unit of every table (``px`` when uncalibrated)."""
        return str(self.summary["Unit"].iloc[0])


# --------------------------------------------------------------------------- measuring


def measure_source(
    source: str | Path,
    pixel_size: float | None = None,
    unit: str | None = None,
    exclude_edges: bool = False,
    images_json: str | Path | None = None,
    min_score: float = 0.0,
    model: str | Path | None = None,
    images_dir: str | Path | None = None,
    n_boot: int = 500,
    rois: bool = False,
    target: float = DEFAULT_TARGET,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Measurement:
    """Measure every particle of every image in ``source`` and summarise.

    Border-touching particles are always measured and flagged
    (``TouchesBorder``); with ``exclude_edges`` they are left out of the
    particle table and of the counts and percentiles (their true size is
    unknown, and large particles touch the border more often, so keeping them
    biases the PSD), but not of the coverage, which is a property of the image.

    Calibration: ``pixel_size`` (with ``unit``) when given, else the images'
    metadata (:func:`source_calibration`), else pixels; the summary table records
    which (``PixelSize``, ``Unit``, ``Calibration``). ``pixel_size="auto"``
    reads each image's scale bar (recorded by ``predict --pixel-size auto``,
    or read from the ``images_dir`` images or the photos ``model`` segments):
    each image is measured at its own pixel size, in the first image's unit,
    and particles reaching into the data bar are left out.

    The summary's count adequacy judges D50 and D90 against a relative CI
    half-width of ``target`` at ``confidence`` (``Precision_D90_n``,
    ``CountNeeded_D90_n``, ..., ``CountAdequate``).
    """
    auto = pixel_size == AUTO
    if auto:
        if unit is not None:
            raise InputError(
                "--pixel-size auto takes its unit from the scale bar's label; drop --unit", "--unit"
            )
        pixel_size, unit, calibrated_by = 1.0, None, SCALE_BAR_SOURCE
    else:
        pixel_size, unit, calibrated_by = calibration(
            pixel_size, unit, source_calibration(source, images_dir, model)
        )
    gray_by_stem = {p.stem: p for p in list_images(images_dir)} if images_dir is not None else {}
    if model is not None:
        count, items = segmented_label_images(source, model, scale_bars=auto)
    else:
        count, items = iter_label_images(source, images_json, min_score)
        if auto:
            items = _with_scale_bars(source, items, gray_by_stem)
    tables, image_rows = [], []
    outlines: dict[str, dict[int, np.ndarray]] = {}
    areas = []  # (image area, covered area) in the unit, per image
    for item in track(items, "measuring", total=count):
        image = _matching_image(gray_by_stem, item) if images_dir is not None else None
        size, bar_rows = pixel_size, 0
        if auto:
            bar = item.scale_bar
            unit = unit or bar["unit"]  # the first image's unit is the table's
            size = convert(bar["pixel_size"], bar["unit"], unit)
            band = band_of(bar)
            item.labels, bar_rows = without_band(item.labels, band), band[1] - band[0]
        table, touching, coverage = measure_image(item.labels, size, unit, image, exclude_edges)
        # the data bar is not part of the field of view
        field_area = (item.labels.shape[0] - bar_rows) * item.labels.shape[1] * size**2
        coverage = coverage * item.labels.size / max(item.labels.size - bar_rows * item.labels.shape[1], 1)
        areas.append((field_area, coverage * field_area))
        table.insert(0, "Image", item.name)
        table.insert(1, RELIABLE_COLUMN, item.reliable)
        tables.append(table)
        if rois:
            kept = set(table["Label"].tolist())
            outlines[item.name] = {k: v for k, v in label_polygons(item.labels).items() if k in kept}
        image_rows.append(
            {
                "Image": item.name,
                "WidthPx": item.labels.shape[1],
                "HeightPx": item.labels.shape[0],
                RELIABLE_COLUMN: item.reliable,
                REASON_COLUMN: item.reason,
                "Count": len(table),
                "TouchingBorder": touching,
                "Coverage": coverage,
                **flag_counts(table),
                **psd_row(table[SIZE_COLUMN].to_numpy(), n_boot=max(100, n_boot // 2)),
                **(
                    {
                        "PixelSize": size,
                        "ScaleBarLabel": item.scale_bar["label"],
                        "ScaleBarPx": item.scale_bar["bar_px"],
                        "ScaleBarConfidence": item.scale_bar["confidence"],
                    }
                    if auto
                    else {}
                ),
            }
        )
    particles = pd.concat(tables, ignore_index=True)
    images = pd.DataFrame(image_rows)
    if images[RELIABLE_COLUMN].isna().all():  # the source says nothing about it: no column
        particles = particles.drop(columns=RELIABLE_COLUMN)
        images = images.drop(columns=[RELIABLE_COLUMN, REASON_COLUMN])
    else:
        particles[RELIABLE_COLUMN] = particles[RELIABLE_COLUMN].astype("boolean")
        images[RELIABLE_COLUMN] = images[RELIABLE_COLUMN].astype("boolean")
    unit = unit or PIXEL_UNIT
    total_area = float(sum(a for a, _ in areas))
    covered = float(sum(c for _, c in areas))
    if auto:
        sizes = set(images["PixelSize"])
        pixel_size = sizes.pop() if len(sizes) == 1 else float("nan")
    summary = pd.DataFrame(
        [
            {
                "Source": str(Path(source).resolve()),
                "Images": len(images),
                "Count": len(particles),
                "TouchingBorder": int(images["TouchingBorder"].sum()),
                "ExcludeEdges": exclude_edges,
                "Coverage": covered / total_area if total_area else 0.0,
                "SizeColumn": SIZE_COLUMN,
                "PixelSize": pixel_size,
                "Unit": unit,
                "Calibration": calibrated_by,
                **({"CalibrationConfidence": float(images["ScaleBarConfidence"].min())} if auto else {}),
                **(
                    {"UnreliableImages": int(images[RELIABLE_COLUMN].eq(False).sum())}
                    if RELIABLE_COLUMN in images
                    else {}
                ),
                **flag_counts(particles),
                **psd_row(particles[SIZE_COLUMN].to_numpy(), n_boot=n_boot),
                "VolumeWeighting": VOLUME_ASSUMPTION,
                **adequacy_row(particles[SIZE_COLUMN].to_numpy(), target, confidence),
                **shape_quantiles(particles),
            }
        ]
    )
    return Measurement(particles, images, summary, outlines if rois else None)


def _with_scale_bars(source: str | Path, items, gray_by_stem: dict[str, Path]):
    """Label images with the scale bar of their image: from a prediction folder written by
    ``predict --pixel-size auto``, else read from the gray image of the same name (``--images``)."""
    source = Path(source)
    record = source / PREDICTION_JSON
    stored = {}
    if source.is_dir() and record.is_file():
        stored = {
            Path(p["file"]).stem: p["scale_bar"]
            for p in read_json(record).get("per_image", [])
            if p.get("scale_bar")
        }
    if not stored and not gray_by_stem:
        raise InputError(
            "--pixel-size auto reads the scale bar from the images: give --images (the gray images), "
            "--model (segment photos here), or a folder from 'particles predict --pixel-size auto'",
            source,
        )
    for item in items:
        if item.name in stored:
            item.scale_bar = stored[item.name]
        elif item.name in gray_by_stem:
            path = gray_by_stem[item.name]
            item.scale_bar = scale_bar_record(read_image(path), path)
        else:
            raise DatasetError(
                f"--pixel-size auto: no scale bar recorded or image found for '{item.name}'", source
            )
        yield item


def measure_image(
    labels: np.ndarray,
    pixel_size: float = 1.0,
    unit: str = "px",
    image: np.ndarray | None = None,
    exclude_edges: bool = False,
) -> tuple[pd.DataFrame, int, float]:
    """One label image measured as ``particles measure`` measures each image.

    Returns
    -------
    table : DataFrame
        :func:`~micrometry.particles.morphometry.measure_labels`'s table, without
        the border-touching particles when ``exclude_edges``.
    touching : int
        How many particles touch the border (counted whether or not they are left out).
    coverage : float
        Fraction of the image's area that particles cover, border-touching ones included.
    """
    table = measure_labels(labels, pixel_size=pixel_size, unit=unit, image=image)
    image_area = labels.size * pixel_size**2
    coverage = float(table["Area"].sum() / image_area) if image_area else 0.0
    touching = int(table["TouchesBorder"].sum())
    if exclude_edges:
        table = table[~table["TouchesBorder"]].reset_index(drop=True)
    return table, touching, coverage


def source_calibration(
    source: str | Path, images_dir: str | Path | None = None, model: str | Path | None = None
) -> tuple[float, str] | None:
    """The pixel size the inputs' files declare, or None.

    Looked up in a prediction folder's ``prediction.json`` (the calibration of the
    images that were segmented), then in the TIFF metadata of the label images,
    the images to segment and the ``images_dir`` gray images
    (:func:`micrometry.io.image.read_calibration`). Files that disagree are refused.
    """
    source = Path(source)
    record = source / PREDICTION_JSON
    if source.is_dir() and record.is_file():
        saved = read_json(record).get("calibration")
        if saved:
            return float(saved["pixel_size"]), str(saved["unit"])
    files: list[Path] = []
    if source.is_file() and source.suffix.lower() != ".json":
        files.append(source)
    elif source.is_dir():
        files += list_images(source / "labels" if (source / "labels").is_dir() and model is None else source)
    if images_dir is not None:
        files += list_images(images_dir)
    found = {path: cal for path in files if (cal := read_calibration(path)) is not None}
    values = set(found.values())
    if len(values) > 1:
        listed = ", ".join(f"{p.name}: {c[0]:g} {c[1]}/px" for p, c in list(found.items())[:3])
        raise InputError(
            f"images declare different pixel sizes ({listed}); give --pixel-size and --unit", source
        )
    return values.pop() if values else None


def _matching_image(gray_by_stem: dict[str, Path], item: LabelImage) -> np.ndarray:
    """The gray image for a label image, by file stem; it must exist and have the same size."""
    path = gray_by_stem.get(item.name)
    if path is None:
        raise DatasetError(f"no gray image named like the label image '{item.name}' in --images")
    image = read_image(path)
    if image.shape != item.labels.shape:
        raise DatasetError(
            f"size {image.shape[::-1]} differs from its label image {item.labels.shape[::-1]} "
            "(width x height)",
            path,
        )
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


def rois_folder(out: str | Path) -> Path:
    """Where ``measure --rois`` writes one ``<image>_RoiSet.zip`` per image: ``<stem>_rois/`` beside the table."""
    out = Path(out)
    return out.with_name(f"{out.stem}_rois")


def check_outputs_free(out: str | Path, overwrite: bool, rois: bool = False) -> dict[str, Path]:
    """Output paths, refusing existing files unless ``overwrite`` (checked before any work)."""
    paths = output_paths(out)
    for path in paths.values():
        refuse_existing(path, overwrite)
    if rois:
        refuse_existing(rois_folder(out), overwrite)
    return paths


# Six significant digits: beyond any measurement's precision, and what spreadsheets show in full.
CSV_FLOAT_FORMAT = "%.6g"


def write_table(table: pd.DataFrame, path: Path, unit: str | None = None) -> None:
    """Write one table as CSV or Parquet by suffix (no atomicity: see :func:`write_measurement`).

    With ``unit``, column names carry their units (:func:`~micrometry.particles.morphometry.unit_name`).
    CSV numbers are rounded to 6 significant digits; missing values are empty cells.
    """
    if unit is not None:
        table = with_unit_names(table, unit)
    if path.suffix.lower() == ".parquet":
        table.to_parquet(path, index=False)
    else:
        table.to_csv(path, index=False, float_format=CSV_FLOAT_FORMAT, na_rep="")


def write_measurement(measurement: Measurement, out: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """Write the three tables; all three appear together (renamed only once all are written)."""
    paths = check_outputs_free(out, overwrite, rois=measurement.rois is not None)
    with contextlib.ExitStack() as stack:
        for key, path in paths.items():
            tmp = stack.enter_context(atomic_path(path))
            # pandas picks the format from the suffix; the temp name keeps it.
            write_table(getattr(measurement, key), tmp, unit=measurement.unit)
        if measurement.rois is not None:
            folder = rois_folder(out)
            tmp = stack.enter_context(atomic_dir(folder, overwrite=overwrite))
            for image, polygons in measurement.rois.items():
                write_polygons(tmp / roiset_name(image), polygons)
            paths = {**paths, "rois": folder}
    return paths


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a particle table written by ``measure`` (CSV or Parquet)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError(
            f"expected a {' or '.join(TABLE_SUFFIXES)} table from 'micrometry particles measure'", path
        )
    try:
        table = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pandas/pyarrow raise many types for damaged files
        raise InputError(f"cannot read table ({type(exc).__name__}: {exc})", path) from None
    return without_unit_names(table)
