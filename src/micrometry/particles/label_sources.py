"""Where the instances to measure come from: each source yields one label image per image.

Sources: a folder of label images (or a prediction folder's ``labels/``), a COCO
instances or results file, or a folder of images segmented by a particle model.
Reading and validating COCO is :mod:`micrometry.io.coco`'s job; this module only
turns what it returns into label images.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from micrometry.errors import DatasetError, ImageReadError, InputError
from micrometry.io.coco import load_coco, load_results, read_json, rle_to_mask
from micrometry.io.image import IMAGE_SUFFIXES, list_images, read_image, read_label_array
from micrometry.particles.reliability import assess_reliability

IMAGES_JSON_NAME = "images.json"


@dataclass
class LabelImage:
    """One image's instances as a label image."""

    name: str
    labels: np.ndarray
    path: Path | None = None  # the file it was read from, when one (its metadata may calibrate it)
    # the segmentation's verdict (micrometry.particles.reliability) when the source knows it
    reliable: bool | None = None
    reason: str = ""
    scale_bar: dict | None = None  # --pixel-size auto: the image's scale bar record (io.scalebar)


#: Written by ``particles predict`` beside its results: per image the particles, the verdict, warnings.
PREDICTION_JSON = "prediction.json"


def saved_reliability(folder: str | Path) -> dict[str, tuple[bool, str]]:
    """``{image stem: (reliable, reason)}`` from a prediction folder's ``prediction.json`` (empty without one)."""
    record = Path(folder) / PREDICTION_JSON
    if not record.is_file():
        return {}
    try:
        per_image = read_json(record).get("per_image", [])
    except (DatasetError, AttributeError):
        return {}
    return {
        Path(str(p["file"])).stem: (bool(p["reliable"]), str(p.get("reason", "")))
        for p in per_image
        if isinstance(p, dict) and "file" in p and "reliable" in p
    }


def with_saved_reliability(
    items: Iterator[LabelImage], verdicts: dict[str, tuple[bool, str]]
) -> Iterator[LabelImage]:
    """``items`` with the verdicts of :func:`saved_reliability` attached (by image stem)."""
    for item in items:
        if item.name in verdicts:
            item.reliable, item.reason = verdicts[item.name]
        yield item


def iter_label_images(
    source: str | Path, images_json: str | Path | None = None, min_score: float = 0.0
) -> tuple[int, Iterator[LabelImage]]:
    """Find the instances in ``source`` and yield them as label images.

    Parameters
    ----------
    source : path
        A folder of label images; a prediction folder (``PRED/labels/``); or a
        COCO instances/results JSON file.
    images_json : path, optional
        COCO ``images`` list for a results file (default: ``images.json`` beside it).
    min_score : float
        Results files: ignore detections scoring below this.

    Returns
    -------
    (int, iterator)
        The number of images and a lazy iterator over them.
    """
    source = Path(source)
    if not source.exists():
        raise InputError("no such file or folder", source)
    if source.is_file():
        if source.suffix.lower() in IMAGE_SUFFIXES:  # one label image
            return 1, iter([LabelImage(source.stem, read_label_image(source), source)])
        if source.suffix.lower() != ".json":
            raise InputError("expected a COCO .json file, a label image or a folder of label images", source)
        count, items = coco_label_images(source, images_json, min_score)
        return count, with_saved_reliability(items, saved_reliability(source.parent))
    folder = source / "labels" if (source / "labels").is_dir() else source
    paths = list_images(folder)
    if not paths:
        raise DatasetError("no label images (.png/.tif) found", folder)
    items = (LabelImage(p.stem, _refuse_photo(read_label_image(p), p), p) for p in paths)
    return len(paths), with_saved_reliability(
        items, saved_reliability(folder) or saved_reliability(folder.parent)
    )


#: Label images repeat their neighbour's value except on particle outlines; photos (noise, shading) rarely do.
PHOTO_MAX_EQUAL = 0.75


def equal_neighbour_fraction(image: np.ndarray) -> float:
    """Fraction of horizontally and vertically adjacent pixel pairs with the same value."""
    a = np.asarray(image)
    if a.ndim != 2 or a.size < 2:
        return 1.0
    pairs = (a[:, 1:] == a[:, :-1]).sum() + (a[1:, :] == a[:-1, :]).sum()
    total = a[:, 1:].size + a[1:, :].size
    return float(pairs / max(total, 1))


def looks_like_photo(image: np.ndarray) -> bool:
    """True for a gray photo (noise, shading), False for a label image of particle ids."""
    return equal_neighbour_fraction(image) < PHOTO_MAX_EQUAL


def _refuse_photo(labels: np.ndarray, path: Path) -> np.ndarray:
    if looks_like_photo(labels):
        raise ImageReadError(
            f"looks like a photo, not a label image ({100 * equal_neighbour_fraction(labels):.0f} % "
            "of neighbouring pixels equal): pass --model shipped to segment it, or label images",
            path,
        )
    return labels


def segmented_label_images(
    folder: str | Path, model: str | Path | None, scale_bars: bool = False
) -> tuple[int, Iterator[LabelImage]]:
    """Segment every image of ``folder`` with a particle model; yield its label images.

    ``model`` is what ``micrometry particles predict --model`` accepts
    (``shipped``, a built-in name, a run or an exported model folder). Files
    that cannot be read, and label images (which a model would segment into
    nonsense), are skipped with a warning. With ``scale_bars`` each image's
    scale bar is read (refused when unsure) and its data bar left out of the
    segmentation.
    """
    from micrometry.particles.models import load_particle_model

    paths = list_images(folder)
    if not paths:
        raise DatasetError("no images found", folder)
    segmenter = load_particle_model(model)
    return len(paths), _segment_each(paths, segmenter, scale_bars)


def _segment_each(paths: list[Path], segmenter, scale_bars: bool = False) -> Iterator[LabelImage]:
    from micrometry.particles.databar import band_of, scale_bar_record, segment_without_bar

    skipped = 0
    for p in paths:
        try:
            image = read_image(p)
        except ImageReadError as exc:
            warnings.warn(f"skipped: {exc}")
            skipped += 1
            continue
        if not looks_like_photo(image):
            warnings.warn(
                f"{p}: skipped: looks like a label image, not a photo (measure label images without --model)"
            )
            skipped += 1
            continue
        bar = scale_bar_record(image, p) if scale_bars else None
        found = (
            segmenter.segment(image) if bar is None else segment_without_bar(segmenter, image, band_of(bar))
        )
        for line in (getattr(found, "info", None) or {}).get("warnings", []):
            warnings.warn(f"{p.name}: {line}")
        verdict = assess_reliability(found.labels, found.scores, found.info)
        yield LabelImage(p.stem, found.labels.astype(np.int32), p, verdict.reliable, verdict.reason, bar)
    if skipped:
        warnings.warn(f"{skipped} of {len(paths)} files skipped")


def read_label_image(path: Path) -> np.ndarray:
    """Read a label image as int32 ids; refuse colour images, which cannot hold particle ids.

    Ids above 65535 (uint32 label images of crowded scenes) are kept; negative
    ids and ids beyond int32 are refused rather than wrapped.
    """
    labels = read_label_array(path)
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int32).max):
        raise ImageReadError(
            f"label ids must lie in 0..{np.iinfo(np.int32).max}, found {labels.min()}..{labels.max()}", path
        )
    return labels.astype(np.int32)


# --------------------------------------------------------------------------- COCO


def coco_label_images(
    path: str | Path, images_json: str | Path | None = None, min_score: float = 0.0
) -> tuple[int, Iterator[LabelImage]]:
    """Label images from a COCO instances file or a COCO results file.

    Parameters
    ----------
    path : path
        An instances file (``{"images", "annotations", ...}``) or a results file
        (a JSON list of detections, as written by ``micrometry particles predict``).
    images_json : path, optional
        For a results file: the COCO file listing its images (ids, names, sizes).
        Default: ``images.json`` beside the results file.
    min_score : float
        For a results file: detections scoring below are ignored.

    Returns
    -------
    (int, iterator of LabelImage)
        Images in file order. Overlapping detections are resolved in favour of
        the higher score (each pixel belongs to one particle); instance files
        keep their annotation order (:meth:`CocoDataset.labels`).
    """
    path = Path(path)
    data = read_json(path)
    if isinstance(data, dict) and "images" in data:
        dataset = load_coco(path, check_files=False)
        return len(dataset.images), _instance_labels(dataset)
    if images_json is None:
        images_json = path.parent / IMAGES_JSON_NAME
        if not images_json.is_file():
            raise DatasetError(
                f"a results file needs its image list: pass --images-json (no {IMAGES_JSON_NAME} beside it)",
                path,
            )
    dataset = load_coco(images_json, check_files=False)
    results = load_results(path, dataset)
    return len(dataset.images), _result_labels(dataset, results, min_score, path)


def _instance_labels(dataset) -> Iterator[LabelImage]:
    for im in dataset.images:
        hidden: list[int] = []
        labels = dataset.labels(im.id, hidden=hidden)
        warn_hidden(labels, hidden, im.file_name)
        yield LabelImage(Path(im.file_name).stem, labels)


# An annotation this much of its image is a frame, a background or a mistake, not a particle.
WHOLE_IMAGE_FRACTION = 0.9


def warn_hidden(labels: np.ndarray, hidden: list[int], name: str) -> None:
    """Warn when masks painted into one label image hide others, or one covers (nearly) the whole image.

    A label image holds one id per pixel: a mask entirely under earlier ones
    is not measured, which must not pass silently.
    """
    counts = np.bincount(labels.ravel(), minlength=1)[1:]
    large = np.flatnonzero(counts >= WHOLE_IMAGE_FRACTION * labels.size) + 1
    if large.size:
        warnings.warn(
            f"{name}: mask {int(large[0])} covers {100 * counts[large[0] - 1] / labels.size:.0f} % of the image "
            "(a background or frame annotation?); it is measured as one particle"
        )
    if hidden:
        warnings.warn(
            f"{name}: {len(hidden)} mask(s) lie entirely under earlier ones (e.g. mask {hidden[0]}) "
            "and are not measured"
        )


def _result_labels(dataset, results: list[dict], min_score: float, path: Path) -> Iterator[LabelImage]:
    by_image: dict[int, list[dict]] = {im.id: [] for im in dataset.images}
    for rec in results:
        if rec["score"] >= min_score:
            if "segmentation" not in rec:
                raise DatasetError(f"detection on image {rec['image_id']} has a box but no mask", path)
            by_image[rec["image_id"]].append(rec)
    for im in dataset.images:
        labels = np.zeros((im.height, im.width), np.int32)
        ranked = sorted(by_image[im.id], key=lambda r: -r["score"])
        hidden = []
        for i, rec in enumerate(ranked, start=1):
            mask = rle_to_mask(rec["segmentation"])
            visible = mask & (labels == 0)
            labels[visible] = i
            if mask.any() and not visible.any():
                hidden.append(i)
        warn_hidden(labels, hidden, im.file_name)
        yield LabelImage(Path(im.file_name).stem, labels)
