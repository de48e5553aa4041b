"""What every particle segmenter is: image in, labelled instances with confidences out.

Models are registered as :class:`~micrometry.particles.models.base.ParticleModel`
entries (``watershed`` and the learned models);
:func:`~micrometry.particles.models.load_particle_model` turns a name,
``shipped``, a run folder, an exported model folder or nothing (the shipped
model) into a ready :class:`Segmenter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class Instances:
    """Instance segmentation of one image.

    Attributes
    ----------
    labels : ndarray
        ``(H, W)`` int32; 0 is background, 1..N one id per particle (its
        visible part; particles do not overlap in a label image).
    scores : ndarray
        ``(N,)`` float32; ``scores[i]`` is the confidence of label id ``i + 1``.
    info : dict
        What the segmenter chose for this image (e.g. ``diameter_px``, ``scale``)
        and ``warnings`` about implausible results; stored with the results.
    """

    labels: np.ndarray
    scores: np.ndarray
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int32)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        n = int(self.labels.max(initial=0))
        if self.scores.shape[0] != n:
            raise ValueError(f"{n} label ids but {self.scores.shape[0]} scores")

    @property
    def count(self) -> int:
        return int(self.scores.shape[0])


@runtime_checkable
class Segmenter(Protocol):
    """A particle segmenter: ``segment(gray image) -> Instances``."""

    name: str

    def segment(self, image: np.ndarray) -> Instances:
        """Segment one 2-D gray image (uint8 or uint16, as :func:`read_image` returns)."""
        ...

    def segment_batch(self, images: list[np.ndarray]) -> list[Instances]:
        """Segment several images (a model may batch them; classical methods loop)."""
        ...


class SegmenterBase:
    """Convenience base class: ``segment_batch`` loops over ``segment``."""

    name = "segmenter"

    def segment(self, image: np.ndarray) -> Instances:  # pragma: no cover - abstract
        raise NotImplementedError

    def segment_batch(self, images: list[np.ndarray]) -> list[Instances]:
        return [self.segment(image) for image in images]
