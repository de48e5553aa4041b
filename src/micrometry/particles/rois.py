"""Particle outlines as an ImageJ ROI set (``RoiSet.zip``) that Fiji's ROI Manager opens.

One polygon ROI per particle, named by its label id (the ``Label`` column of
``particles measure``'s table and the value in the label image), so a row of
the table and an outline in Fiji are the same particle.

Outline: the 0.5 iso-contour of the particle's mask (marching squares), which
runs along pixel edges and cuts each outer corner pixel diagonally through its
edge midpoints. In ImageJ's coordinates (pixel ``i`` spans ``[i, i + 1)``) a
pixel is inside the polygon exactly when it belongs to the particle, corner
pixels included, so filling the ROI gives back the label image's mask (holes
aside: a ROI is the outer outline).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

# ImageJ's name for a saved ROI Manager set, after the image's stem.
ROISET_SUFFIX = "_RoiSet.zip"


def label_polygons(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Outer outline of every particle: ``{label id: (N, 2) float x, y}`` in ImageJ coordinates.

    Parameters
    ----------
    labels : ndarray
        ``(H, W)`` integer label image, 0 background.
    """
    from skimage.measure import find_contours

    labels = np.asarray(labels)
    polygons: dict[int, np.ndarray] = {}
    boxes = ndimage.find_objects(labels.astype(np.int64, copy=False))
    for index, box in enumerate(boxes):
        if box is None:
            continue
        label = index + 1
        # a one-pixel frame of background, so that every contour closes
        mask = np.pad(labels[box] == label, 1).astype(np.float32)
        contours = find_contours(mask, 0.5)
        if not contours:
            continue
        outline = max(contours, key=len)  # the outer outline is the longest (holes are inside it)
        rows, cols = outline[:-1, 0], outline[:-1, 1]  # closed: drop the repeated last vertex
        # index space (pixel centre at its index, frame of 1) -> ImageJ space (pixel centre at index + 0.5)
        x = cols - 1 + box[1].start + 0.5
        y = rows - 1 + box[0].start + 0.5
        polygons[label] = _drop_collinear(np.column_stack([x, y]))
    return polygons


def _drop_collinear(xy: np.ndarray) -> np.ndarray:
    """The polygon without vertices in the middle of straight runs (same shape, smaller file)."""
    before, after = xy - np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0) - xy
    turn = np.abs(before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]) > 1e-9
    return xy[turn] if turn.sum() >= 3 else xy


def write_roiset(path: str | Path, labels: np.ndarray) -> int:
    """Write every particle's outline to the ROI set ``path`` (a .zip); returns the number of ROIs.

    An image without particles writes no file (ImageJ cannot open an empty ROI set).
    """
    return write_polygons(path, label_polygons(labels))


def write_polygons(path: str | Path, polygons: dict[int, np.ndarray]) -> int:
    """Write ``{label id: (N, 2) x, y}`` outlines as a ROI set named by id; returns the number of ROIs."""
    import roifile

    path = Path(path)
    if not polygons:
        return 0
    rois = []
    for label, xy in polygons.items():
        roi = roifile.ImagejRoi.frompoints(xy.astype(np.float32), name=str(label))
        roi.roitype = roifile.ROI_TYPE.POLYGON
        rois.append(roi)
    if path.exists():
        path.unlink()  # roiwrite appends to an existing zip
    roifile.roiwrite(path, rois)
    return len(rois)


def read_roiset(path: str | Path) -> dict[str, np.ndarray]:
    """``{ROI name: (N, 2) x, y}`` of a ROI set (for checks and round trips)."""
    import roifile

    rois = roifile.roiread(path)
    rois = rois if isinstance(rois, list) else [rois]
    return {roi.name: np.asarray(roi.coordinates(), dtype=np.float64) for roi in rois}
