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
        contours = find_contours(mask, 0.5, fully_connected="high")  # diagonal neighbours: one outline
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
    path.parent.mkdir(parents=True, exist_ok=True)
    roifile.roiwrite(path, rois)
    return len(rois)


def read_roiset(path: str | Path) -> dict[str, np.ndarray]:
    """``{ROI name: (N, 2) x, y}`` of a ROI set (for checks and round trips)."""
    return dict(read_roi_outlines(path)[0])


#: ROI types that outline an area (lines, angles and points do not).
AREA_ROI_TYPES = ("POLYGON", "FREEHAND", "TRACED", "RECT", "OVAL")


def read_roi_outlines(path: str | Path) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """The area ROIs of a ROI set (``.zip``) or a single ``.roi`` file, in file order.

    Returns
    -------
    (list of (name, (N, 2) x, y), list of str)
        The outlines (a composite ROI gives its largest part) and one line per
        ROI left out (lines, points: no area).

    Raises
    ------
    DatasetError
        A file roifile cannot read.
    """
    import roifile

    from micrometry.errors import DatasetError

    try:
        rois = roifile.roiread(path)
    except Exception as exc:  # a damaged zip, not a ROI: any reader error is the file's fault
        raise DatasetError(f"cannot read ImageJ ROIs ({type(exc).__name__}: {exc})", path) from None
    rois = rois if isinstance(rois, list) else [rois]
    outlines, skipped = [], []
    for index, roi in enumerate(rois):
        name = roi.name or str(index + 1)
        kind = getattr(roi.roitype, "name", str(roi.roitype))
        xy = np.asarray(roi.coordinates(), dtype=np.float64)
        if (kind not in AREA_ROI_TYPES and roi.multi_coordinates is None) or len(xy) < 3:
            skipped.append(f"ROI {name!r} ({kind.lower()}) outlines no area")
            continue
        outlines.append((name, xy))
    return outlines, skipped


def polygons_to_labels(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Label image of outlines in ImageJ coordinates: the inverse of :func:`label_polygons`.

    A pixel belongs to an outline when its centre (``i + 0.5`` in ImageJ
    coordinates) lies inside it, ImageJ's own rule, so the outlines
    :func:`label_polygons` writes fill back to exactly their masks. Labels are
    ``1..N`` in the given order. Where outlines overlap, the smaller one keeps
    the shared pixels (a particle drawn over a larger one stays whole and
    visible); an outline that encloses no pixel centre gets no pixel.

    Parameters
    ----------
    polygons : list of (N, 2) arrays
        x, y vertices.
    shape : (int, int)
        The image's height and width.
    """
    from skimage.draw import polygon as fill_polygon

    labels = np.zeros(shape, np.int32)
    filled = []
    for label, xy in enumerate(polygons, start=1):
        xy = np.asarray(xy, np.float64)
        rows, cols = fill_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)  # pixel centres at integers
        filled.append((len(rows), label, rows, cols))
    for _, label, rows, cols in sorted(filled, key=lambda f: -f[0]):  # largest first: smaller on top
        labels[rows, cols] = label
    return labels
