"""Fusing the instances of several segmentations of one image (TTA passes, ensemble members).

Weighted mask fusion, as the detection competitions' winners combined models:

1. every instance of every pass is taken in order of weighted score;
2. it joins the cluster whose leading (best) mask it overlaps most, at mask
   IoU >= ``iou_threshold``, provided that cluster has nothing from its pass
   yet; otherwise it starts a new cluster;
3. a cluster's mask is the pixel-wise weighted vote of its members
   (kept where more than ``vote`` of the members' weight agrees; exactly
   ``vote`` is decided by the leader, the best-scoring member), and its
   score the weighted mean of the members' scores over *all* passes (a pass
   that missed the particle counts as score 0), so that particles most
   passes agree on rank first;
4. the fused instances are painted into one label image, best on top.

Pure numpy: instances are ``(top, left, boolean crop)`` so that a thousand
of them on a 1024x1280 image cost little memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class Instance:
    """One particle of one pass: a boolean crop at ``(top, left)``, its score and pass."""

    top: int
    left: int
    mask: np.ndarray
    score: float
    source: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)``, exclusive bottom/right."""
        return self.top, self.left, self.top + self.mask.shape[0], self.left + self.mask.shape[1]

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def instances_from_labels(labels: np.ndarray, scores: np.ndarray, source: int = 0) -> list[Instance]:
    """The instances of a label image (id ``i`` has ``scores[i - 1]``)."""
    labels = np.asarray(labels)
    out = []
    for i, sl in enumerate(ndimage.find_objects(labels, max_label=len(scores)), start=1):
        if sl is None:
            continue
        out.append(Instance(sl[0].start, sl[1].start, labels[sl] == i, float(scores[i - 1]), source))
    return out


def mask_iou(a: Instance, b: Instance) -> float:
    """Intersection over union of two instances' masks (0 when their boxes are apart)."""
    t, left = max(a.top, b.top), max(a.left, b.left)
    bt, r = min(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    if bt <= t or r <= left:
        return 0.0
    inter = int(
        (
            a.mask[t - a.top : bt - a.top, left - a.left : r - a.left]
            & b.mask[t - b.top : bt - b.top, left - b.left : r - b.left]
        ).sum()
    )
    union = a.area + b.area - inter
    return inter / union if union else 0.0


def cluster_instances(
    instances: list[Instance], weights: np.ndarray, iou_threshold: float
) -> list[list[Instance]]:
    """Greedy clusters of matching instances, at most one per pass, leader first."""
    order = sorted(
        range(len(instances)),
        key=lambda k: (-weights[instances[k].source] * instances[k].score, instances[k].source, k),
    )
    clusters: list[list[Instance]] = []
    boxes = np.zeros((0, 4), np.int64)  # leaders' boxes, for a quick overlap test
    for k in order:
        inst = instances[k]
        top, left, bottom, right = inst.box
        near = np.nonzero(
            (boxes[:, 0] < bottom) & (boxes[:, 2] > top) & (boxes[:, 1] < right) & (boxes[:, 3] > left)
        )[0]
        best, best_iou = -1, iou_threshold
        for c in near:
            if any(m.source == inst.source for m in clusters[c]):
                continue
            iou = mask_iou(clusters[c][0], inst)
            if iou >= best_iou:
                best, best_iou = int(c), iou
        if best >= 0:
            clusters[best].append(inst)
        else:
            clusters.append([inst])
            boxes = np.vstack([boxes, np.array(inst.box)[None]])
    return clusters


def fuse_cluster(cluster: list[Instance], weights: np.ndarray, vote: float, ties: str = "leader") -> Instance:
    """The weighted-vote mask and the weighted mean score (over all passes) of one cluster.

    ``ties`` decides pixels with exactly ``vote`` of the weight: ``"leader"`` (the
    best-scoring member's say: ensembles of different models) or ``"union"``
    (kept: passes of equal standing, e.g. TTA, where it keeps the result symmetric).
    """
    top = min(m.top for m in cluster)
    left = min(m.left for m in cluster)
    bottom = max(m.box[2] for m in cluster)
    right = max(m.box[3] for m in cluster)
    acc = np.zeros((bottom - top, right - left), np.float64)
    leader = np.zeros(acc.shape, bool)
    member_weight = 0.0
    for m in cluster:
        w = float(weights[m.source])
        acc[m.top - top : m.box[2] - top, m.left - left : m.box[3] - left] += w * m.mask
        member_weight += w
    lead = cluster[0]
    leader[lead.top - top : lead.box[2] - top, lead.left - left : lead.box[3] - left] = lead.mask
    # A tie (exactly `vote` of the weight, e.g. one of two members) goes the leader's way for
    # ensembles: a union grows every mask by the members' disagreements (docs/particles-models.md).
    threshold = vote * member_weight
    tie = np.abs(acc - threshold) <= 1e-9
    mask = (acc > threshold + 1e-9) | (tie & (leader if ties == "leader" else True))
    score = sum(float(weights[m.source]) * m.score for m in cluster) / float(np.sum(weights))
    return Instance(top, left, mask, score, cluster[0].source)


def paint(
    instances: list[Instance], shape: tuple[int, int], min_area: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Label image (best instance on top) and the scores of its ids; hidden or tiny instances are dropped."""
    labels = np.zeros(shape, np.int32)
    ordered = sorted(instances, key=lambda m: m.score)
    for rank, m in enumerate(ordered, start=1):
        region = labels[m.top : m.box[2], m.left : m.box[3]]
        region[m.mask] = rank
    counts = np.bincount(labels.ravel(), minlength=len(ordered) + 1)
    present = counts >= max(min_area, 1)
    present[0] = False
    new_id = np.zeros(len(ordered) + 1, np.int32)
    new_id[present] = np.arange(1, int(present.sum()) + 1)
    scores = np.array([m.score for m in ordered], np.float32)
    return new_id[labels], scores[present[1:]]


def fuse_segmentations(
    passes: list[tuple[np.ndarray, np.ndarray]],
    weights: list[float] | None = None,
    iou_threshold: float = 0.5,
    vote: float = 0.5,
    min_area: int = 1,
    ties: str = "leader",
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse several ``(labels, scores)`` segmentations of the same image into one.

    Parameters
    ----------
    passes : list of (ndarray, ndarray)
        Label images ``(H, W)`` (all the same shape) and their scores.
    weights : list of float, optional
        One per pass (default: equal).
    iou_threshold : float
        Mask IoU at which two passes' instances are the same particle.
    vote : float
        Share of the members' weight a pixel needs to stay in the fused mask.
    min_area : int
        Fused instances with fewer visible pixels are dropped.
    ties : {"leader", "union"}
        Who decides pixels with exactly ``vote`` of the weight (see :func:`fuse_cluster`).

    Returns
    -------
    (ndarray, ndarray)
        Fused labels and scores.
    """
    if not passes:
        raise ValueError("nothing to fuse")
    shape = passes[0][0].shape
    if any(p[0].shape != shape for p in passes):
        raise ValueError("all segmentations must have the same shape")
    w = np.ones(len(passes)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(passes),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("one non-negative weight per pass, not all zero")
    # A pass of weight 0 contributes nothing (not even score-0 instances of its own).
    instances = [
        inst
        for source, (labels, scores) in enumerate(passes)
        if w[source] > 0
        for inst in instances_from_labels(labels, scores, source)
    ]
    if ties not in ("leader", "union"):
        raise ValueError(f"ties must be 'leader' or 'union', not {ties!r}")
    fused = [fuse_cluster(c, w, vote, ties) for c in cluster_instances(instances, w, iou_threshold)]
    return paint(fused, shape, min_area)
