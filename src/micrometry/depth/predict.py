"""Predict depth maps for a folder of SEM images and write them as competition PNGs (and a zip).

Each input ``NAME.png`` gets ``PRED/NAME.png``: a 72x48 uint8 depth map (height
in nm, rounded). The output folder, and the zip, appear whole or not at all.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from micrometry.depth.dataset import image_paths, load_image_folder, read_stack
from micrometry.depth.methods import DepthMethod
from micrometry.io.atomic import atomic_dir, atomic_path
from micrometry.io.image import write_image
from micrometry.engine import LocalEngine, RayEngine
from micrometry.progress import make_progress, track


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
            write_zip(zip_path, tmp, png_names)


def write_zip(zip_path: str | Path, folder: Path, png_names: list[str]) -> None:
    """A flat zip of ``folder``'s depth PNGs (the competition's submission format), atomically."""
    with atomic_path(zip_path) as tmp_zip, zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in png_names:
            archive.write(folder / name, arcname=name)


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

    def __init__(self, method: DepthMethod, folder: str):
        self.method, self.folder = method, Path(folder)

    def __call__(self, items: list[dict]) -> list[dict]:
        """``items``: ``{"path"}`` each; returns ``{"name"}`` (the PNG written) each."""
        images = read_stack([Path(item["path"]) for item in items])
        maps = self.method.predict(images)
        names = [output_name(Path(item["path"]).name) for item in items]
        for name, depth in zip(names, maps):
            write_image(self.folder / name, to_depth_png(depth))
        return [{"name": name} for name in names]


def predict_folder(images: str | Path, method: DepthMethod, out: str | Path, zip_path: str | Path | None = None,
                   overwrite: bool = False, batch_size: int = 4096,
                   engine: LocalEngine | RayEngine | None = None) -> int:
    """Predict every image of ``images`` (a folder, or a dataset root: its test/SEM); returns the count.

    With a :class:`~micrometry.engine.RayEngine` the batches (the same as
    here: the engine's batch size, images in file order) are predicted by a
    Ray actor pool, each actor writing its PNGs; the files are the same.
    """
    if engine is not None and engine.name != "local":
        return _predict_folder_on(engine, images, method, out, zip_path, overwrite)
    arrays = load_image_folder(images)
    maps = predict_in_batches(method, arrays.images, batch_size)
    write_predictions(out, arrays.names, maps, zip_path, overwrite)
    return len(arrays.names)


def _predict_folder_on(engine: RayEngine, images: str | Path, method: DepthMethod, out: str | Path,
                       zip_path: str | Path | None, overwrite: bool) -> int:
    paths = image_paths(images)
    items = [{"path": str(path.resolve())} for path in paths]
    png_names: list[str] = [""] * len(items)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        worker_kwargs = {"method": method, "folder": str(Path(tmp).resolve())}
        with make_progress() as progress:
            task = progress.add_task(f"predicting depth ({engine.name})", total=len(items), info="")
            for index, output in engine.map(DepthWorker, worker_kwargs, items):
                png_names[index] = output["name"]
                progress.advance(task)
        if zip_path is not None:
            write_zip(zip_path, tmp, png_names)
    return len(items)
