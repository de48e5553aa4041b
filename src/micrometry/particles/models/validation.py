"""Validation metrics for label images (segm AP, AP50, AP75, F1@0.5).

INTERIM: computed with pycocotools here until the project evaluator
(``micrometry.particles.evaluate``) is merged; then this delegates to it.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from micrometry.io.coco import labels_to_rles


def _rles(labels: np.ndarray) -> list[dict]:
    return [{**r, "counts": r["counts"].encode("ascii")} for r in labels_to_rles(labels)]


def evaluate_label_images(predicted: list[tuple[np.ndarray, np.ndarray]], truths: list[np.ndarray]) -> dict:
    """Metrics of predicted (labels, scores) pairs against true label images."""
    images, gts, dts = [], [], []
    f1_tp = f1_fp = f1_fn = 0
    for image_id, ((labels, scores), truth) in enumerate(zip(predicted, truths), start=1):
        h, w = truth.shape
        images.append({"id": image_id, "height": h, "width": w, "file_name": f"{image_id}.png"})
        gt_rles, dt_rles = _rles(truth), _rles(labels)
        for r in gt_rles:
            gts.append({"id": len(gts) + 1, "image_id": image_id, "category_id": 1, "segmentation": r,
                        "area": float(mask_utils.area(r)), "bbox": list(mask_utils.toBbox(r)), "iscrowd": 0})
        for r, s in zip(dt_rles, scores):
            dts.append({"image_id": image_id, "category_id": 1, "segmentation": r, "score": float(s),
                        "area": float(mask_utils.area(r)), "bbox": list(mask_utils.toBbox(r))})
        if gt_rles and dt_rles:
            iou = mask_utils.iou(dt_rles, gt_rles, [0] * len(gt_rles))
            tp = _greedy_matches(np.asarray(iou), 0.5)
        else:
            tp = 0
        f1_tp += tp
        f1_fp += len(dt_rles) - tp
        f1_fn += len(gt_rles) - tp
    f1 = 2 * f1_tp / max(2 * f1_tp + f1_fp + f1_fn, 1)
    if not dts or not gts:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "F1@0.5": f1}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": gts, "categories": [{"id": 1, "name": "particle"}]}
        gt.createIndex()
        dt = gt.loadRes(dts)
        ev = COCOeval(gt, dt, "segm")
        ev.params.maxDets = [1, 10, 1000]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, 0, 0, -1]  # (iou, recall), all areas, max dets
    ap = [float(np.mean(p[p > -1])) if (p > -1).any() else 0.0 for p in precision]
    return {"AP": float(np.mean(ap)), "AP50": ap[0], "AP75": ap[5], "F1@0.5": f1}


def _greedy_matches(iou: np.ndarray, threshold: float) -> int:
    pairs = np.argwhere(iou >= threshold)
    order = np.argsort(-iou[pairs[:, 0], pairs[:, 1]])
    used_d, used_g, n = set(), set(), 0
    for d, g in pairs[order]:
        if d not in used_d and g not in used_g:
            used_d.add(d)
            used_g.add(g)
            n += 1
    return n
