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

import struct
from pathlib import Path

import numpy as np
from scipy import ndimage

# ImageJ's name for a saved ROI Manager set, after the image's stem.
ROISET_SUFFIX = "_RoiSet.zip"


def roiset_name(stem: str) -> str:
    """``STEM_RoiSet.zip``, the stem shortened (with a hash) when the name would pass 255 bytes."""
    from micrometry.io.output_names import fit_file_name

    return fit_file_name(stem, ROISET_SUFFIX)


def label_polygons(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Outer outline of every particle: ``{label id: (N, 2) float x, y}`` in ImageJ coordinates.

    Parameters
    ----------
    labels : ndarray
        ``(H, W)`` integer label image, 0 background.
    """
    labels = np.asarray(labels)
    ids, outlines = [], []
    boxes = ndimage.find_objects(labels.astype(np.int64, copy=False))
    framed = np.pad(labels, 1)  # once for all particles: each mask below gets a one-pixel frame
    for index, box in enumerate(boxes):
        if box is None:
            continue
        label = index + 1
        # the box and a one-pixel frame around it (background of this label), so that every contour closes
        mask = framed[box[0].start : box[0].stop + 2, box[1].start : box[1].stop + 2] == label
        outline = _outer_contour(mask)
        if outline is None:
            continue
        # index space (pixel centre at its index, frame of 1) -> ImageJ space (pixel centre at index + 0.5)
        ids.append(label)
        outlines.append(outline[:, ::-1] + (box[1].start - 0.5, box[0].start - 0.5))
    return dict(zip(ids, drop_collinear(outlines), strict=True))


def _outer_contour(mask: np.ndarray) -> np.ndarray | None:
    """The 0.5 iso-contour of a framed binary mask around its largest part: ``(N, 2)`` row, column.

    Marching squares (skimage's ``find_contours``; diagonal neighbours are one
    particle, as ImageJ's wand sees them) puts a vertex at the midpoint of every
    inside-outside pixel pair and joins them through the 2x2 cells. On a grid
    of half-pixel steps those vertices and joins are the border of one binary
    image, which OpenCV's ``findContours`` traces in C (8-connected, as the
    particle): the same polygon, for a fraction of the cost of assembling
    skimage's segments in Python. A mask in several parts goes through skimage.
    """
    import cv2

    inside = mask[:-1, :-1].astype(np.uint8) + mask[:-1, 1:] + mask[1:, :-1] + mask[1:, 1:]
    h, w = mask.shape
    fine = np.zeros((2 * h - 1, 2 * w - 1), np.uint8)
    fine[::2, ::2] = mask
    fine[::2, 1::2] = mask[:, :-1] | mask[:, 1:]  # horizontal pairs: their midpoint is inside or on the line
    fine[1::2, ::2] = mask[:-1, :] | mask[1:, :]
    # cell centres: on the line (two inside, side by side or diagonal: joined) or inside (three, four)
    fine[1::2, 1::2] = inside >= 2
    contours, _ = cv2.findContours(fine, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) != 1:
        return _outer_contour_marching(mask) if contours else None
    xy = contours[0][:, 0, :].astype(np.float64) / 2  # (x, y) on the half-pixel grid -> index space
    if len(xy) < 3:
        return _outer_contour_marching(mask)
    return xy[:, ::-1]


def _outer_contour_marching(mask: np.ndarray) -> np.ndarray | None:
    """:func:`_outer_contour` by skimage's marching squares: the longest contour (holes are inside it)."""
    from skimage.measure import find_contours

    contours = find_contours(mask.astype(np.float32), 0.5, fully_connected="high")  # diagonal neighbours: one
    if not contours:
        return None
    return max(contours, key=len)[:-1]  # closed: drop the repeated last vertex


def drop_collinear(polygons: list[np.ndarray]) -> list[np.ndarray]:
    """Each polygon without the vertices in the middle of straight runs (same shape, smaller file).

    All polygons at once (one array, each vertex's neighbours found within its own
    polygon): a ROI set holds thousands of them. A polygon left with fewer than
    three vertices is kept whole.
    """
    if not polygons:
        return []
    lengths = np.array([len(p) for p in polygons])
    ends = np.cumsum(lengths)
    starts = ends - lengths
    xy = np.concatenate(polygons).astype(np.float64, copy=False)
    index = np.arange(len(xy))
    first, last = np.repeat(starts, lengths), np.repeat(ends - 1, lengths)
    before = xy - xy[np.where(index == first, last, index - 1)]
    after = xy[np.where(index == last, first, index + 1)] - xy
    turn = np.abs(before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]) > 1e-9
    turn |= np.repeat(np.add.reduceat(turn, starts) < 3, lengths)
    kept = np.add.reduceat(turn, starts)
    return np.split(xy[turn], np.cumsum(kept)[:-1])


def write_roiset(path: str | Path, labels: np.ndarray) -> int:
    """Write every particle's outline to the ROI set ``path`` (a .zip); returns the number of ROIs.

    An image without particles writes no file (ImageJ cannot open an empty ROI set).
    """
    return write_polygons(path, label_polygons(labels))


def write_polygons(path: str | Path, polygons: dict[int, np.ndarray]) -> int:
    """Write ``{label id: (N, 2) x, y}`` outlines as a ROI set named by id; returns the number of ROIs.

    The bytes of each ROI are roifile's (a polygon with sub-pixel coordinates,
    ``ImagejRoi.frompoints``), put together for all ROIs at once: roifile builds
    one object per ROI, which costs more than the segmentation of a crowded image.
    """
    import zipfile

    from micrometry.io.atomic import atomic_path

    path = Path(path)
    if not polygons:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for label, data in zip(polygons, roi_bytes(list(polygons.values()), list(polygons)), strict=True):
            # a ZipInfo's fixed date (1980), as roifile's entries: the same outlines give the same file
            archive.writestr(zipfile.ZipInfo(f"{label}.roi"), data)
    return len(polygons)


def roi_bytes(polygons: list[np.ndarray], names: list) -> list[bytes]:
    """ImageJ's ``.roi`` bytes of each ``(N, 2) x, y`` polygon, as roifile writes them.

    A polygon ROI with sub-pixel (float32) coordinates and the integer ones
    beside them (rounded, relative to the bounding box), options overlay
    backgrounds and labels, named by ``names``: roifile's
    ``ImagejRoi.frompoints(xy.astype(np.float32), name=...)`` with type POLYGON,
    byte for byte (tested). Vectorised over all polygons.
    """
    lengths = np.array([len(p) for p in polygons])
    starts = np.cumsum(lengths) - lengths
    xy = np.concatenate(polygons).astype(np.float32)
    rounded = np.round(xy).astype(np.int32)
    low = np.minimum.reduceat(rounded, starts, axis=0)
    high = np.maximum.reduceat(rounded, starts, axis=0) + 1
    relative = rounded - np.repeat(low, lengths, axis=0)
    low, high = low.astype(np.int16), high.astype(np.int16)  # the header's 16 bits (wrapped, as roifile)
    x_int, y_int = (relative[:, k].astype(">i2").tobytes() for k in (0, 1))
    x_sub, y_sub = (xy[:, k].astype(">f4").tobytes() for k in (0, 1))
    out = []
    for k, name in enumerate(names):
        a, b, n = int(starts[k]), int(starts[k] + lengths[k]), int(lengths[k])
        if n >= 2**16:  # the count does not fit the header's 16 bits: roifile's own layout
            out.append(_roifile_bytes(polygons[k], name))
            continue
        label = str(name).encode("utf-16-be")
        header2 = 64 + 12 * n  # after the header, the integer (2 x int16) and float (2 x float32) coordinates
        header = _ROI_HEADER.pack(
            b"Iout", _ROI_VERSION, _ROI_POLYGON, int(low[k, 1]), int(low[k, 0]), int(high[k, 1]),
            int(high[k, 0]), n, _ROI_OPTIONS, header2,
        )  # fmt: skip
        names_at = header2 + 64
        out.append(
            b"".join(
                (
                    header,
                    x_int[2 * a : 2 * b],
                    y_int[2 * a : 2 * b],
                    x_sub[4 * a : 4 * b],
                    y_sub[4 * a : 4 * b],
                    _ROI_HEADER2.pack(0, 0, 0, names_at, len(str(name))),
                    _ROI_HEADER2_REST,
                    label,
                )
            )
        )
    return out


def _roifile_bytes(xy: np.ndarray, name) -> bytes:
    import roifile

    roi = roifile.ImagejRoi.frompoints(np.asarray(xy, np.float32), name=str(name))
    roi.roitype = roifile.ROI_TYPE.POLYGON
    return roi.tobytes()


# The fixed parts of a polygon ROI as roifile writes it (``ImagejRoi.tobytes``): version 229, type 0,
# no stroke or fill colour, options OVERLAY_BACKGROUNDS | OVERLAY_LABELS | SUB_PIXEL_RESOLUTION.
_ROI_VERSION, _ROI_POLYGON, _ROI_OPTIONS = 229, 0, 32 | 8 | 128
_ROI_HEADER = struct.Struct(">4shBxhhhhH16x2x4x4x4x2xh2x2x4xi")
_ROI_HEADER2 = struct.Struct(">4xiiiii")  # channel, slice, frame, name offset and length
_ROI_HEADER2_REST = bytes(4 + 2 + 1 + 1 + 4 + 4 + 4 + 4 + 4 + 12)  # colours, sizes, props: none


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
