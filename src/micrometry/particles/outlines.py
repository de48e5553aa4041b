"""Sub-pixel outlines of every particle of a label image at once (vectorised marching squares).

``skimage.measure.find_contours`` traces one particle at a time and assembles
its contours in Python (the per-particle reference in
``tests/morphometry_reference.py`` does that); this module builds the same
contours for all particles with array operations, so that only the convex hull
and the calipers remain per particle.

Marching squares on a binary mask, per particle label L: every 2 x 2 cell of
pixel centres whose corners are not all L or all not-L holds one or two
segments joining the midpoints of its sides ("links") whose two corners
differ. Diagonal pairs (saddles) are resolved as in ``find_contours(...,
fully_connected="high")``: the particle's pixels are 8-connected. Each segment
is oriented with the particle on a fixed side, which chains the segments into
closed cycles; a cycle winding one way is an outer outline, the other way a
hole (dropped: ImageJ's perimeter ignores holes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# Corners of a cell (x, y) relative to its top-left pixel centre; bit k of a cell's
# configuration is set when corner k belongs to the particle.
_CORNERS = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], float)  # a (top-left), b, c, d (bottom-right)
# Links (cell sides) by the pair of corners they join, and their midpoints.
_LINKS = [(0, 1), (1, 3), (2, 3), (0, 2)]  # top, right, bottom, left
_MIDPOINTS = np.array([[0.5, 0.0], [1.0, 0.5], [0.5, 1.0], [0.0, 0.5]])
TOP, RIGHT, BOTTOM, LEFT = range(4)


def _segment_table() -> np.ndarray:
    """For each of the 16 cell configurations, up to two oriented segments (start link, end link).

    Unused slots hold -1. Orientation: the particle lies to the left of the
    direction of travel in (x, y-down) coordinates, i.e. cross(end - start,
    inside - start) > 0.
    """
    table = -np.ones((16, 2, 2), int)
    for config in range(1, 15):
        inside = [(config >> k) & 1 for k in range(4)]
        crossed = [link for link, (p, q) in enumerate(_LINKS) if inside[p] != inside[q]]
        if config in (0b1001, 0b0110):  # saddle: cut off each outside corner on its own
            outside = [k for k in range(4) if not inside[k]]
            pairs = [[link for link in crossed if k in _LINKS[link]] for k in outside]
            reference = np.array([0.5, 0.5])  # the cell centre lies inside (8-connected particle)
            references = [reference, reference]
        else:
            pairs = [crossed]
            references = [_CORNERS[np.array(inside, bool)].mean(axis=0)]
        for slot, (pair, ref) in enumerate(zip(pairs, references, strict=False)):
            start, end = pair
            direction = _MIDPOINTS[end] - _MIDPOINTS[start]
            to_ref = ref - _MIDPOINTS[start]
            if direction[0] * to_ref[1] - direction[1] * to_ref[0] < 0:
                start, end = end, start
            table[config, slot] = (start, end)
    return table


SEGMENTS = _segment_table()


@dataclass
class Outlines:
    """The outer outlines of every particle, as arrays over vertices.

    Attributes
    ----------
    label : ndarray
        ``(V,)`` particle id of each vertex, sorted ascending (vertices of one
        particle are contiguous).
    xy : ndarray
        ``(V, 2)`` vertex positions (x, y; pixel centres at integer indices).
    succ, pred : ndarray
        ``(V,)`` index of the next / previous vertex along the outline.
    axis_steps, diagonal_steps, corners : ndarray
        Indexed by particle id: the outer outlines' axis-parallel steps,
        diagonal half-steps and changes of direction, for the corner-count
        perimeter (weights in :mod:`micrometry.particles.morphometry`).
    """

    label: np.ndarray
    xy: np.ndarray
    succ: np.ndarray
    pred: np.ndarray
    axis_steps: np.ndarray
    diagonal_steps: np.ndarray
    corners: np.ndarray


def trace_outlines(labels: np.ndarray) -> Outlines:
    """Marching-squares outlines (level 0.5) of every label of ``labels``, holes removed."""
    padded = np.pad(np.asarray(labels).astype(np.int64, copy=False), 1)
    height, width = padded.shape
    corners = [padded[:-1, :-1], padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]]
    boundary = ~((corners[0] == corners[1]) & (corners[0] == corners[2]) & (corners[0] == corners[3]))
    rows, cols = np.nonzero(boundary)
    values = np.stack([c[rows, cols] for c in corners])  # (4, n_cells)
    # Each distinct non-zero label of a cell is one (cell, label) pair.
    cell_idx, pair_label, config = [], [], []
    for k in range(4):
        label = values[k]
        first = label != 0
        for earlier in range(k):
            first &= values[earlier] != label
        bits = sum((values[j] == label).astype(np.int64) << j for j in range(4))
        cell_idx.append(np.flatnonzero(first))
        pair_label.append(label[first])
        config.append(bits[first])
    cell_idx = np.concatenate(cell_idx)
    pair_label = np.concatenate(pair_label)
    config = np.concatenate(config)
    pair_rows, pair_cols = rows[cell_idx], cols[cell_idx]

    # Segments: one per pair, a second one for saddles.
    seg = SEGMENTS[config]  # (n_pairs, 2, 2)
    used = seg[:, :, 0] >= 0
    pair_of_seg = np.broadcast_to(np.arange(len(config))[:, None], used.shape)[used]
    start_link, end_link = seg[:, :, 0][used], seg[:, :, 1][used]
    seg_rows, seg_cols, seg_label = pair_rows[pair_of_seg], pair_cols[pair_of_seg], pair_label[pair_of_seg]

    n_row_vertices = height * (width - 1)
    n_positions = n_row_vertices + (height - 1) * width

    def vertex_position(link: np.ndarray) -> np.ndarray:
        """Global id of the link's midpoint: links on row lines first, then on column lines."""
        r = seg_rows + (link == BOTTOM)
        c = seg_cols + (link == RIGHT)
        on_row_line = (link == TOP) | (link == BOTTOM)
        return np.where(on_row_line, r * (width - 1) + c, n_row_vertices + r * width + c)

    start_key = seg_label * n_positions + vertex_position(start_link)
    end_key = seg_label * n_positions + vertex_position(end_link)
    keys, start = np.unique(start_key, return_inverse=True)
    end = np.searchsorted(keys, end_key)
    n_vertices = len(keys)
    succ = np.empty(n_vertices, np.int64)
    succ[start] = end
    pred = np.empty(n_vertices, np.int64)
    pred[end] = start

    # Vertex coordinates (unpadded: subtract the 1-pixel pad).
    position = keys % n_positions
    on_row_line = position < n_row_vertices
    r_row, c_row = np.divmod(position, width - 1)
    r_col, c_col = np.divmod(position - n_row_vertices, width)
    xy = (
        np.where(
            on_row_line[:, None],
            np.stack([c_row + 0.5, r_row.astype(float)], axis=1),
            np.stack([c_col.astype(float), r_col + 0.5], axis=1),
        )
        - 1.0
    )
    vertex_label = keys // n_positions

    # Cycles: an outline with the particle on its left (x, y-down) runs clockwise on
    # screen around the particle and anticlockwise around a hole.
    graph = coo_matrix((np.ones(n_vertices), (start, end)), shape=(n_vertices, n_vertices))
    _, cycle = connected_components(graph, directed=False)
    cross = xy[start, 0] * xy[end, 1] - xy[end, 0] * xy[start, 1]
    cycle_area = np.bincount(cycle[start], weights=cross, minlength=cycle.max() + 1)
    outer_vertex = cycle_area[cycle] > 0

    # Segment classes for the corner-count perimeter: 0 horizontal, 1 vertical, 2 x-y, 3 x+y.
    d = xy[end] - xy[start]
    seg_class = np.where(d[:, 1] == 0, 0, np.where(d[:, 0] == 0, 1, np.where(d[:, 0] * d[:, 1] > 0, 2, 3)))
    class_in = np.empty(n_vertices, np.int64)
    class_in[end] = seg_class
    class_out = np.empty(n_vertices, np.int64)
    class_out[start] = seg_class
    outer_seg = outer_vertex[start]
    n_ids = int(vertex_label.max()) + 1 if n_vertices else 1
    axis = np.bincount(seg_label[outer_seg], weights=(seg_class[outer_seg] < 2), minlength=n_ids)
    diagonal = np.bincount(seg_label[outer_seg], weights=(seg_class[outer_seg] >= 2), minlength=n_ids)
    corner = (class_in != class_out) & outer_vertex
    corners_per_label = np.bincount(vertex_label[corner], minlength=n_ids)

    # Keep outer vertices only, re-indexing succ/pred.
    keep = np.flatnonzero(outer_vertex)
    new_index = -np.ones(n_vertices, np.int64)
    new_index[keep] = np.arange(len(keep))
    return Outlines(
        vertex_label[keep],
        xy[keep],
        new_index[succ[keep]],
        new_index[pred[keep]],
        axis,
        diagonal,
        corners_per_label.astype(float),
    )


def smoothed(outlines: Outlines, passes: int = 2) -> np.ndarray:
    """Vertex positions after ``passes`` of a [1/4, 1/2, 1/4] filter along each outline."""
    xy = outlines.xy
    for _ in range(passes):
        xy = 0.25 * xy[outlines.pred] + 0.5 * xy + 0.25 * xy[outlines.succ]
    return xy


def shoelace_by_label(outlines: Outlines, xy: np.ndarray, n_ids: int) -> np.ndarray:
    """Enclosed area of each particle's outer outlines (summed over its cycles).

    The shoelace formula of :func:`micrometry.geometry.signed_polygon_area`,
    vectorised over all outlines at once: each vertex's cross product with its
    successor is summed per particle label with ``bincount``, so that no
    per-polygon loop is needed. Positive for outer outlines (clockwise on screen).
    """
    nxt = xy[outlines.succ]
    cross = xy[:, 0] * nxt[:, 1] - nxt[:, 0] * xy[:, 1]
    return 0.5 * np.bincount(outlines.label, weights=cross, minlength=n_ids)
