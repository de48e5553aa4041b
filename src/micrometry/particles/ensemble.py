"""An ensemble of particle segmenters whose instances are fused by weighted mask fusion.

``--model RUN_A,RUN_B`` (optionally ``RUN_A:2,RUN_B:1`` for weights) builds
one :class:`EnsembleSegmenter`; its members and weights travel with the
results (:meth:`EnsembleSegmenter.describe`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from micrometry.errors import InputError
from micrometry.particles.fusion import fuse_segmentations


def parse_members(spec: str) -> list[tuple[str, float]]:
    """``"A,B:2"`` -> ``[("A", 1.0), ("B", 2.0)]`` (a weight follows the last colon when it is a number).

    Raises
    ------
    InputError
        An empty member or a negative weight.
    """
    members = []
    for part in [p.strip() for p in spec.split(",")]:
        if not part:
            raise InputError(f"--model: empty ensemble member in {spec!r}")
        name, weight = part, 1.0
        head, sep, tail = part.rpartition(":")
        if sep and head:
            try:
                weight = float(tail)
                name = head
            except ValueError:
                pass  # a colon in a path (Windows drive), not a weight
        if weight < 0:
            raise InputError(f"--model: weight of {name!r} must be >= 0, not {weight}")
        members.append((name, weight))
    if sum(w for _, w in members) <= 0:
        raise InputError("--model: ensemble weights are all zero")
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
