"""Predict depth maps for a folder of SEM images and write them as competition PNGs (and a zip).

Each input ``NAME.png`` gets ``PRED/NAME.png``: a 72x48 uint8 depth map (height
in nm, rounded). The output folder, and the zip, appear whole or not at all.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from micrometry.depth.dataset import image_paths, read_stack
from micrometry.depth.methods import DepthMethod
from micrometry.io.atomic import atomic_dir, atomic_path
from micrometry.engine import LocalEngine, RayEngine
from micrometry.io.image import write_image
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

    png_names = [output_name(Path(n).name) for n in names]
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as folder:
        for name, depth in zip(png_names, maps):
            write_image(Path(folder) / name, to_depth_png(depth))
        zip_pngs(buffer, Path(folder), png_names)
    return buffer.getvalue()


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

    ``engine`` runs the prediction (:class:`~micrometry.engine.LocalEngine`
    with ``batch_size`` by default; a :class:`~micrometry.engine.RayEngine`
    spreads the same batches over a Ray actor pool, each actor writing its
    PNGs); the files written are the same. The output folder and the zip
    appear whole or not at all.
    """
    engine = engine or LocalEngine(batch_size)
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
