"""What the web app does with an upload, free of any HTTP detail (tested directly).

Models load lazily on first use and are shared by all requests; a lock keeps
two requests from loading the same model twice.
"""

from __future__ import annotations

import base64
import io
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from micrometry.errors import InputError
from micrometry.io.image import IMAGE_SUFFIXES, decode_image

HISTOGRAM_COLUMNS = ["Area", "Feret", "AR", "Circ."]


@dataclass
class Limits:
    """What one request may send."""

    max_upload_bytes: int = 20 * 1024 * 1024
    max_sem_images: int = 2000
    max_particle_pixels: int = 4096 * 4096


def png_data_url(array: np.ndarray) -> str:
    """Encode a uint8/uint16 image (gray or RGB) as a PNG data URL."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def figure_data_url(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def file_data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def expand_uploads(files: list[tuple[str, bytes]], limits: Limits) -> list[tuple[str, bytes]]:
    """Image files as (name, bytes), with zip archives unpacked (guarding against zip bombs)."""
    out: list[tuple[str, bytes]] = []
    for name, data in files:
        if name.lower().endswith(".zip"):
            try:
                archive = zipfile.ZipFile(io.BytesIO(data))
            except zipfile.BadZipFile:
                raise InputError("not a valid zip archive", name) from None
            members = [m for m in archive.infolist()
                       if not m.is_dir() and Path(m.filename).suffix.lower() in IMAGE_SUFFIXES
                       and not Path(m.filename).name.startswith(".")]
            if sum(m.file_size for m in members) > 4 * limits.max_upload_bytes:
                raise InputError("zip archive unpacks to more than the size limit", name)
            out.extend((Path(m.filename).name, archive.read(m)) for m in members)
        elif Path(name).suffix.lower() in IMAGE_SUFFIXES:
            out.append((name, data))
        else:
            raise InputError(f"unsupported file type (expected {', '.join(IMAGE_SUFFIXES)} or .zip)", name)
    if not out:
        raise InputError("no images in the upload")
    return out


class Services:
    """The two jobs behind the web page.

    Parameters
    ----------
    depth_model : path, optional
        "shipped", a depth run folder or an exported model folder; default: the shipped model.
    particle_model : str or path, optional
        A particle model name, "shipped", a run folder or an exported model folder; default: the shipped model.
    """

    def __init__(self, depth_model: str | Path | None = None, particle_model: str | Path | None = None,
                 limits: Limits | None = None):
        self.depth_model_path = depth_model
        self.particle_model_name = particle_model
        self.limits = limits or Limits()
        self._lock = threading.Lock()
        self._depth = None
        self._segmenter = None

    # -- models ----------------------------------------------------------------
    def depth_model(self):
        with self._lock:
            if self._depth is None:
                from micrometry.depth.methods import load_method

                self._depth = load_method(self.depth_model_path or "shipped")
            return self._depth

    def segmenter(self):
        with self._lock:
            if self._segmenter is None:
                from micrometry.particles.segmenter import load_segmenter

                self._segmenter = load_segmenter(self.particle_model_name)
            return self._segmenter

    # -- SEM tab ---------------------------------------------------------------
    def sem(self, files: list[tuple[str, bytes]], nm_per_px: float = 1.0) -> dict:
        """Depth maps, metrology table, a 3-D view and a zip of the PNGs for uploaded SEM images."""
        uploads = expand_uploads(files, self.limits)
        if len(uploads) > self.limits.max_sem_images:
            raise InputError(f"too many images ({len(uploads)}); the limit is {self.limits.max_sem_images}")
        from micrometry.depth.dataset import sem_image
        from micrometry.depth.measure import hole_table, measure_maps
        from micrometry.depth.predict import predict_in_batches, submission_zip, to_depth_png
        from micrometry.report.depth import DepthSample, surface_figure

        images = np.stack([sem_image(decode_image(data, name), name) for name, data in uploads])
        depth = predict_in_batches(self.depth_model(), images)
        depth_u8 = to_depth_png(depth)
        names = [name for name, _ in uploads]
        table = hole_table(names, measure_maps(depth_u8.astype(np.float32), nm_per_px=nm_per_px))
        zipped = submission_zip(names, depth)
        shown = min(len(uploads), 12)
        return {
            "count": len(uploads),
            "samples": [{"name": uploads[i][0], "sem": png_data_url(images[i]),
                         "depth": png_data_url(_colourise(depth_u8[i]))} for i in range(shown)],
            "surface": figure_data_url(surface_figure(DepthSample(uploads[0][0], "", depth[0]))),
            "table": _records(table),
            "csv": file_data_url(table.to_csv(index=False).encode(), "text/csv"),
            "zip": file_data_url(zipped, "application/zip"),
        }

    # -- Particles tab -----------------------------------------------------------
    def particles(self, name: str, data: bytes, pixel_size: float = 1.0, unit: str = "px") -> dict:
        """Overlay, per-particle table, histograms and CSV for one uploaded image."""
        from micrometry.particles.morphometry import measure_labels
        from micrometry.particles.predict import overlay
        from micrometry.report.particles import histogram_figure

        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"unsupported file type (expected {', '.join(IMAGE_SUFFIXES)})", name)
        if not pixel_size > 0:
            raise InputError(f"pixel size must be positive, got {pixel_size}")
        image = decode_image(data, name)
        if image.size > self.limits.max_particle_pixels:
            raise InputError(f"image has {image.size} pixels; the limit is {self.limits.max_particle_pixels}", name)
        instances = self.segmenter().segment(image)
        table = measure_labels(instances.labels, pixel_size=pixel_size, unit=unit)
        return {
            "count": int(len(table)),
            "overlay": png_data_url(overlay(image, instances.labels)),
            "histograms": figure_data_url(histogram_figure({Path(name).name: table}, HISTOGRAM_COLUMNS)),
            "table": _records(table),
            "csv": file_data_url(table.to_csv(index=False).encode(), "text/csv"),
        }


def _records(table) -> dict:
    rounded = table.round(3)
    return {"columns": [str(c) for c in rounded.columns], "rows": rounded.astype(object).where(rounded.notna(), None)
            .values.tolist()}


def _colourise(depth: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    lo, hi = float(depth.min()), float(depth.max())
    scaled = (depth.astype(float) - lo) / max(hi - lo, 1.0)
    return (colormaps["viridis"](scaled)[..., :3] * 255).astype(np.uint8)
