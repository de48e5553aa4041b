"""Predict depth maps for a folder of SEM images and write them as competition PNGs (and a zip).

Each input ``NAME.png`` gets ``PRED/NAME.png``: a 72x48 uint8 depth map (height
in nm, rounded). Inputs that would share an output name (``a.png`` and
``a.tif``) are refused before any work. Models that know their uncertainty
(``unet-weak``) also get ``PRED/depth_report.csv``: per image the hole depth
with its 90 % interval and an OOD score, and a :class:`UnlikeTrainingDataWarning`
when images look unlike the model's training data. The output folder, and the
zip, appear whole or not at all.
"""

from __future__ import annotations

import csv
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from micrometry.depth.dataset import image_paths, read_stack
from micrometry.depth.methods import DepthMethod
from micrometry.engine import LocalEngine, RayEngine
from micrometry.io.atomic import atomic_dir, atomic_path
from micrometry.io.image import write_image
from micrometry.io.output_names import unique_output_names
from micrometry.progress import make_progress, track


def to_depth_png(height: np.ndarray) -> np.ndarray:
    """Heights (nm) -> the uint8 values a depth PNG holds."""
    return np.clip(np.rint(height), 0, 255).astype(np.uint8)


def predict_in_batches(method: DepthMethod, images: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """``method.predict`` over ``images`` with a progress bar, one batch at a time."""
    out = np.empty(images.shape, dtype=np.float32)
    starts = range(0, len(images), batch_size)
    for start in track(starts, "predicting depth"):
        out[start : start + batch_size] = method.predict(images[start : start + batch_size])
    return out


REPORT_NAME = "depth_report.csv"
REPORT_COLUMNS = ("depth_nm", "depth_low_nm", "depth_high_nm", "ood_score")


class UnlikeTrainingDataWarning(UserWarning):
    """Images that look unlike a model's training data: their depth maps cannot be trusted."""


def report_rows(names: list[str], report: dict[str, np.ndarray]) -> list[dict]:
    """One row per image of a ``predict_report`` report (CSV-ready strings)."""
    rows = []
    for i, name in enumerate(names):
        row = {"file": name, **{k: f"{float(report[k][i]):.2f}" for k in REPORT_COLUMNS}}
        row["unlike_training_data"] = "yes" if bool(report["ood"][i]) else "no"
        rows.append(row)
    return rows


def write_report(path: Path, rows: list[dict]) -> None:
    """``depth_report.csv``: file, depth_nm, depth_low_nm, depth_high_nm (90 % interval), ood_score,
    unlike_training_data."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=("file", *REPORT_COLUMNS, "unlike_training_data"))
        writer.writeheader()
        writer.writerows(rows)


def warn_unlike(rows: list[dict], where: Path) -> int:
    """Warn when images were flagged as unlike the training data; returns how many."""
    flagged = [r["file"] for r in rows if r["unlike_training_data"] == "yes"]
    if flagged:
        warnings.warn(
            f"{len(flagged)} of {len(rows)} images look unlike the model's training data "
            f"(e.g. {flagged[0]}): their depth maps are unreliable; see {where}",
            UnlikeTrainingDataWarning,
            stacklevel=3,
        )
    return len(flagged)


def write_zip(zip_path: str | Path, folder: Path, png_names: list[str]) -> None:
    """A flat zip of ``folder``'s depth PNGs (the competition's submission format), atomically."""
    with atomic_path(zip_path) as tmp_zip:
        zip_pngs(tmp_zip, folder, png_names)


def zip_pngs(target: str | Path | BinaryIO, folder: Path, png_names: list[str]) -> None:
    """Write the submission zip of ``folder``'s ``png_names`` to a file or file object."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in png_names:
            archive.write(folder / name, arcname=name)


def submission_zip(names: list[str], maps: np.ndarray) -> bytes:
    """The submission zip of depth maps (heights in nm) for images ``names``, in memory (the web app's download)."""
    import io
    import tempfile

    png_names = unique_output_names(names, ".png")
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as folder:
        for name, depth in zip(png_names, maps, strict=False):
            write_image(Path(folder) / name, to_depth_png(depth))
        zip_pngs(buffer, Path(folder), png_names)
    return buffer.getvalue()


@dataclass
class DepthItem:
    """One SEM image to predict: its path and the depth PNG's name."""

    path: str
    name: str


@dataclass
class DepthOutput:
    """What predicting one image gave: the PNG written and, for a model with ``predict_report``,
    its ``depth_report.csv`` row."""

    name: str
    row: dict | None = None


class DepthWorker:
    """Holds a trained method; predicts a batch of SEM images and writes their depth PNGs.

    What :class:`~micrometry.engine.RayEngine` runs in each actor (the method
    is shipped to every actor once, when it starts).

    Parameters
    ----------
    method : DepthMethod
    folder : str
        The output folder under construction.
    """

    item_type = DepthItem
    output_type = DepthOutput

    def __init__(self, method: DepthMethod, folder: str):
        self.method, self.folder = method, Path(folder)

    def __call__(self, items: list[DepthItem]) -> list[DepthOutput]:
        """One :class:`DepthOutput` per item (the PNG is written into the folder)."""
        images = read_stack([Path(item.path) for item in items])
        if hasattr(self.method, "predict_report"):
            maps, report = self.method.predict_report(images)
        else:
            maps, report = self.method.predict(images), None
        names = [item.name for item in items]
        for name, depth in zip(names, maps, strict=False):
            write_image(self.folder / name, to_depth_png(depth))
        if report is None:
            return [DepthOutput(name) for name in names]
        return [DepthOutput(name, row) for name, row in zip(names, report_rows(names, report), strict=False)]


def predict_folder(
    images: str | Path,
    method: DepthMethod,
    out: str | Path,
    zip_path: str | Path | None = None,
    overwrite: bool = False,
    batch_size: int = 4096,
    engine: LocalEngine | RayEngine | None = None,
) -> int:
    """Predict every image of ``images`` (a folder, or a dataset root: its test/SEM); returns the count.

    ``engine`` runs the prediction (:class:`~micrometry.engine.LocalEngine`
    with ``batch_size`` by default; a :class:`~micrometry.engine.RayEngine`
    spreads the same batches over a Ray actor pool, each actor writing its
    PNGs); the files written are the same. The output folder and the zip
    appear whole or not at all. A model with ``predict_report`` also gets
    ``out/depth_report.csv``, and a :class:`UnlikeTrainingDataWarning` when
    any image is flagged.
    """
    engine = engine or LocalEngine(batch_size)
    paths = image_paths(images)
    names = unique_output_names(paths, ".png", images)  # two inputs, one output: refused before any work
    items = [DepthItem(str(path.resolve()), name) for path, name in zip(paths, names, strict=False)]
    png_names: list[str] = [""] * len(items)
    rows: list[dict | None] = [None] * len(items)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        worker_kwargs = {"method": method, "folder": str(Path(tmp).resolve())}
        with make_progress() as progress:
            task = progress.add_task(f"predicting depth ({engine.name})", total=len(items), info="")
            for index, output in engine.map(DepthWorker, worker_kwargs, items):
                png_names[index] = output.name
                rows[index] = output.row
                progress.advance(task)
        has_report = bool(rows) and all(row is not None for row in rows)
        if has_report:
            write_report(tmp / REPORT_NAME, rows)
        if zip_path is not None:
            write_zip(zip_path, tmp, png_names)
    if has_report:
        warn_unlike(rows, Path(out) / REPORT_NAME)
    return len(items)
