"""COCO mask encodings: binary masks <-> run-length encoding (RLE), masks -> polygons.

COCO RLE runs down the columns of the whole image, starting with a background
run. It comes in two forms: *uncompressed* (``counts`` a list of integers) and
*compressed* (``counts`` a string). pycocotools works on compressed RLE with
``bytes`` counts; files and result records carry ``str`` counts. Checking that
an RLE read from a file is well formed is :mod:`micrometry.io.coco.segmentation`'s
job, not this module's.
"""

from __future__ import annotations

import warnings

import numpy as np
from pycocotools import mask as mask_utils


def decode_rles(rles: list[dict]) -> np.ndarray:
    """pycocotools' decode of several compressed RLEs: ``(H, W, N)`` uint8, Fortran order.

    pycocotools 2.0.11 calls ``np.array(copy=False)`` on its own buffer, which
    NumPy 2 answers with a DeprecationWarning on every call; it is harmless.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rles)


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode a 2-D boolean mask as compressed COCO RLE with a JSON-ready string ``counts``."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode a COCO RLE (compressed or uncompressed ``counts``) to an ``(H, W)`` bool mask."""
    h, w = rle["size"]
    return decode_rles([compressed_rle(rle, h, w)])[:, :, 0].astype(bool)


def crop_to_rle(crop: np.ndarray, y0: int, x0: int, height: int, width: int) -> dict:
    """Compressed RLE (string counts) of a full ``height x width`` frame holding ``crop`` at (y0, x0).

    COCO RLE runs down the columns of the whole frame; only the columns the
    crop spans carry foreground, so the runs are computed on that full-height
    strip and the empty columns before and after are added to the first and
    last background runs. Much faster than encoding a full frame per object.
    """
    crop = np.asarray(crop, dtype=bool)
    ch, cw = crop.shape
    strip = np.zeros((height, cw), dtype=bool)
    strip[y0 : y0 + ch] = crop
    flat = strip.ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]]))
    if flat[0]:
        counts = np.concatenate([[0], counts])  # COCO counts start with a background run
    counts[0] += x0 * height
    after = (width - x0 - cw) * height
    if len(counts) % 2 == 0:  # ends with foreground: the empty columns after are a new background run
        counts = np.concatenate([counts, [after]]) if after else counts
    else:
        counts[-1] += after
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": [int(c) for c in counts]}, height, width)
    return json_rle(rle)


def labels_to_rles(labels: np.ndarray) -> list[dict | None]:
    """One compressed RLE per label id 1..labels.max() of an ``(H, W)`` label image (None for absent ids).

    All labels in one pass: the runs of equal values down the columns of the
    whole image, grouped by label. A label's RLE counts are then the gaps
    between its runs and the runs themselves (starting with the background
    before its first run), which is what encoding its own mask gives.
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    out: list[dict | None] = [None] * max(int(labels.max(initial=0)), 0)
    if not out:
        return out
    flat = labels.ravel(order="F")
    starts = np.flatnonzero(np.concatenate([[True], flat[1:] != flat[:-1]]))
    ends = np.append(starts[1:], flat.size)
    values = flat[starts]
    inside = values > 0
    order = np.argsort(values[inside], kind="stable")  # by label, each label's runs in image order
    starts, ends, values = starts[inside][order], ends[inside][order], values[inside][order]
    first = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    # per label: 0, start 1, end 1, start 2, ..., end n, frame size; its counts are the differences
    group = np.repeat(np.arange(len(first)), np.diff(np.append(first, len(values))))
    run = np.arange(len(values))
    edges = np.empty(2 * len(values) + 2 * len(first), np.int64)
    edges[2 * run + 2 * group + 1] = starts
    edges[2 * run + 2 * group + 2] = ends
    bounds = np.append(2 * first + 2 * np.arange(len(first)), len(edges))  # each label's slice of edges
    edges[bounds[:-1]] = 0
    edges[bounds[1:] - 1] = flat.size
    counts = np.diff(edges).tolist()
    for k, (at, stop) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)):
        label_counts = counts[at : stop - 1]
        if label_counts[-1] == 0:  # the label's last run ends the frame: no background after it
            label_counts.pop()
        rle = mask_utils.frPyObjects({"size": [h, w], "counts": label_counts}, h, w)
        out[int(values[first[k]]) - 1] = json_rle(rle)
    return out


def compressed_rle(rle: dict, h: int, w: int) -> dict:
    """pycocotools' internal form (bytes ``counts``) of a compressed or uncompressed RLE."""
    counts = rle["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects(rle, h, w)
    return {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def json_rle(rle: dict) -> dict:
    """A compressed RLE with plain-int ``size`` and ``str`` counts, ready for JSON."""
    counts = rle["counts"]
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def polygons_from_mask(mask: np.ndarray, tolerance: float = 0.25, upsample: int = 4) -> list[list[float]]:
    """Outer contours of a binary mask as COCO polygons (pixel-edge coordinates).

    Each connected part gives one polygon. OpenCV traces pixel centres, so the
    mask is first upsampled ``upsample`` times: the traced outline then runs
    within ``1 / (2 * upsample)`` px of the true pixel edges, and a polygon
    rasterised by pycocotools reproduces the mask, one-pixel-thin parts
    included. ``tolerance`` (px) simplifies the outline (Douglas-Peucker).
    Holes cannot be expressed as COCO polygons (use RLE for such masks).
    """
    import cv2

    mask = np.asarray(mask, dtype=np.uint8)
    k = int(upsample)
    up = np.repeat(np.repeat(mask, k, axis=0), k, axis=1)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for c in contours:
        if tolerance > 0:
            c = cv2.approxPolyDP(c, k * tolerance, True)
        if len(c) < 3:
            continue
        # upsampled pixel j has its centre at original coordinate (j + 0.5) / k
        xy = (c.reshape(-1, 2).astype(np.float64) + 0.5) / k
        polygons.append([round(float(v), 3) for v in xy.ravel()])
    return polygons
