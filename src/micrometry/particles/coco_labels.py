"""COCO instance or results files as label images, for measuring.

Reading and validating COCO is :mod:`micrometry.io.coco`'s job; this module only
turns what it returns into one label image per image.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from micrometry.errors import DatasetError
from micrometry.io.coco import load_coco, load_results, read_json, rle_to_mask

if TYPE_CHECKING:
    from micrometry.particles.measure import LabelImage

IMAGES_JSON_NAME = "images.json"


def coco_label_images(
    path: str | Path, images_json: str | Path | None = None, min_score: float = 0.0
) -> tuple[int, Iterator["LabelImage"]]:
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
            raise DatasetError(f"a results file needs its image list: pass --images-json (no {IMAGES_JSON_NAME} "
                               "beside it)", path)
    dataset = load_coco(images_json, check_files=False)
    results = load_results(path, dataset)
    return len(dataset.images), _result_labels(dataset, results, min_score, path)


def _instance_labels(dataset) -> Iterator["LabelImage"]:
    from micrometry.particles.measure import LabelImage

    for im in dataset.images:
        yield LabelImage(Path(im.file_name).stem, dataset.labels(im.id))


def _result_labels(dataset, results: list[dict], min_score: float, path: Path) -> Iterator["LabelImage"]:
    from micrometry.particles.measure import LabelImage

    by_image: dict[int, list[dict]] = {im.id: [] for im in dataset.images}
    for rec in results:
        if rec["score"] >= min_score:
            if "segmentation" not in rec:
                raise DatasetError(f"detection on image {rec['image_id']} has a box but no mask", path)
            by_image[rec["image_id"]].append(rec)
    for im in dataset.images:
        labels = np.zeros((im.height, im.width), np.int32)
        ranked = sorted(by_image[im.id], key=lambda r: -r["score"])
        for i, rec in enumerate(ranked, start=1):
            mask = rle_to_mask(rec["segmentation"])
            labels[mask & (labels == 0)] = i
        yield LabelImage(Path(im.file_name).stem, labels)
