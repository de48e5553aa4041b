"""Save labels layers from napari: as an ImageJ ROI set, or as a COCO dataset.

* :func:`write_roiset`: one labels layer -> ``NAME_RoiSet.zip``, one polygon ROI per
  particle named by its label id (what ``particles predict`` writes; Fiji's ROI
  Manager opens it).
* :func:`write_coco`: labels layers (and their image layers) -> a COCO annotation file
  with RLE masks; each labels layer's image (the image layer ``NAME`` of labels
  ``NAME labels``, or the only image of the selection) is written beside it as
  ``images/NAME.png``, so that the folder trains as it is
  (``micrometry particles train FOLDER``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from micrometry.errors import InputError
from micrometry.napari_plugin import image_name


def label_array(data, name: str = "labels") -> np.ndarray:
    """A labels layer's data as a 2-D non-negative integer array."""
    labels = np.asarray(data)
    if labels.ndim != 2:
        raise InputError(f"labels layer {name!r} is {labels.ndim}-D; micrometry writes 2-D label images")
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise InputError(f"labels layer {name!r} must hold non-negative integer ids")
    return labels


def write_roiset(path: str, data, meta: dict) -> list[str]:
    """Write one labels layer as an ImageJ ROI set; returns ``[path]`` (``[]``: no particle to write)."""
    from micrometry.io.atomic import atomic_path
    from micrometry.particles.rois import label_polygons, write_polygons

    polygons = label_polygons(label_array(data, meta.get("name", "labels")))
    if not polygons:
        return []  # ImageJ cannot open an empty ROI set
    with atomic_path(path) as tmp:
        write_polygons(tmp, polygons)
    return [str(path)]


def write_coco(path: str, layer_data: list[tuple]) -> list[str]:
    """Write labels layers as COCO annotations (RLE) at ``path`` and their images to ``images/``.

    Returns every file written, the annotation file first.
    """
    from micrometry.io.atomic import write_json
    from micrometry.io.coco import DEFAULT_CATEGORY, IMAGES_DIR_NAME, labels_to_annotations

    path = Path(path)
    images = {meta.get("name", ""): data for data, meta, kind in layer_data if kind == "image"}
    labelled = [(meta.get("name", "labels"), data) for data, meta, kind in layer_data if kind == "labels"]
    if not labelled:
        raise InputError("select at least one labels layer to write as COCO")
    coco: dict = {"images": [], "annotations": [], "categories": [dict(DEFAULT_CATEGORY)]}
    written: list[Path] = []
    for image_id, (name, data) in enumerate(labelled, start=1):
        labels = label_array(data, name)
        stem = image_name(name)
        image = images.get(stem, next(iter(images.values())) if len(images) == 1 == len(labelled) else None)
        file_name = f"{stem}.png"
        if image is not None:
            written.append(_write_image(path.parent / IMAGES_DIR_NAME / file_name, image, labels.shape, name))
        h, w = labels.shape
        coco["images"].append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        coco["annotations"] += labels_to_annotations(labels, image_id, len(coco["annotations"]) + 1)
    write_json(path, coco)
    return [str(path), *map(str, written)]


def _write_image(path: Path, data, shape: tuple[int, int], labels: str) -> Path:
    """An image layer as a PNG micrometry reads back: uint8/uint16 gray or uint8 RGB."""
    from micrometry.io.image import float_to_u16, write_image

    image = np.asarray(data)
    if image.shape[:2] != shape:
        raise InputError(f"image {image.shape[:2]} and labels layer {labels!r} {shape} differ in size")
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    if rgb and image.dtype == np.uint8:
        image = image[..., :3]
    elif rgb or image.dtype not in (np.uint8, np.uint16):  # float, int32, 16-bit colour: 16-bit gray
        image = float_to_u16(image[..., :3].mean(axis=-1) if rgb else image)
    return write_image(path, image)
