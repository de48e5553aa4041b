"""The correction page's work, free of any HTTP detail: outlines to edit, training data, fine-tuning.

A workspace folder holds one user's session::

    WORKSPACE/
      uploads/            the images opened last (original bytes)
      training/images/    training data saved from the page: the images ...
      training/masks/     ... and their corrected label images (16-bit PNG), the images/ + masks/
                          layout ``particles train`` reads
      runs/finetune-N/    fine-tuning runs (``particles train --init shipped``), newest last

Outlines travel as polygons in ImageJ coordinates (pixel ``i`` spans ``[i, i + 1)``),
written and filled back by :mod:`micrometry.particles.rois`, which give back
the exact masks; merging and splitting work on those masks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from micrometry.errors import InputError
from micrometry.io.image import decode_image, write_image
from micrometry.particles.rois import label_polygons, polygons_to_labels
from micrometry.web.services import check_budget
from micrometry.web.uploads import Limits, expand_uploads

#: Largest closing radius tried to join two merged particles that do not touch (then: their convex hull).
MAX_MERGE_GAP_PX = 6
#: Fine-tuning time budget bounds in minutes (the page's field).
MIN_FINETUNE_MIN, MAX_FINETUNE_MIN = 0.1, 120.0
#: Seconds a fine-tuning run needs beyond its time budget (loading, validation, writing), for the progress bar.
FINETUNE_OVERHEAD_S = 15.0


def display_png(image: np.ndarray) -> np.ndarray:
    """8-bit gray of any image for display: 0.5-99.5 percentile stretch (16-bit and float images too)."""
    gray = np.asarray(image, np.float32)
    if gray.ndim == 3:
        gray = gray.mean(axis=-1)
    lo, hi = np.percentile(gray, [0.5, 99.5])
    return np.clip((gray - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)


def outlines(labels: np.ndarray) -> list[list[list[float]]]:
    """Every particle's outline as ``[[x, y], ...]`` (JSON-ready, 2 decimals)."""
    return [np.round(xy, 2).tolist() for xy in label_polygons(labels).values()]


def fill(objects: list, shape: tuple[int, int]) -> np.ndarray:
    """Label image ``1..N`` of outlines (see :func:`~micrometry.particles.rois.polygons_to_labels`)."""
    polygons = [_polygon(xy) for xy in objects]
    return polygons_to_labels(polygons, shape)


def _polygon(xy) -> np.ndarray:
    a = np.asarray(xy, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2 or len(a) < 3 or not np.isfinite(a).all():
        raise InputError("an outline must be at least 3 finite [x, y] points")
    return a


def merge(objects: list, shape: tuple[int, int]) -> list[list[float]]:
    """One outline covering two or more particles (joined across a small gap, else by their convex hull)."""
    from skimage.morphology import convex_hull_image, disk

    if len(objects) < 2:
        raise InputError("merge needs two outlines")
    union = fill(objects, shape) > 0
    for radius in range(MAX_MERGE_GAP_PX + 1):
        joined = union if radius == 0 else union | ndimage.binary_closing(union, disk(radius))
        if ndimage.label(joined, structure=np.ones((3, 3)))[1] == 1:
            return outlines(joined.astype(np.int32))[0]
    return outlines(convex_hull_image(union).astype(np.int32))[0]


def split(obj, line, shape: tuple[int, int]) -> list[list[list[float]]]:
    """The pieces of one particle cut along the straight line through ``line``'s two points.

    Each side of the line (its extension across the particle) gives its
    connected pieces; a line that misses the particle leaves it whole.
    """
    mask = fill([obj], shape) > 0
    (x1, y1), (x2, y2) = np.asarray(line, dtype=np.float64)
    if np.hypot(x2 - x1, y2 - y1) < 1e-6:
        raise InputError("a split line needs two different points")
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    # side of each pixel centre (ImageJ coordinates: index + 0.5)
    side = (x2 - x1) * (rows + 0.5 - y1) - (y2 - y1) * (cols + 0.5 - x1) > 0
    pieces = np.zeros(shape, np.int32)
    count = 0
    for half in (mask & side, mask & ~side):
        parts, n = ndimage.label(half, structure=np.ones((3, 3)))
        pieces[parts > 0] = parts[parts > 0] + count
        count += n
    return outlines(pieces)


def annotation_stem(name: str) -> str:
    """The image stem an annotation file belongs to: ``a_RoiSet.zip``, ``a.roi``, ``a_masks.png`` -> ``a``."""
    from micrometry.particles.training_data import MASK_STEM_ENDINGS, ROISET_ENDINGS

    for ending in (*ROISET_ENDINGS, ".roi"):
        if name.endswith(ending):
            return name[: -len(ending)]
    stem = Path(name).stem
    for ending in MASK_STEM_ENDINGS:
        if ending and stem.endswith(ending):
            return stem[: -len(ending)]
    return stem


def safe_name(name: str) -> str:
    """An uploaded file's base name, safe as a file name in the workspace."""
    base = Path(str(name).replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip(" .")
    if not base:
        raise InputError(f"unusable file name {name!r}")
    return base


class Corrections:
    """One workspace: the images opened, the training data saved, the fine-tuning run.

    Parameters
    ----------
    workspace : path
        Folder for uploads, training data and runs (created).
    segmenter : callable
        Returns the server's particle segmenter (used until a fine-tuned model exists).
    limits : Limits
    """

    def __init__(self, workspace: str | Path, segmenter, limits: Limits | None = None):
        self.workspace = Path(workspace)
        self.uploads = self.workspace / "uploads"
        self.training = self.workspace / "training"
        self.runs = self.workspace / "runs"
        for folder in (self.uploads, self.training / "images", self.training / "masks", self.runs):
            folder.mkdir(parents=True, exist_ok=True)
        self.base_segmenter = segmenter
        self.limits = limits or Limits()
        self.model: Path | None = None  # the fine-tuned run, once one finished
        self._tuned = None
        self._job: dict | None = None
        self._lock = threading.Lock()

    # -- outlines ----------------------------------------------------------------
    def segmenter(self):
        if self.model is None:
            return self.base_segmenter()
        with self._lock:
            if self._tuned is None or self._tuned[0] != self.model:
                from micrometry.particles.models.base import load_particle_model
                from micrometry.web.services import bounded_tiles, watch_modules

                tuned = bounded_tiles(load_particle_model(str(self.model)))
                watch_modules(tuned)
                self._tuned = (self.model, tuned)
            return self._tuned[1]

    def model_name(self) -> str:
        return f"fine-tuned ({self.model.name})" if self.model is not None else "the server's model"

    def open(self, files: list[tuple[str, bytes]], annotations: list[tuple[str, bytes]] = ()) -> dict:
        """Keep the images; their outlines from the annotations named like them, else from the model.

        ``annotations`` are label images or ImageJ ROI sets (e.g. a prediction
        folder's ``labels/`` or ``rois/``), matched to the images by stem.
        """
        from micrometry.particles.training_data import annotation_labels

        uploads = expand_uploads(files, self.limits, self.limits.max_particle_images)
        names = [safe_name(name) for name, _ in uploads]
        if len(set(names)) != len(names):
            raise InputError("two images have the same file name")
        for old in self.uploads.iterdir():
            old.unlink()
        given = {}
        for name, data in annotations:
            name = safe_name(name)
            stem = annotation_stem(name)
            path = self.workspace / "annotation" / name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            given[stem] = path
        shown = []
        for name, (_, data) in zip(names, uploads, strict=True):
            check_budget()
            image = decode_image(data, name, self.limits.max_particle_pixels)
            (self.uploads / name).write_bytes(data)
            stem = Path(name).stem
            if stem in given:
                labels = annotation_labels(given[stem], image.shape[:2])
                source = f"from {given[stem].name}"
            else:
                labels = self.segmenter().segment(image).labels
                source = self.model_name()
            shown.append(self._view(name, image, labels, source))
        return {"images": shown, "model": self.model_name()}

    def predict_again(self) -> dict:
        """The opened images segmented again, with the fine-tuned model when there is one."""
        names = sorted(p.name for p in self.uploads.iterdir())
        if not names:
            raise InputError("no images opened yet")
        shown = []
        for name in names:
            check_budget()
            image = decode_image((self.uploads / name).read_bytes(), name, self.limits.max_particle_pixels)
            shown.append(self._view(name, image, self.segmenter().segment(image).labels, self.model_name()))
        return {"images": shown, "model": self.model_name()}

    @staticmethod
    def _view(name: str, image: np.ndarray, labels: np.ndarray, source: str) -> dict:
        from micrometry.web.services import png_data_url

        return {
            "name": name,
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "image": png_data_url(display_png(image)),
            "objects": outlines(labels),
            "source": source,
        }

    def edit(self, op: str, width: int, height: int, objects: list, line=None) -> dict:
        """Merge outlines, or split one along a line; the new outlines."""
        shape = (int(height), int(width))
        if not (0 < shape[0] <= 20000 and 0 < shape[1] <= 20000):
            raise InputError("bad image size")
        if op == "merge":
            return {"objects": [merge(objects, shape)]}
        if op == "split":
            if len(objects) != 1 or line is None:
                raise InputError("split needs one outline and a line")
            return {"objects": split(objects[0], line, shape)}
        raise InputError(f"unknown edit {op!r} (merge, split)")

    # -- training data -------------------------------------------------------------
    def save(self, images: list[dict]) -> dict:
        """Write the corrected outlines of opened images as training data (images/ + masks/)."""
        if not images:
            raise InputError("nothing to save")
        particles = 0
        for item in images:
            name = safe_name(item.get("name", ""))
            source = self.uploads / name
            if not source.is_file():
                raise InputError(f"{name}: not among the opened images")
            image = decode_image(source.read_bytes(), name, self.limits.max_particle_pixels)
            labels = fill(item.get("objects", []), image.shape[:2])
            if labels.max() > 65535:
                raise InputError(f"{name}: more than 65535 particles do not fit a 16-bit label image")
            # an image saved earlier under another extension would pair twice
            for old in (self.training / "images").glob(f"{Path(name).stem}.*"):
                old.unlink()
            (self.training / "images" / name).write_bytes(source.read_bytes())
            write_image(self.training / "masks" / f"{Path(name).stem}.png", labels.astype(np.uint16))
            particles += int(len(np.unique(labels[labels > 0])))
        total = len(list((self.training / "masks").glob("*.png")))
        return {
            "folder": str(self.training.resolve()),
            "saved": len(images),
            "particles": particles,
            "training_images": total,
        }

    # -- fine-tuning ---------------------------------------------------------------
    def start_finetune(self, minutes: float, threads: int = 1) -> dict:
        """Start ``particles train TRAINING --init shipped`` in the background; its status."""
        if not (MIN_FINETUNE_MIN <= minutes <= MAX_FINETUNE_MIN):
            raise InputError(f"time budget must be {MIN_FINETUNE_MIN:g}-{MAX_FINETUNE_MIN:g} minutes")
        if not any((self.training / "masks").glob("*.png")):
            raise InputError("save corrected outlines first: there is no training data yet")
        with self._lock:
            if self._job is not None and self._job["process"].poll() is None:
                raise InputError("a fine-tuning run is already going")
            out = self.runs / f"finetune-{len(list(self.runs.glob('finetune-*'))) + 1}"
            command = [
                sys.executable,
                "-m",
                "micrometry",
                "particles",
                "train",
                str(self.training),
                "--out",
                str(out),
                "--init",
                "shipped",
                "--time-budget",
                f"{minutes:g}",
                "--threads",
                str(threads),
            ]
            log = open(self.workspace / "finetune.log", "w", encoding="utf-8")  # noqa: SIM115 (the job owns it)
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            self._job = {
                "process": process,
                "out": out,
                "started": time.time(),
                "budget_s": 60 * minutes,
                "log": log,
            }
        return self.finetune_status()

    def finetune_status(self) -> dict:
        """``state`` (idle, running, done, failed), ``progress`` 0-1 and a message."""
        job = self._job
        if job is None:
            return {"state": "idle", "progress": 0.0, "message": "", "model": self.model_name()}
        rc = job["process"].poll()
        elapsed = time.time() - job["started"]
        if rc is None:
            fraction = min(0.99, elapsed / (job["budget_s"] + FINETUNE_OVERHEAD_S))
            return {
                "state": "running",
                "progress": round(fraction, 3),
                "message": f"fine-tuning: {elapsed:.0f} s of about {job['budget_s'] + FINETUNE_OVERHEAD_S:.0f} s",
                "model": self.model_name(),
            }
        job["log"].close()
        lines = (self.workspace / "finetune.log").read_text(encoding="utf-8", errors="replace").splitlines()
        last = next((line for line in reversed(lines) if line.strip()), "")
        if rc == 0 and (job["out"] / "checkpoints").is_dir():
            with self._lock:
                self.model = job["out"]
            return {"state": "done", "progress": 1.0, "message": last, "model": self.model_name()}
        errors = [line for line in lines if line.startswith("error:")]
        return {
            "state": "failed",
            "progress": 1.0,
            "message": errors[-1] if errors else f"fine-tuning failed (exit {rc}): {last}",
            "model": self.model_name(),
        }
