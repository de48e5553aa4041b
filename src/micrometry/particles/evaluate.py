"""Score instance segmentations: COCO AP (with enough detections) and instance matching.

Two complementary views:

* **COCO AP** (segm and bbox) from pycocotools' accumulated precision/recall
  arrays, with ``maxDets`` high enough for every image: 300, or 1.5 times the
  most particles the truth has in one image when that is more (crowded
  suspensions hold 400+). pycocotools' own ``summarize()`` hard-codes
  ``maxDets=100`` for the headline AP, which silently truncates crowded
  images, so the figures are read from ``eval.eval['precision']`` and
  ``['recall']`` here instead.
* **Instance matching** as StarDist and Cellpose report it: at each IoU
  threshold 0.5..0.9, predictions (with score >= ``match_score``) and ground
  truth objects of an image are paired one-to-one by the Hungarian algorithm
  on IoU; TP/FP/FN summed over the dataset give precision, recall, F1, the
  mean IoU of matched pairs and the panoptic quality.

Crowd (``iscrowd``) ground truth is ignored as COCO does; in matching, a
prediction lying mostly (> 50 % of its area) inside crowd regions is ignored.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from micrometry.io.coco import CocoDataset, compressed_rle, load_coco, load_results, normalize_results

MATCH_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "ARs", "ARm", "ARl")
#: Fewest detections per image that COCO AP considers by default.
MIN_MAX_DETS = 300


def most_particles_per_image(gt: CocoDataset) -> int:
    """The largest number of (non-crowd) true particles in one image."""
    counts = Counter(a.image_id for a in gt.all_annotations() if not a.iscrowd)
    return max(counts.values(), default=0)


def auto_max_dets(most_particles: int) -> int:
    """Detections per image for COCO AP: 300, or 1.5x the most true particles in one image when more.

    A cap below an image's particle count bounds recall, and so AP, whatever the
    model does; 1.5x leaves room for the false positives every model makes.
    """
    return max(MIN_MAX_DETS, math.ceil(1.5 * most_particles))


def evaluate(
    results: list[dict] | str | Path,
    gt: CocoDataset | str | Path,
    max_dets: int | None = None,
    match_score: float = 0.5,
    thresholds: tuple[float, ...] = MATCH_THRESHOLDS,
) -> dict:
    """Evaluate predictions against ground truth.

    Parameters
    ----------
    results : list of dict, or path
        COCO results (``image_id``, ``segmentation`` RLE or polygons,
        ``bbox``, ``score``), or a results JSON file.
    gt : CocoDataset or path
        Ground truth annotations (e.g. ``TRUTH/test_annotations.json``).
    max_dets : int or None
        Detections per image considered by COCO AP/AR (highest scores first);
        None: :func:`auto_max_dets`. A value below the most true particles in
        one image is allowed (to reproduce a standard) but warns: it caps AP.
    match_score : float
        Minimum score of a prediction taking part in instance matching.
    thresholds : tuple of float
        IoU thresholds of instance matching.

    Returns
    -------
    dict
        ``{"segm": {AP, AP50, AP75, APs, APm, APl, AR, ARs, ARm, ARl},
        "bbox": {...}, "matching": [{"iou", "tp", "fp", "fn", "precision",
        "recall", "f1", "mean_matched_iou", "panoptic_quality"}, ...], counts}``.
        A figure that is undefined (no ground truth in an area range) is None.
    """
    if not isinstance(gt, CocoDataset):
        gt = load_coco(gt)
    if isinstance(results, list):
        results = normalize_results(results, gt)  # polygons, uncompressed RLE, missing boxes
    else:
        results = load_results(results, gt)
    most = most_particles_per_image(gt)
    if max_dets is None:
        max_dets = auto_max_dets(most)
    elif max_dets < most:
        warnings.warn(
            f"maxDets={max_dets} is below the {most} true particles of the most crowded image: "
            "recall and AP are capped whatever the model finds (leave --max-dets out for automatic)"
        )
    gt_dict = gt.to_dict()
    out = {
        "images": len(gt.images),
        "gt_instances": sum(1 for a in gt.all_annotations() if not a.iscrowd),
        "pred_instances": len(results),
        "max_dets": max_dets,
        "most_particles_per_image": most,
        "segm": coco_ap(results, gt_dict, "segm", max_dets),
        "bbox": coco_ap(results, gt_dict, "bbox", max_dets),
        "match_score": match_score,
        "matching": instance_matching(results, gt, match_score, thresholds),
    }
    return out


def coco_ap(results: list[dict], gt_dict: dict, iou_type: str, max_dets: int) -> dict:
    """COCO AP/AR figures at ``max_dets`` detections per image, read from the accumulated arrays."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    has_gt = any(not a.get("iscrowd", 0) for a in gt_dict["annotations"])
    if not results:
        # pycocotools cannot load an empty result list; nothing found scores 0 (or is undefined without truth)
        return {k: (0.0 if has_gt else None) for k in COCO_KEYS}
    # segm: leave the box out so that pycocotools takes each detection's area from its mask (for APs/m/l);
    # bbox: leave the mask out so that area and IoU come from the box.
    key = "segmentation" if iou_type == "segm" else "bbox"
    dets = [
        {"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"], key: r[key]}
        for r in results
        if key in r
    ]
    if not dets:
        return {k: None for k in COCO_KEYS}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.params.maxDets = sorted({1, 10, 100, int(max_dets)})
        ev.evaluate()
        ev.accumulate()
    return read_coco_arrays(ev, int(max_dets))


def read_coco_arrays(ev, max_dets: int) -> dict:
    """AP/AR figures from an accumulated ``COCOeval`` at ``max_dets`` (what ``summarize`` would print)."""
    precision = ev.eval["precision"]  # [T iou, R recall, K category, A area, M maxDets]
    recall = ev.eval["recall"]  # [T, K, A, M]
    iou_thrs = ev.params.iouThrs
    m = ev.params.maxDets.index(max_dets)
    areas = {"": 0, "s": 1, "m": 2, "l": 3}  # ev.params.areaRngLbl: all, small, medium, large

    def mean_valid(values: np.ndarray) -> float | None:
        valid = values[values > -1]
        return float(valid.mean()) if valid.size else None

    def at_iou(t: float) -> int:
        return int(np.flatnonzero(np.isclose(iou_thrs, t))[0])

    out = {}
    for suffix, a in areas.items():
        out[f"AP{suffix}"] = mean_valid(precision[:, :, :, a, m])
    out["AP50"] = mean_valid(precision[at_iou(0.5), :, :, 0, m])
    out["AP75"] = mean_valid(precision[at_iou(0.75), :, :, 0, m])
    for suffix, a in areas.items():
        out[f"AR{suffix}"] = mean_valid(recall[:, :, a, m])
    return {k: out[k] for k in COCO_KEYS}


def _rles(records: list[dict], h: int, w: int) -> list[dict]:
    return [compressed_rle(r, h, w) for r in records]


def instance_matching(
    results: list[dict],
    gt: CocoDataset,
    match_score: float = 0.5,
    thresholds: tuple[float, ...] = MATCH_THRESHOLDS,
) -> list[dict]:
    """StarDist-style matching figures per IoU threshold, summed over all images."""
    from pycocotools import mask as mask_utils

    by_image: dict[int, list[dict]] = {}
    for r in results:
        if r["score"] >= match_score and "segmentation" in r:
            by_image.setdefault(r["image_id"], []).append(r["segmentation"])
    totals = {t: {"tp": 0, "fp": 0, "fn": 0, "iou_sum": 0.0} for t in thresholds}
    for im in gt.images:
        anns = gt.annotations[im.id]
        gt_rles = [a.rle for a in anns if not a.iscrowd]
        crowd = [a.rle for a in anns if a.iscrowd]
        preds = _rles(by_image.get(im.id, []), im.height, im.width)
        if preds and crowd:
            # iscrowd=1: IoU becomes intersection / prediction area
            inside = np.asarray(mask_utils.iou(preds, crowd, [1] * len(crowd))).reshape(len(preds), -1).sum(1)
            preds = [p for p, f in zip(preds, inside, strict=False) if f <= 0.5]
        if preds and gt_rles:
            iou = np.asarray(mask_utils.iou(preds, gt_rles, [0] * len(gt_rles))).reshape(
                len(preds), len(gt_rles)
            )
        else:
            iou = np.zeros((len(preds), len(gt_rles)))
        for t in thresholds:
            matched = _match(iou, t)
            tot = totals[t]
            tot["tp"] += len(matched)
            tot["fp"] += len(preds) - len(matched)
            tot["fn"] += len(gt_rles) - len(matched)
            tot["iou_sum"] += float(sum(matched))
    rows = []
    for t in thresholds:
        tp, fp, fn, s = totals[t]["tp"], totals[t]["fp"], totals[t]["fn"], totals[t]["iou_sum"]
        rows.append(
            {
                "iou": t,
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "precision": tp / (tp + fp) if tp + fp else 0.0,
                "recall": tp / (tp + fn) if tp + fn else 0.0,
                "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
                "mean_matched_iou": s / tp if tp else 0.0,
                "panoptic_quality": s / (tp + fp / 2 + fn / 2) if tp + fp + fn else 0.0,
            }
        )
    return rows


def _match(iou: np.ndarray, threshold: float) -> list[float]:
    """IoUs of the one-to-one pairs (IoU >= threshold) maximising the total IoU."""
    if iou.size == 0:
        return []
    eligible = np.where(iou >= threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(eligible, maximize=True)
    return [float(iou[r, c]) for r, c in zip(rows, cols, strict=False) if iou[r, c] >= threshold]


def reconcile_results(
    raw: Any, gt: CocoDataset, pred_images: list[dict] | None = None, source: str | Path | None = None
) -> tuple[list[dict], list[str]]:
    """Raw result records made comparable with ``gt``, and what was done to them (warnings).

    * Every record needs a ``score`` (AP ranks by it): a missing one is an error,
      never a silent 1.0.
    * Image ids: when the results' image list ``pred_images`` (``PRED/images.json``)
      names a file under another id than ``gt`` does, or the results use ids
      ``gt`` does not know, images are matched by file name (and that is said).
    * Categories: results whose category ids match none of the truth's are an
      error; particles are one class, so truth with several categories, or
      results that also carry other categories, are evaluated class-agnostically
      (all as the truth's first category), with a warning.

    Raises
    ------
    InputError
        Not a list, a record without a score, ids that match neither by id nor
        by file name, or categories that match nothing.
    """
    from micrometry.errors import InputError

    where = f"{source}: " if source else ""
    if isinstance(raw, dict) and "annotations" in raw:
        raw = raw["annotations"]
    if not isinstance(raw, list):
        raise InputError(f"{where}COCO results must be a JSON list of detections")
    for index, record in enumerate(raw):
        if isinstance(record, dict) and "score" not in record:
            raise InputError(f"{where}result {index} has no 'score': COCO AP ranks detections by it")
        for key in ("image_id", "category_id"):  # matched and sorted below: must be plain integers first
            if isinstance(record, dict) and key in record and not _is_int(record[key]):
                raise InputError(
                    f"{where}result {index}: '{key}' must be an integer, not {record[key]!r:.40}"
                )
    notes: list[str] = []
    records = [dict(r) for r in raw if isinstance(r, dict)]
    truth_ids = {im.id for im in gt.images}
    by_name = {Path(im.file_name).name: im.id for im in gt.images}
    remap = _id_remap(records, gt, truth_ids, by_name, pred_images)
    if remap is not None:
        mapping, matched = remap
        records = [{**r, "image_id": mapping[r["image_id"]]} for r in records if r.get("image_id") in mapping]
        notes.append(f"results' image ids differ from the truth's: matched {matched} images by file name")
    truth_cats = sorted({int(c["id"]) for c in gt.categories})
    result_cats = sorted({r.get("category_id", truth_cats[0]) for r in records})
    if records and not set(result_cats) & set(truth_cats):
        raise InputError(f"{where}results' category ids {result_cats} match none of the truth's {truth_cats}")
    if len(truth_cats) > 1:
        notes.append(
            f"truth has {len(truth_cats)} categories {truth_cats}: particles are evaluated as one class"
        )
    elif set(result_cats) - set(truth_cats):
        notes.append(
            f"results also carry categories {sorted(set(result_cats) - set(truth_cats))} the truth "
            "does not have: evaluated as one class"
        )
    return [{**r, "category_id": truth_cats[0]} for r in records], notes


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def one_class(gt: CocoDataset) -> CocoDataset:
    """``gt`` with every annotation in its first category (particles are one class)."""
    from dataclasses import replace

    first = gt.categories[0]
    annotations = {
        i: [replace(a, category_id=first["id"]) for a in anns] for i, anns in gt.annotations.items()
    }
    return replace(gt, categories=[first], annotations=annotations)


def _id_remap(
    records: list[dict],
    gt: CocoDataset,
    truth_ids: set[int],
    by_name: dict[str, int],
    pred_images: list[dict] | None,
) -> tuple[dict[int, int], int] | None:
    """``(results id -> truth id, images matched)`` when ids must be matched by file name, else None."""
    from micrometry.errors import InputError

    used = {r.get("image_id") for r in records}
    names = {im.id: Path(im.file_name).name for im in gt.images}
    if pred_images:
        if not all(isinstance(im, dict) and _is_int(im.get("id")) for im in pred_images):
            raise InputError("the results' image list (images.json) has an image without an integer 'id'")
        pred_names = {int(im["id"]): Path(str(im.get("file_name", ""))).name for im in pred_images}
        disagree = any(i in pred_names and names.get(i) != pred_names[i] for i in used)
        if disagree:
            mapping = {i: by_name[n] for i, n in pred_names.items() if n in by_name}
            if not mapping:
                raise InputError("results' images match the truth's neither by id nor by file name")
            return mapping, len({mapping[i] for i in used if i in mapping})
    # without an image list, unknown ids are left to the results check ("points at unknown image")
    return None
