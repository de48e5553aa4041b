"""COCO results (a segmenter's detections): write them, read and validate them.

A results file is a JSON list of ``{"image_id", "category_id", "segmentation":
compressed RLE, "bbox", "score"}``. Files written by other tools may carry
polygons or uncompressed RLE instead, or a box alone; their segmentations are
checked by :func:`~micrometry.io.coco.segmentation.normalize_segmentation`, the
same check ground-truth annotations get, with the same fatal defects and the
same repairs (warned once per kind as a ``CocoRepairWarning``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from micrometry.io.atomic import json_default, write_text
from micrometry.io.coco.dataset import CocoDataset, read_json
from micrometry.io.coco.rle import compressed_rle, json_rle, labels_to_rles
from micrometry.io.coco.segmentation import Checks, is_number, normalize_segmentation


def instances_to_results(
    image_id: int, labels: np.ndarray, scores: np.ndarray, category_id: int = 1
) -> list[dict]:
    """COCO result records (RLE + bbox + score) for one image's label image.

    Label id ``i`` gets ``scores[i - 1]``; ids without pixels are skipped.
    """
    labels = np.asarray(labels)
    if labels.max(initial=0) <= 0:
        return []
    results = []
    for i, rle in enumerate(labels_to_rles(labels), start=1):
        if rle is None:
            continue
        bbox = mask_utils.toBbox(compressed_rle(rle, *rle["size"]))
        results.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_id),
                "segmentation": rle,
                "bbox": [round(float(v), 2) for v in bbox],
                "score": round(float(scores[i - 1]), 5),
            }
        )
    return results


def labels_to_annotations(
    labels: np.ndarray, image_id: int, first_id: int = 1, category_id: int = 1
) -> list[dict]:
    """COCO ground-truth annotations (RLE, area, bbox, ``iscrowd`` 0) of one image's label image.

    Label ids without pixels are skipped; annotation ids run from ``first_id``.
    """
    annotations = []
    for rle in labels_to_rles(np.asarray(labels)):
        if rle is None:
            continue
        encoded = compressed_rle(rle, *rle["size"])
        annotations.append(
            {
                "id": first_id + len(annotations),
                "image_id": int(image_id),
                "category_id": int(category_id),
                "segmentation": rle,
                "area": float(mask_utils.area(encoded)),
                "bbox": [float(v) for v in mask_utils.toBbox(encoded)],
                "iscrowd": 0,
            }
        )
    return annotations


def write_results(path: str | Path, results: Iterable[dict]) -> Path:
    """Write COCO results (a JSON list, one detection per line) atomically; RLE ``counts`` are made strings.

    One compact line per detection rather than an indented tree: the file stays
    readable line by line, and JSON's C encoder writes it (an indent would make
    Python encode every number of thousands of detections).
    """
    lines = []
    for r in results:
        r = dict(r)
        if isinstance(r.get("segmentation"), dict):
            r["segmentation"] = json_rle(r["segmentation"])
        lines.append(json.dumps(r, default=json_default))
    return write_text(path, "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n")


def load_results(path: str | Path, dataset: CocoDataset | None = None) -> list[dict]:
    """Read and validate a COCO results file (a list of detections).

    Every record needs ``image_id``, ``score`` and a ``segmentation`` (RLE or
    polygons) or ``bbox``; with ``dataset``, image ids must be known and
    segmentations must fit their image. ``category_id`` defaults to the
    dataset's first category.
    """
    path = Path(path)
    data = read_json(path)
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]  # a COCO file used as results
    return _normalize(data, dataset, path, stacklevel=3)


def normalize_results(
    data: Any, dataset: CocoDataset | None = None, path: str | Path | None = None
) -> list[dict]:
    """Validate result records and bring them to one form (RLE with string counts, bbox, score).

    See :func:`load_results`; ``path`` only names the source in messages.
    Records whose segmentation leaves nothing (only degenerate polygons, an
    empty mask) are dropped with a warning, as in a ground-truth file.
    """
    return _normalize(data, dataset, path, stacklevel=2)


def _normalize(
    data: Any, dataset: CocoDataset | None, path: str | Path | None, stacklevel: int
) -> list[dict]:
    checks = Checks(path, noun="results")
    if not isinstance(data, list):
        checks.fail("COCO results must be a JSON list of detections")
    images = {im.id: im for im in dataset.images} if dataset is not None else {}
    default_cat = dataset.categories[0]["id"] if dataset is not None else 1
    out = []
    for index, raw in enumerate(data):
        name = f"result {index}"
        if not isinstance(raw, dict):
            checks.fail(f"{name} is not an object")
        image_id = raw.get("image_id")
        if not isinstance(image_id, (int, np.integer)) or isinstance(image_id, bool):
            checks.fail(f"{name} has no integer 'image_id'")
        image_id = int(image_id)
        if dataset is not None and image_id not in images:
            checks.fail(f"{name} points at unknown image {image_id}")
        score = raw.get("score", 1.0)
        if not is_number(score):
            checks.fail(f"{name}: 'score' must be a number")
        category = raw.get("category_id", default_cat)
        if not isinstance(category, (int, np.integer)) or isinstance(category, bool):
            checks.fail(f"{name}: 'category_id' must be an integer, not {category!r}")
        rec = {"image_id": image_id, "category_id": int(category), "score": float(score)}
        seg = raw.get("segmentation")
        if seg is not None:
            im = images.get(image_id)
            size = (im.height, im.width) if im is not None else None
            checked = normalize_segmentation(seg, size, image_id, name, index, checks)
            if checked is None:
                continue
            rec["segmentation"] = json_rle(checked[1])
        bbox = raw.get("bbox")
        if isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox):
            rec["bbox"] = [float(v) for v in bbox]
        elif "segmentation" in rec:
            rec["bbox"] = [float(v) for v in mask_utils.toBbox(checked[1])]
        else:
            checks.fail(f"{name} has neither 'segmentation' nor 'bbox'")
        out.append(rec)
    checks.warn(stacklevel=stacklevel)
    return out
