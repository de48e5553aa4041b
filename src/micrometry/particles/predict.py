"""Segment a folder of images and write COCO results, label images and overlays.

::

    PRED/
      results.json        COCO results: RLE segmentation + bbox + score, category 1
      images.json         the image list the results refer to (unless --images-json was given)
      labels/<stem>.png   16-bit label image per input (0 background, 1..N particles)
      rois/<stem>_RoiSet.zip  the same particles as ImageJ polygon ROIs named by label id (Fiji's ROI Manager)
      overlays/<stem>.png the input with each particle's outline in its own colour
      prediction.json     model, per image: particles, reliable (true/false) and the reason, the diameter and
                          scale used, calibration, warnings;
                          files skipped; the images' calibration (TIFF/OME metadata); for an ensemble or
                          TTA also its members, weights and passes; the images folder (``source``) and
                          the fingerprints of the label images and ROI sets written (``written``: training
                          on a corrected PRED reads the files that changed)

Files that cannot be read, or are not 2-D images (e.g. a 3-D stack), are
skipped with a warning and counted in the record; ``strict`` makes them fatal.

Inputs that would share a label or overlay name (``a.png`` and ``a.tif``) are
refused before any work. The folder appears whole or not at all
(:func:`~micrometry.io.atomic.atomic_dir`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from micrometry.engine import LocalEngine, RayEngine
from micrometry.errors import DatasetError, ImageReadError
from micrometry.io.atomic import atomic_dir, write_json
from micrometry.io.coco import DEFAULT_CATEGORY, instances_to_results, load_coco, write_results
from micrometry.io.image import image_size, list_images, read_calibration, read_image, write_image
from micrometry.io.output_names import unique_output_names
from micrometry.options import AUTO, calibration
from micrometry.particles.databar import SCALE_BAR_SOURCE, band_of, crop, pad, scale_bar_record
from micrometry.particles.measure import PREDICTION_JSON
from micrometry.particles.reliability import assess_reliability
from micrometry.particles.rois import roiset_name, write_roiset
from micrometry.particles.segmenter import Instances, Segmenter
from micrometry.progress import make_progress, track


def image_list(
    images: Path, images_json: Path | None, skipped: list[dict] | None = None
) -> tuple[list[tuple[int, Path]], dict]:
    """(image id, file) pairs to segment and the COCO images dictionary they belong to.

    With ``images_json`` the ids and files come from it (files relative to
    ``images``); otherwise ids 1..N follow the sorted file names. With a
    ``skipped`` list, unreadable files are appended to it (``{"file", "reason"}``)
    instead of raising.
    """
    images = Path(images)
    if images_json is not None:
        folder = images if images.is_dir() else images.parent
        ds = load_coco(images_json, folder, check_files=True)
        pairs = [(im.id, folder / im.file_name) for im in ds.images]
        return pairs, ds.images_dict()
    files = list_images(images)
    if not files:
        raise ImageReadError("no images (png, jpg, tif, bmp) found", images)
    entries, readable = [], []
    for f in files:
        try:
            height, width = image_size(f)
        except ImageReadError as exc:  # the reader's own message (a float TIFF is no reason)
            if skipped is None:
                raise
            skipped.append({"file": str(f), "reason": exc.message})
            continue
        readable.append(f)
        entries.append({"id": len(readable), "file_name": f.name, "height": height, "width": width})
    return list(enumerate(readable, start=1)), {
        "images": entries,
        "annotations": [],
        "categories": [dict(DEFAULT_CATEGORY)],
    }


def inner_boundaries(labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: particle pixels with a 4-neighbour of another value (skimage's
    ``find_boundaries(labels, mode="inner")``, by array shifts)."""
    labels = np.asarray(labels)
    edges = np.zeros(labels.shape, bool)
    rows = labels[1:, :] != labels[:-1, :]
    cols = labels[:, 1:] != labels[:, :-1]
    edges[1:, :] |= rows
    edges[:-1, :] |= rows
    edges[:, 1:] |= cols
    edges[:, :-1] |= cols
    return edges & (labels != 0)


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8: the gray image with each particle's outline in its own colour."""
    gray = np.asarray(image, dtype=np.float32)
    # the display range from a sparse grid of pixels (as the network's normalisation): a full sort costs more
    step = max(1, gray.shape[0] // 512), max(1, gray.shape[1] // 512)
    lo, hi = np.percentile(gray[:: step[0], :: step[1]], [0.5, 99.5])
    gray = np.clip((gray - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    edges = inner_boundaries(labels)
    # a fixed, well-spread palette: the golden-angle hue of each id
    ids = labels[edges]
    hue = (ids * 0.618034) % 1.0
    rgb[edges] = (_hue_to_rgb(hue) * 255).astype(np.uint8)
    return rgb


def _hue_to_rgb(hue: np.ndarray) -> np.ndarray:
    """Saturated colours of the given hues in [0, 1): ``(N, 3)`` in [0, 1]."""
    k = (hue[:, None] * 6 + np.array([5.0, 3.0, 1.0])) % 6
    return 1 - np.clip(np.minimum(k, 4 - k), 0, 1)


@dataclass
class SegmentItem:
    """One image to segment: its COCO id, its path and its label file name in PRED."""

    image_id: int
    path: str
    name: str
    # --pixel-size auto: the image's scale bar record (io.scalebar); a given --pixel-size: (size, unit)
    scale_bar: dict | None = None
    pixel_size: tuple[float, str] | None = None


@dataclass
class ImageSegmentation:
    """What segmenting one image gave (JSON-able: it travels back from a Ray actor).

    Attributes
    ----------
    results : list of dict
        COCO results of its particles.
    count : int
        Particles found.
    seconds : float
        Segmentation time per image of its batch.
    info : dict
        What the segmenter chose (diameter, scale) and its ``warnings``.
    reliability : dict
        The verdict on the segmentation (:meth:`Reliability.record
        <micrometry.particles.reliability.Reliability.record>`: ``reliable``, ``reason``, ``reliability``).
    calibration : (float, str) or None
        Pixel size and unit: given, from the scale bar, or from the image's metadata.
    scale_bar : dict or None
        ``--pixel-size auto``: the scale bar read (label, length, confidence, data-bar rows).
    skipped : str or None
        Why the image was not segmented (unreadable, not 2-D); None when it was.
    """

    results: list[dict] = field(default_factory=list)
    count: int = 0
    seconds: float = 0.0
    info: dict = field(default_factory=dict)
    reliability: dict = field(default_factory=dict)
    calibration: tuple[float, str] | list | None = None
    scale_bar: dict | None = None
    skipped: str | None = None


@dataclass
class PredictionSummary:
    """What ``particles predict`` did: ``prediction.json``'s figures and the time taken.

    Attributes
    ----------
    model : str
    images : int
        Images segmented.
    particles : int
    skipped : list of dict
        Files not segmented, ``{"file", "reason"}``.
    per_image : list of dict
        Per image: file, particles, the diameter and scale used, calibration, warnings.
    warnings : list of str
    calibration : dict or None
        The images' one calibration from their metadata (``pixel_size``, ``unit``, ``source``).
    segment_seconds, seconds_per_image : float
    """

    model: str
    images: int
    particles: int
    skipped: list[dict]
    per_image: list[dict]
    warnings: list[str]
    calibration: dict | None
    segment_seconds: float = 0.0
    seconds_per_image: float = 0.0


class SegmentWorker:
    """Holds a segmenter; segments a batch of images and writes their label and overlay PNGs.

    What a prediction engine (:mod:`micrometry.engine`) runs: in this process,
    or as a Ray actor, one per worker.

    Parameters
    ----------
    segmenter : Segmenter
        The model (shipped to each Ray actor once, when the actor starts).
    folder : str
        The PRED folder under construction (``labels/`` and ``overlays/`` exist).
    write_overlays : bool
        Also write ``overlays/<stem>.png``.
    """

    item_type = SegmentItem
    output_type = ImageSegmentation

    def __init__(self, segmenter: Segmenter, folder: str, write_overlays: bool = True):
        self.segmenter, self.folder, self.write_overlays = segmenter, Path(folder), write_overlays

    def __call__(self, items: list[SegmentItem]) -> list[ImageSegmentation]:
        """One :class:`ImageSegmentation` per item; an image that cannot be read (or is not 2-D) is
        ``skipped`` with the reason."""
        arrays, readable, outputs_by_path = [], [], {}
        for item in items:
            try:
                arrays.append(read_image(item.path))
                readable.append(item)
            except ImageReadError as exc:
                outputs_by_path[item.path] = ImageSegmentation(skipped=str(exc))
        t0 = time.perf_counter()
        # a data bar read by --pixel-size auto is left out: the model sees the image above (below) it
        bands = [band_of(item.scale_bar) if item.scale_bar else None for item in readable]
        inputs = [a if band is None else crop(a, band) for a, band in zip(arrays, bands, strict=True)]
        found: list[Instances] = self.segmenter.segment_batch(inputs) if inputs else []
        found = [
            f if band is None else pad(f, a.shape, band)
            for f, a, band in zip(found, arrays, bands, strict=True)
        ]
        seconds = (time.perf_counter() - t0) / max(len(arrays), 1)
        for item, image, inst in zip(readable, arrays, found, strict=False):
            path = Path(item.path)
            if inst.count > 65535:
                raise DatasetError("more than 65535 particles do not fit a 16-bit label image", path)
            write_image(self.folder / "labels" / item.name, inst.labels.astype(np.uint16))
            write_roiset(self.folder / "rois" / roiset_name(Path(item.name).stem), inst.labels)
            if self.write_overlays:
                # zlib level 1: a fraction of the time of the default level, a few % larger (lossless)
                write_image(self.folder / "overlays" / item.name, overlay(image, inst.labels), png_level=1)
            outputs_by_path[item.path] = ImageSegmentation(
                results=instances_to_results(item.image_id, inst.labels, inst.scores),
                count=inst.count,
                seconds=seconds,
                info=dict(getattr(inst, "info", {}) or {}),
                reliability=assess_reliability(inst.labels, inst.scores, inst.info).record(),
                calibration=_calibration(item, path),
                scale_bar=item.scale_bar,
            )
        return [outputs_by_path[item.path] for item in items]


def _calibration(item: SegmentItem, path: Path) -> tuple[float, str] | None:
    """An image's calibration: the one given, its scale bar's (auto), or its TIFF metadata."""
    if item.pixel_size:
        return tuple(item.pixel_size)
    if item.scale_bar:
        return item.scale_bar["pixel_size"], item.scale_bar["unit"]
    return read_calibration(path)


def read_scale_bars(items: list[SegmentItem]) -> None:
    """``--pixel-size auto``: read each image's scale bar into its item, before any segmentation.

    An image whose scale bar cannot be read with confidence stops the run
    (:class:`~micrometry.io.scalebar.ScaleBarError`); unreadable files are left
    for the worker to skip.
    """
    for item in track(items, "reading scale bars", total=len(items)):
        try:
            image = read_image(item.path)
        except ImageReadError:
            continue
        item.scale_bar = scale_bar_record(image, item.path)


def describe_segmenter(segmenter: Segmenter) -> dict:
    """For an ensemble or TTA: its members, weights and passes (empty for one plain model)."""
    describe = getattr(segmenter, "describe", None)
    return describe() if callable(describe) else {}


def predict_folder(
    segmenter: Segmenter,
    images: Path,
    out: Path,
    images_json: Path | None = None,
    batch_size: int = 4,
    overwrite: bool = False,
    write_overlays: bool = True,
    engine: LocalEngine | RayEngine | None = None,
    strict: bool = False,
    pixel_size: float | str | None = None,
    unit: str | None = None,
) -> PredictionSummary:
    """Segment every image and write the PRED folder; returns what it did.

    ``pixel_size`` (with ``unit``) calibrates every image; ``"auto"`` reads each
    image's scale bar (:mod:`micrometry.io.scalebar`) before any work, refuses
    when unsure, leaves the data bar out of segmentation and stores each
    image's calibration, scale bar and confidence; None uses the images'
    TIFF metadata when they carry it.

    ``engine`` runs the segmentation (:class:`~micrometry.engine.LocalEngine`
    with ``batch_size`` by default; a :class:`~micrometry.engine.RayEngine`
    spreads it over a Ray actor pool); the files written are the same.

    The summary's figures are also ``PRED/prediction.json``'s; every skipped
    file and implausible result is also a ``UserWarning``. With ``strict`` the
    first unreadable file raises instead.
    """
    engine = engine or LocalEngine(batch_size)
    skipped: list[dict] = []
    pairs, images_dict = image_list(Path(images), images_json, None if strict else skipped)
    # two inputs, one label image: refused before any work
    names = unique_output_names([path for _, path in pairs], ".png", images_json or images)
    if strict:  # read every image first: a stack or broken file stops the run before any work
        for _, path in pairs:
            read_image(path)
    if not pairs:
        raise ImageReadError("no readable images", images)
    items = [
        SegmentItem(int(image_id), str(Path(path).resolve()), name)
        for (image_id, path), name in zip(pairs, names, strict=False)
    ]
    if pixel_size == AUTO:
        read_scale_bars(items)
    elif pixel_size is not None:
        size, unit, _ = calibration(float(pixel_size), unit)
        for item in items:
            item.pixel_size = (size, unit)
    outputs: list[ImageSegmentation | None] = [None] * len(items)
    n_objects = 0
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "labels").mkdir()
        (tmp / "rois").mkdir()
        if write_overlays:
            (tmp / "overlays").mkdir()
        worker_kwargs = {
            "segmenter": segmenter,
            "folder": str(tmp.resolve()),
            "write_overlays": write_overlays,
        }
        with make_progress() as progress:
            task = progress.add_task(
                f"segmenting ({segmenter.name}, {engine.name})", total=len(items), info=""
            )
            for index, output in engine.map(SegmentWorker, worker_kwargs, items):
                outputs[index] = output
                n_objects += output.count
                progress.update(task, advance=1, info=f"{n_objects} particles")
        # results in input order, whichever worker finished first
        write_results(tmp / "results.json", [r for output in outputs for r in output.results])
        if images_json is None:
            write_json(tmp / "images.json", images_dict)
        given = "--pixel-size" if pixel_size not in (None, AUTO) else None
        record = prediction_record(segmenter.name, pairs, outputs, skipped, given)
        written = {"source": str(Path(images).resolve()) if Path(images).is_dir() else None}
        written["written"] = written_files(tmp)
        write_json(tmp / PREDICTION_JSON, {**record, **describe_segmenter(segmenter), **written})
    for line in record["warnings"]:
        warnings.warn(line)
    seconds = sum(output.seconds for output in outputs)
    segmented = max(record["images"], 1)
    return PredictionSummary(**record, segment_seconds=seconds, seconds_per_image=seconds / segmented)


def written_files(folder: Path) -> dict[str, dict]:
    """Fingerprints of the label images and ROI sets written, by label file name.

    Training on a corrected prediction folder reads, per image, the file whose
    fingerprint changed (:mod:`micrometry.particles.training_data`).
    """
    from micrometry.particles.training_data import file_sha1

    record = {}
    for labels in sorted((folder / "labels").iterdir()):
        roiset = folder / "rois" / roiset_name(labels.stem)
        record[labels.name] = {
            "labels_sha1": file_sha1(labels),
            "rois_sha1": file_sha1(roiset) if roiset.is_file() else None,
        }
    return record


def prediction_record(
    model: str,
    pairs: list[tuple[int, Path]],
    outputs: list[ImageSegmentation],
    skipped: list[dict],
    given_source: str | None = None,
) -> dict:
    """What ``prediction.json`` holds: per-image counts, sizes and warnings, skipped files, totals,
    and one calibration when the images' metadata agree."""
    per_image, lines = [], []
    skipped = list(skipped)
    segmented = []
    for (image_id, path), output in zip(pairs, outputs, strict=False):
        if output.skipped is not None:
            skipped.append({"file": str(path), "reason": output.skipped})
            continue
        segmented.append((Path(path), output))
        info = output.info
        cal = output.calibration
        reliability = output.reliability
        per_image.append(
            {
                "image_id": int(image_id),
                "file": Path(path).name,
                "particles": output.count,
                **reliability,
                **({"pixel_size": cal[0], "unit": cal[1]} if cal else {}),
                **({"scale_bar": output.scale_bar} if output.scale_bar else {}),
                **{k: v for k, v in info.items() if k != "warnings"},
                "warnings": list(info.get("warnings", [])),
            }
        )
        lines.extend(f"{Path(path).name}: {w}" for w in info.get("warnings", []))
        if reliability and not reliability["reliable"]:
            lines.append(f"{Path(path).name}: unreliable segmentation: {reliability['reason']}")
    empty = [p.name for p, o in segmented if o.count == 0]
    if empty and len(empty) == len(segmented):
        lines.append(
            f"no particles found in any of the {len(segmented)} images: check that the model suits them "
            "(particle size: --diameter; or try --model watershed)"
        )
    elif empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        lines.append(f"no particles found in {len(empty)} of {len(segmented)} images ({shown})")
    found = {tuple(o.calibration) for _, o in segmented if o.calibration}
    calibration = None
    bars = [o.scale_bar for _, o in segmented if o.scale_bar]
    source = given_source or (SCALE_BAR_SOURCE if bars else "image metadata")
    if len(found) == 1 and all(o.calibration for _, o in segmented):
        size, unit = found.pop()
        calibration = {"pixel_size": size, "unit": unit, "source": source}
        if bars:
            calibration["confidence"] = min(b["confidence"] for b in bars)
    elif bars:
        calibration = {"source": source, "per_image": True, "confidence": min(b["confidence"] for b in bars)}
    elif found:
        lines.append("the images declare different (or partial) pixel sizes: measure with --pixel-size")
    lines.extend(f"{Path(s['file']).name}: skipped: {s['reason']}" for s in skipped)
    return {
        "model": model,
        "images": len(per_image),
        "particles": sum(p["particles"] for p in per_image),
        "skipped": skipped,
        "per_image": per_image,
        "warnings": lines,
        "calibration": calibration,
    }
