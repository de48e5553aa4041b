"""Annotated particle images in the layouts users keep them in, read as one COCO dataset.

``particles train``, ``info`` and ``convert`` accept any of these folders, told
apart by what they hold (:func:`detect_layout`):

``coco``
    ``annotations.json`` + ``images/`` (or an annotation file): COCO from any
    tool, validated by :func:`~micrometry.io.coco.load_coco`.
``masks``
    ``images/`` + ``masks/`` (or ``labels/``): one label image per image with
    the same stem (``a.tif`` and ``a.png``; ``a_mask``, ``a_masks``,
    ``a_cp_masks``, ``a_label``, ``a_labels`` too), 0 background and one integer
    per object, 8- or 16-bit PNG/TIFF: what StarDist, Cellpose, CellProfiler and
    ilastik users keep, and what micrometry's correction page saves.
``rois``
    ``images/`` + ``rois/``: ImageJ ROI sets, ``STEM_RoiSet.zip`` (or
    ``STEM.zip``), a ``STEM/`` folder of ``.roi`` files or one ``STEM.roi``:
    what ``particles predict`` writes, after editing in Fiji's ROI Manager.
``prediction``
    a ``particles predict`` folder (``prediction.json`` + ``labels/`` +
    ``rois/``) whose outlines were corrected, with its images (``PRED/images/``,
    ``--images``, or the folder it was predicted from). Per image, the file the
    user edited is read: the ROI set when it differs from what predict wrote,
    else the label image.

Every layout becomes a :class:`~micrometry.io.coco.CocoDataset` (RLE masks, one
category) whose ``images_dir`` is where the images are, so training, ``info``
and conversion share one path. Images without annotations (no label image, no
ROI set) are left out with a warning: an image the user has not corrected must
not teach the model that it holds no particles. An image with no particles
needs an all-zero label image.
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

from micrometry.errors import DatasetError, InputError
from micrometry.io.atomic import atomic_dir, write_json
from micrometry.io.coco import (
    ANNOTATIONS_NAME,
    DEFAULT_CATEGORY,
    IMAGES_DIR_NAME,
    CocoDataset,
    labels_to_annotations,
    load_coco,
    resolve_coco,
)
from micrometry.io.image import IMAGE_SUFFIXES, list_images, read_image

MASKS_DIRS = ("masks", "labels")
ROIS_DIR = "rois"
PREDICTION_JSON = "prediction.json"
#: Endings label images carry after the image's stem (Cellpose: ``_cp_masks``; StarDist, CellProfiler, ...).
MASK_STEM_ENDINGS = ("", "_cp_masks", "_masks", "_mask", "_labels", "_label")
ROISET_ENDINGS = ("_RoiSet.zip", "_ROIs.zip", "_rois.zip", ".zip")

#: What :func:`detect_layout` looks for, as the error message names them.
LAYOUTS = {
    "coco": "a COCO folder (annotations.json + images/)",
    "masks": "images/ + masks/ (label images with the images' stems)",
    "rois": "images/ + rois/ (ImageJ ROI sets, STEM_RoiSet.zip or .roi files)",
    "prediction": "a prediction folder (prediction.json + labels/, with its images)",
}


def detect_layout(path: str | Path) -> str:
    """Which layout of :data:`LAYOUTS` the folder (or COCO file) ``path`` holds.

    Raises
    ------
    DatasetError
        No such folder, none of the layouts, or an ambiguous one.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError("no such file or folder", path)
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        raise DatasetError("expected a folder of training data or a COCO .json file", path)
    if (path / ANNOTATIONS_NAME).is_file():
        return "coco"
    if (path / PREDICTION_JSON).is_file() and (path / "labels").is_dir():
        return "prediction"
    images = (path / IMAGES_DIR_NAME).is_dir()
    masks = [name for name in MASKS_DIRS if (path / name).is_dir()]
    if images and masks and (path / ROIS_DIR).is_dir():
        raise DatasetError(
            f"both {masks[0]}/ and {ROIS_DIR}/ beside images/: keep the one with your annotations", path
        )
    if images and masks:
        return "masks"
    if images and (path / ROIS_DIR).is_dir():
        return "rois"
    raise DatasetError("no training data found: looked for " + "; ".join(LAYOUTS.values()), path)


def load_training_set(path: str | Path, images: str | Path | None = None) -> CocoDataset:
    """The annotated images of ``path`` (any layout of :data:`LAYOUTS`) as a COCO dataset.

    Parameters
    ----------
    path : path
        The training data folder (or a COCO annotation file).
    images : path, optional
        The images folder, when it is not where the layout puts it (a COCO
        ``--images`` override; a prediction folder's original images).

    Raises
    ------
    DatasetError
        No known layout, no annotated image, or a label image that does not
        fit its image.
    """
    path = Path(path)
    layout = detect_layout(path)
    if layout == "coco":
        ann_path, img_dir = resolve_coco(path, images)
        return load_coco(ann_path, img_dir)
    images_dir, pairs = annotation_files(path, images)
    return _dataset(path, images_dir, pairs)


# --------------------------------------------------------------------------- pairing


def annotation_files(
    path: str | Path, images: str | Path | None = None
) -> tuple[Path, list[tuple[Path, Path]]]:
    """The images folder and the (image, annotation file) pairs of a masks, rois or prediction layout.

    For a prediction folder the annotation file is the one the user edited
    (see :mod:`this module <micrometry.particles.training_data>`).
    """
    path = Path(path)
    layout = detect_layout(path)
    if layout == "coco":
        raise DatasetError("a COCO folder keeps its annotations in one file", path)
    if layout == "prediction":
        images_dir = prediction_images(path, images)
        return images_dir, _prediction_pairs(path, images_dir)
    images_dir = Path(images) if images is not None else path / IMAGES_DIR_NAME
    folder = next(n for n in MASKS_DIRS if (path / n).is_dir()) if layout == "masks" else ROIS_DIR
    return images_dir, _annotated_pairs(images_dir, path / folder, layout)


def _annotated_pairs(images_dir: Path, folder: Path, layout: str) -> list[tuple[Path, Path]]:
    """(image, annotation file) for every image that has one; the rest are warned about."""
    if not images_dir.is_dir():
        raise DatasetError("images folder not found", images_dir)
    image_paths = list_images(images_dir)
    if not image_paths:
        raise DatasetError("no images (png, jpg, tif, bmp) found", images_dir)
    find = _mask_file if layout == "masks" else _roi_file
    pairs, missing = [], []
    for image in image_paths:
        found = find(folder, image.stem)
        (pairs.append((image, found)) if found is not None else missing.append(image.name))
    if not pairs:
        raise DatasetError(
            f"no image of {images_dir} has annotations here "
            f"({'label images named like the images' if layout == 'masks' else 'STEM_RoiSet.zip or STEM.roi'})",
            folder,
        )
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        warnings.warn(
            f"{folder}: {len(missing)} of {len(image_paths)} images have no annotations and are left out "
            f"({shown}); an image without particles needs an all-zero label image"
        )
    return pairs


def _mask_file(folder: Path, stem: str) -> Path | None:
    for ending in MASK_STEM_ENDINGS:
        for suffix in IMAGE_SUFFIXES:
            candidate = folder / f"{stem}{ending}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _roi_file(folder: Path, stem: str) -> Path | None:
    for ending in (*ROISET_ENDINGS, ".roi"):
        candidate = folder / f"{stem}{ending}"
        if candidate.is_file():
            return candidate
    if (folder / stem).is_dir() and any((folder / stem).glob("*.roi")):
        return folder / stem
    return None


def prediction_images(pred: Path, images: str | Path | None = None) -> Path:
    """Where a prediction folder's images are: ``images``, ``PRED/images/``, or the folder predicted from."""
    if images is not None:
        if not Path(images).is_dir():
            raise DatasetError("images folder not found", images)
        return Path(images)
    if (pred / IMAGES_DIR_NAME).is_dir():
        return pred / IMAGES_DIR_NAME
    from micrometry.io.coco import read_json

    source = read_json(pred / PREDICTION_JSON).get("source")
    if source and Path(source).is_dir():
        return Path(source)
    raise DatasetError(
        "cannot find the images this prediction was made from: copy them to PRED/images/ or pass --images",
        pred,
    )


def _prediction_pairs(pred: Path, images_dir: Path) -> list[tuple[Path, Path]]:
    """(image, the annotation file the user edited) for every labelled image of a prediction folder."""
    from micrometry.io.coco import read_json

    written = read_json(pred / PREDICTION_JSON).get("written", {})
    pairs = _annotated_pairs(images_dir, pred / "labels", "masks")
    chosen = []
    for image, labels in pairs:
        roiset = _roi_file(pred / ROIS_DIR, image.stem) if (pred / ROIS_DIR).is_dir() else None
        record = written.get(labels.name)
        if record is None:  # a folder from before predict kept fingerprints: its label images
            chosen.append((image, labels))
            continue
        labels_edited = record.get("labels_sha1") != file_sha1(labels)
        rois_edited = roiset is not None and record.get("rois_sha1") != file_sha1(roiset)
        if labels_edited and rois_edited:
            raise DatasetError(
                f"both the label image and the ROI set of {image.name} were edited: "
                "delete the one you do not want trained on",
                pred,
            )
        chosen.append((image, roiset if rois_edited else labels))
    return chosen


def file_sha1(path: str | Path) -> str:
    """The SHA-1 of a file's bytes (``prediction.json`` records the files predict wrote by it)."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- reading


def annotation_labels(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The label image an annotation file (label image, ROI set, ``.roi`` or ROI folder) describes."""
    if path.is_dir() or path.suffix.lower() in (".zip", ".roi"):
        return roi_labels(path, shape)
    return mask_labels(path, shape)


def mask_labels(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A label image checked against its image's size; a binary mask is split into connected objects."""
    from micrometry.particles.label_sources import read_label_image

    labels = read_label_image(path)
    if labels.shape != tuple(shape):
        raise DatasetError(
            f"label image is {labels.shape[0]}x{labels.shape[1]} (HxW), its image {shape[0]}x{shape[1]}", path
        )
    if labels.min() < 0:
        raise DatasetError("label image has negative values (0 is background, objects 1, 2, ...)", path)
    values = np.unique(labels)
    if len(values) == 2 and values[1] > 0:
        split, n = ndimage.label(labels > 0)
        if n > 1:
            warnings.warn(
                f"{path}: a binary mask (one value, {n} separate objects): "
                "each connected region is taken as one object (touching objects need distinct labels)"
            )
            return split.astype(np.int32)
    return labels


def roi_labels(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Fill an ImageJ ROI set (``.zip``, ``.roi`` or a folder of ``.roi``) into a label image."""
    from micrometry.particles.rois import polygons_to_labels, read_roi_outlines

    files = sorted(path.glob("*.roi")) if path.is_dir() else [path]
    outlines, skipped = [], []
    for file in files:
        found, left_out = read_roi_outlines(file)
        outlines += found
        skipped += left_out
    if skipped:
        warnings.warn(
            f"{path}: {len(skipped)} ROIs left out: {skipped[0]}" + (" ..." if len(skipped) > 1 else "")
        )
    h, w = shape
    outside = [
        name
        for name, xy in outlines
        if xy[:, 0].max() <= 0 or xy[:, 1].max() <= 0 or xy[:, 0].min() >= w or xy[:, 1].min() >= h
    ]
    if outside:
        warnings.warn(
            f"{path}: {len(outside)} ROIs lie outside the {h}x{w} image (ROI {outside[0]!r}): left out"
        )
    labels = polygons_to_labels([xy for _, xy in outlines], shape)
    return labels


def _dataset(source: Path, images_dir: Path, pairs: list[tuple[Path, Path]]) -> CocoDataset:
    """Validate the (image, annotation) pairs as one COCO dataset."""
    from micrometry.io.coco.dataset import dataset_from_dict

    images, annotations = [], []
    for image_id, (image, annotation) in enumerate(pairs, start=1):
        shape = read_image(image).shape[:2]
        labels = annotation_labels(annotation, shape)
        images.append({"id": image_id, "file_name": image.name, "height": shape[0], "width": shape[1]})
        annotations += labels_to_annotations(labels, image_id, len(annotations) + 1, DEFAULT_CATEGORY["id"])
    data = {"images": images, "annotations": annotations, "categories": [dict(DEFAULT_CATEGORY)]}
    return dataset_from_dict(data, source, images_dir)


# --------------------------------------------------------------------------- writing


def write_coco(dataset: CocoDataset, out: str | Path, overwrite: bool = False) -> Path:
    """Write ``dataset`` as a COCO folder: ``out/annotations.json`` + ``out/images/`` (copies).

    The folder appears whole or not at all.
    """
    if dataset.images_dir is None:
        raise InputError("no images folder is known for this dataset", dataset.path)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / IMAGES_DIR_NAME).mkdir()
        for im in dataset.images:
            target = tmp / IMAGES_DIR_NAME / im.file_name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(dataset.image_path(im.id), target)
        write_json(tmp / ANNOTATIONS_NAME, dataset.to_dict())
    return Path(out)
