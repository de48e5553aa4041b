"""An ensemble of particle segmenters whose instances are fused by weighted mask fusion.

``particles predict --ensemble RUN_A,RUN_B`` (optionally ``RUN_A:2,RUN_B:1``
for weights; ``load_particle_model(ensemble=[...])`` from Python) builds one
:class:`EnsembleSegmenter`; its members and weights travel with the results
(:meth:`EnsembleSegmenter.describe`). :func:`parse_members` is the one place
that reads the member syntax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from micrometry.errors import InputError
from micrometry.particles.fusion import fuse_segmentations


def parse_members(spec: str | list[str]) -> list[tuple[str, float]]:
    """``"A,B:2"`` (or ``["A", "B:2"]``) -> ``[("A", 1.0), ("B", 2.0)]``.

    Members are separated by commas (in a list, each item is one member); a
    weight follows the last colon of a member when it is a number.

    Raises
    ------
    InputError
        An empty member, fewer than two members, or a negative, infinite or all-zero weight.
    """
    parts = spec.split(",") if isinstance(spec, str) else [str(p) for p in spec]
    members = []
    for part in [p.strip() for p in parts]:
        if not part:
            raise InputError(f"--ensemble: empty member in {spec!r}")
        name, weight = part, 1.0
        head, sep, tail = part.rpartition(":")
        if sep and head:
            try:
                weight = float(tail)
                name = head
            except ValueError:
                pass  # a colon in a path (Windows drive), not a weight
        if not (math.isfinite(weight) and weight >= 0):
            raise InputError(f"--ensemble: weight of {name!r} must be a number >= 0, not {weight}")
        members.append((name, weight))
    if len(members) < 2:
        raise InputError(f"--ensemble needs two models or more (MODEL_A,MODEL_B), got {spec!r}")
    if sum(w for _, w in members) <= 0:
        raise InputError("--ensemble: the weights are all zero")
    return members


@dataclass
class EnsembleSegmenter:
    """Segment with every member and fuse their instances."""

    members: list[object]
    weights: list[float]
    names: list[str] = field(default_factory=list)
    iou_threshold: float = 0.5
    vote: float = 0.5

    def __post_init__(self) -> None:
        if len(self.members) != len(self.weights):
            raise ValueError("one weight per member")
        self.names = self.names or [getattr(m, "name", f"member{i}") for i, m in enumerate(self.members)]
        self.name = "ensemble(" + ",".join(self.names) + ")"

    def describe(self) -> dict:
        return {
            "members": [
                {"model": n, "weight": float(w), **(m.describe() if hasattr(m, "describe") else {})}
                for n, w, m in zip(self.names, self.weights, self.members, strict=False)
            ],
            "fusion": {
                "method": "weighted mask fusion",
                "iou_threshold": self.iou_threshold,
                "vote": self.vote,
                "ties": "leader",
            },
        }

    def segment(self, image: np.ndarray):
        """The fused :class:`~micrometry.particles.segmenter.Instances` of all members."""
        found = [member.segment(image) for member in self.members]
        labels, scores = fuse_segmentations(
            [(f.labels, f.scores) for f in found], self.weights, self.iou_threshold, self.vote
        )
        # The members' own result type (Instances), without importing it here.
        return replace(found[0], labels=labels, scores=scores)

    def segment_batch(self, images: list[np.ndarray]) -> list:
        return [self.segment(image) for image in images]
