"""Predict depth maps for a folder of SEM images and write them as competition PNGs (and a zip).

Each input ``NAME.png`` gets ``PRED/NAME.png``: a 72x48 uint8 depth map (height
in nm, rounded). The output folder, and the zip, appear whole or not at all.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from micrometry.depth.dataset import load_image_folder
from micrometry.depth.methods import DepthMethod
from micrometry.io.atomic import atomic_dir, atomic_path
from micrometry.io.image import write_image
from micrometry.progress import track


def to_depth_png(height: np.ndarray) -> np.ndarray:
    """Heights (nm) -> the uint8 values a depth PNG holds."""
    return np.clip(np.rint(height), 0, 255).astype(np.uint8)


def predict_in_batches(method: DepthMethod, images: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """``method.predict`` over ``images`` with a progress bar, one batch at a time."""
    out = np.empty(images.shape, dtype=np.float32)
    starts = range(0, len(images), batch_size)
    for start in track(starts, "predicting depth"):
        out[start:start + batch_size] = method.predict(images[start:start + batch_size])
    return out


def output_name(name: str) -> str:
    """Depth maps are PNG whatever the input's format (competition file names are kept)."""
    return str(Path(name).with_suffix(".png"))


def write_predictions(out: str | Path, names: list[str], maps: np.ndarray, zip_path: str | Path | None = None,
                      overwrite: bool = False) -> None:
    """Write ``maps`` as ``out/<name>.png`` and optionally a flat zip of them, atomically."""
    png_names = [output_name(n) for n in names]
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for name, depth in zip(track(png_names, "writing depth maps"), maps):
            write_image(tmp / name, to_depth_png(depth))
        if zip_path is not None:
            with atomic_path(zip_path) as tmp_zip, zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as archive:
                for name in png_names:
                    archive.write(tmp / name, arcname=name)


def predict_folder(images: str | Path, method: DepthMethod, out: str | Path, zip_path: str | Path | None = None,
                   overwrite: bool = False, batch_size: int = 4096) -> int:
    """Predict every image of ``images`` (a folder, or a dataset root: its test/SEM); returns the count."""
    arrays = load_image_folder(images)
    maps = predict_in_batches(method, arrays.images, batch_size)
    write_predictions(out, arrays.names, maps, zip_path, overwrite)
    return len(arrays.names)
