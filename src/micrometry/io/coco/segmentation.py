"""The one check of a COCO ``segmentation``, shared by datasets and results.

A segmentation is a list of polygons (``[[x1, y1, x2, y2, ...], ...]``, or one
flat polygon), an uncompressed RLE (``counts`` a list of integers) or a
compressed RLE (``counts`` a string). :func:`normalize_segmentation` checks any
of them against its image's size and returns the same mask as compressed RLE,
or nothing when the object has to be dropped. Ground-truth files
(:func:`~micrometry.io.coco.load_coco`) and detections
(:func:`~micrometry.io.coco.load_results`) both go through it, so both obey the
same rules and report the same messages. New rules about segmentations (for
example, how far outside the image a polygon may reach) belong here.

Hostile or broken files must not exhaust memory: polygons reaching beyond the
image by more than :data:`CLIP_SLACK` are clipped to it *before* rasterising
(a vertex at 4e8 px would otherwise make the rasteriser walk 4e8 px of edge),
outlines longer than an image can hold are refused, and so are image sizes
beyond :data:`MAX_IMAGE_PIXELS`.

Fatal defects raise :class:`~micrometry.errors.DatasetError` through
:meth:`Checks.fail`; repairs are tallied by :meth:`Checks.repaired` and warned
once per kind as a :class:`CocoRepairWarning`.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from pycocotools import mask as mask_utils

from micrometry.errors import DatasetError
from micrometry.geometry import polygon_area
from micrometry.io.coco.rle import compressed_rle, json_rle

# Polygons with less enclosed area (px^2) than this are degenerate.
MIN_POLYGON_AREA = 1e-6

# How far (px) polygon vertices may lie beyond the image edge before they are clipped (and reported).
CLIP_SLACK = 1.0

# Largest image (pixels) a COCO file may describe: PIL's own decompression-bomb limit.
# A mask of it is 179 MB, a label image 716 MB; anything larger is a broken or hostile file.
MAX_IMAGE_PIXELS = 178_956_970

# Longest outline (px, summed over an object's polygons) rasterised; pycocotools needs about
# 50 bytes per pixel of outline, so this bounds one object at about 200 MB. No real object comes
# near it: the longest possible outline in an HxW image is about 4*H*W (a checkerboard).
MAX_OUTLINE_PX = 4_000_000


class CocoRepairWarning(UserWarning):
    """Something in a COCO file was wrong but could be repaired."""


class Checks:
    """Where a check's verdicts go: fatal defects raise, repairs are tallied and warned once per kind.

    Parameters
    ----------
    path : Path or None
        The file being checked; it leads every message.
    noun : str
        What the file's records are called in repair messages ("annotations", "results").
    """

    def __init__(self, path: str | Path | None, noun: str = "annotations"):
        self.path = None if path is None else Path(path)
        self.noun = noun
        self.repairs: dict[str, list[Any]] = defaultdict(list)

    def fail(self, message: str) -> NoReturn:
        raise DatasetError(message, self.path)

    def repaired(self, kind: str, which: Any) -> None:
        self.repairs[kind].append(which)

    def warn(self, stacklevel: int = 2) -> None:
        """One :class:`CocoRepairWarning` per kind of repair, listing the first few records."""
        for kind, which in self.repairs.items():
            shown = ", ".join(str(w) for w in which[:5]) + (
                f", ... ({len(which)} in all)" if len(which) > 5 else ""
            )
            where = f"{self.path}: " if self.path is not None else ""
            warnings.warn(f"{where}{kind}: {shown}", CocoRepairWarning, stacklevel=stacklevel + 1)


def normalize_segmentation(
    seg: Any, size: tuple[int, int] | None, image_id: int | None, name: str, which: Any, checks: Checks
) -> tuple[list | dict, dict] | None:
    """Check one segmentation and decode it to compressed RLE.

    Parameters
    ----------
    seg : object
        The record's ``segmentation`` as read (not None).
    size : (int, int) or None
        ``(height, width)`` of its image. None when the image is unknown (a
        results file read without its ground truth): an RLE then stands on its
        own size, and polygons cannot be rasterised.
    image_id : int or None
        The image's id, for messages.
    name : str
        How messages name the record ("annotation 12", "result 3").
    which : object
        How repair warnings list the record (its id or position).
    checks : Checks
        Receives failures and repairs.

    Returns
    -------
    (segmentation, rle) or None
        ``segmentation`` in the record's own form, cleaned (a list of float
        polygons, or RLE with ``str`` counts); ``rle`` the same mask as
        pycocotools' compressed RLE (``bytes`` counts). None when nothing of the
        object is left (the repair is recorded in ``checks``).
    """
    if isinstance(seg, dict):
        out = _rle(seg, size, image_id, name, checks)
        empty = f"{checks.noun} with an empty mask dropped"
    elif isinstance(seg, list):
        if size is None:
            checks.fail(f"{name}: polygon results need the ground-truth image sizes")
        out = _polygons(seg, size, name, which, checks)
        empty = f"{checks.noun} whose mask lies outside the image were dropped"
    else:
        checks.fail(f"{name}: 'segmentation' must be a list of polygons or an RLE object")
    if out is None:
        return None
    if int(mask_utils.area(out[1])) == 0:
        checks.repaired(empty, which)
        return None
    return out


def _polygons(
    seg: list, size: tuple[int, int], name: str, which: Any, checks: Checks
) -> tuple[list, dict] | None:
    height, width = size
    if seg and all(is_number(v) for v in seg):
        seg = [seg]  # a single flat polygon, as some exporters write
        checks.repaired("flat polygon lists wrapped into a list of polygons", which)
    polygons = []
    for poly in seg:
        if not isinstance(poly, list) or not all(is_number(v) for v in poly):
            checks.fail(f"{name}: polygon is not a flat list of numbers [x1, y1, x2, y2, ...]")
        if len(poly) % 2:
            checks.fail(f"{name}: polygon has an odd number of coordinates ({len(poly)})")
        if (
            len(poly) < 6
            or polygon_area(np.asarray(poly, dtype=np.float64).reshape(-1, 2)) < MIN_POLYGON_AREA
        ):
            checks.repaired("degenerate polygons (fewer than 3 points or no area) dropped", which)
            continue
        polygons.append([float(v) for v in poly])
    if not polygons:
        checks.repaired(f"{checks.noun} with no usable polygon dropped", which)
        return None
    xy = np.concatenate([np.asarray(p).reshape(-1, 2) for p in polygons])
    if (
        (xy < -CLIP_SLACK).any()
        or (xy[:, 0] > width + CLIP_SLACK).any()
        or (xy[:, 1] > height + CLIP_SLACK).any()
    ):
        checks.repaired("polygons reaching outside their image clipped to it", which)
        # clip before rasterising: the rasteriser's memory grows with the outline's length
        box = (-CLIP_SLACK, -CLIP_SLACK, width + CLIP_SLACK, height + CLIP_SLACK)
        clipped = (clip_polygon(np.asarray(p).reshape(-1, 2), box) for p in polygons)
        polygons = [
            c.ravel().tolist() for c in clipped if len(c) >= 3 and polygon_area(c) >= MIN_POLYGON_AREA
        ]
        if not polygons:
            checks.repaired(f"{checks.noun} whose mask lies outside the image were dropped", which)
            return None
    length = sum(outline_length(np.asarray(p).reshape(-1, 2)) for p in polygons)
    limit = min(MAX_OUTLINE_PX, 4 * (height + 2) * (width + 2))
    if length > limit:
        checks.fail(
            f"{name}: polygon outline is {length:.3g} px long, more than a "
            f"{height}x{width} image can hold ({limit:.3g} px)"
        )
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return polygons, rle


def clip_polygon(xy: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Clip a polygon to an axis-aligned box (Sutherland-Hodgman).

    The box is convex, so the result is exactly the part of the polygon
    inside it (possibly with edges along the box's sides).

    Parameters
    ----------
    xy : ndarray
        ``(N, 2)`` vertices (x, y), in order.
    box : (x0, y0, x1, y1)
        The box's corners.

    Returns
    -------
    ndarray
        ``(M, 2)`` vertices of the clipped polygon; ``M < 3`` when nothing is left.
    """
    x0, y0, x1, y1 = box
    # each side of the box as (axis, bound, keep the side where the coordinate is >= bound?)
    for axis, bound, keep_above in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        if len(xy) == 0:
            break
        inside = xy[:, axis] >= bound if keep_above else xy[:, axis] <= bound
        prev, prev_inside = np.roll(xy, 1, axis=0), np.roll(inside, 1)
        out = []
        for p, q, p_in, q_in in zip(prev, xy, prev_inside, inside, strict=False):
            if p_in != q_in:  # the edge p -> q crosses the side: keep the crossing point
                t = (bound - p[axis]) / (q[axis] - p[axis])
                out.append(p + t * (q - p))
            if q_in:
                out.append(q)
        xy = np.asarray(out, dtype=np.float64).reshape(-1, 2)
    return xy


def outline_length(xy: np.ndarray) -> float:
    """Length of a closed polygon's outline in the rasteriser's measure: max(|dx|, |dy|) per edge (px)."""
    d = np.abs(np.diff(xy, axis=0, append=xy[:1]))
    return float(d.max(axis=1).sum()) if len(d) else 0.0


def _rle(
    seg: dict, size: tuple[int, int] | None, image_id: int | None, name: str, checks: Checks
) -> tuple[dict, dict]:
    rle_size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(rle_size, list) and len(rle_size) == 2 and all(is_positive_int(v) for v in rle_size)):
        checks.fail(f"{name}: RLE needs 'size' [height, width]")
    height, width = int(rle_size[0]), int(rle_size[1])
    if height * width > MAX_IMAGE_PIXELS:
        checks.fail(
            f"{name}: RLE size {height}x{width} is larger than any image micrometry reads "
            f"({MAX_IMAGE_PIXELS} pixels)"
        )
    if size is not None and (height, width) != tuple(size):
        checks.fail(
            f"{name}: RLE size {height}x{width} does not match image {image_id} ({size[0]}x{size[1]})"
        )
    if isinstance(counts, list):
        if not all(is_count(c) for c in counts):
            checks.fail(f"{name}: uncompressed RLE 'counts' must be non-negative integers")
        covered = sum(int(c) for c in counts)
        if covered != height * width:
            checks.fail(f"{name}: uncompressed RLE covers {covered} pixels, image has {height * width}")
        rle = mask_utils.frPyObjects(
            {"size": [height, width], "counts": [int(c) for c in counts]}, height, width
        )
    elif isinstance(counts, (str, bytes)):
        if isinstance(counts, str) and not counts.isascii():  # COCO's compressed counts are ASCII
            checks.fail(f"{name}: compressed RLE 'counts' must be ASCII text")
        rle = compressed_rle(seg, height, width)
        try:
            decoded_area = int(mask_utils.area(rle))
            if not 0 <= decoded_area <= height * width:
                raise ValueError
            mask_utils.toBbox(rle)
        except Exception:
            checks.fail(f"{name}: compressed RLE 'counts' cannot be decoded")
    else:
        checks.fail(f"{name}: RLE 'counts' must be a string or a list of integers")
    return json_rle(rle), rle


def is_number(v: Any) -> bool:
    """A finite int or float (NumPy scalars included), not a bool."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return False
    # a Python int is finite however large (np.isfinite cannot even take one beyond 64 bits)
    return isinstance(v, (int, np.integer)) or bool(np.isfinite(v))


def is_positive_int(v: Any) -> bool:
    """An int (NumPy integers included), not a bool, above zero."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0


def is_count(v: Any) -> bool:
    """A run length: an int (NumPy integers included), not a bool, zero or more."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
