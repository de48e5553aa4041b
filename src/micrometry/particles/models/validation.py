"""Validation metrics of label images, measured by the project evaluator.

Training validates on label images held in memory; this turns them into the
COCO results and ground truth that :func:`micrometry.particles.evaluate.evaluate`
scores (segm AP with maxDets 300, instance matching F1 at IoU 0.5).
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from micrometry.io.coco import (
    CocoAnnotation,
    CocoDataset,
    CocoImage,
    compressed_rle,
    instances_to_results,
    labels_to_rles,
)
from micrometry.particles.evaluate import evaluate


def truth_dataset(truths: list[np.ndarray]) -> CocoDataset:
    """An in-memory COCO dataset whose image ``i + 1`` has the instances of ``truths[i]``."""
    images, annotations, next_id = [], {}, 1
    for image_id, labels in enumerate(truths, start=1):
        h, w = labels.shape
        images.append(CocoImage(image_id, f"{image_id}.png", h, w))
        annotations[image_id] = []
        for rle in labels_to_rles(labels):
            packed = compressed_rle(rle, h, w)
            if mask_utils.area(packed) == 0:
                continue
            annotations[image_id].append(
                CocoAnnotation(
                    next_id,
                    image_id,
                    1,
                    rle,
                    packed,
                    [float(v) for v in mask_utils.toBbox(packed)],
                    float(mask_utils.area(packed)),
                )
            )
            next_id += 1
    return CocoDataset(None, None, images, [{"id": 1, "name": "particle"}], annotations)


def evaluate_label_images(
    predicted: list[tuple[np.ndarray, np.ndarray]], truths: list[np.ndarray] | CocoDataset
) -> dict[str, float]:
    """segm AP, AP50, AP75 and F1@0.5 of predicted ``(labels, scores)`` against true label images."""
    gt = truths if isinstance(truths, CocoDataset) else truth_dataset(truths)
    results = []
    for image_id, (labels, scores) in enumerate(predicted, start=1):
        results.extend(instances_to_results(image_id, labels, scores))
    metrics = evaluate(results, gt)
    segm = metrics["segm"]
    return {
        "AP": segm["AP"] or 0.0,
        "AP50": segm["AP50"] or 0.0,
        "AP75": segm["AP75"] or 0.0,
        "F1@0.5": metrics["matching"][0]["f1"] or 0.0,
    }
