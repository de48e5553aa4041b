"""What a user's annotations say counts as a particle, learned when a model trains on them.

Annotators differ in more than outlines. Some leave out every object cut by
the image border (ImageJ's "exclude on edges", the Cell Tracking Challenge's
reference segmentations); others paint each visible piece. A model fine-tuned
on a few images learns the outlines, but a network that sees a crop cannot
know where the image ends: the convention is read from the annotations
(:func:`border_convention`) and applied by the decoder (``method_config``
``exclude_border``, :func:`drop_border_instances`). Fine-tuning also reads
whether the particles are brighter or darker than their background in every
image (:func:`particle_polarity`): then it need not teach the other polarity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.stats import poisson

#: Annotated border objects below this fraction of the expected number mean "left out on purpose".
BORDER_RATIO = 0.25
#: ... and only when so few would happen by chance less often than this (Poisson).
BORDER_P = 0.01


def border_touching(labels: np.ndarray) -> np.ndarray:
    """Ids (sorted) of the instances of a label image that touch its border."""
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    ids = np.unique(edge)
    return ids[ids > 0]


def drop_border_instances(
    labels: np.ndarray, scores: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(labels, scores)`` without the instances touching the image border, renumbered 1..N.

    ``scores``, when given, holds one score per id 1..N (in id order), as decoders return them.
    """
    labels = np.asarray(labels)
    n = int(labels.max()) if labels.size else 0
    if scores is not None:
        n = max(n, len(scores))
    edge = border_touching(labels)
    if len(edge) == 0:
        return labels, scores
    keep = np.bincount(labels.ravel(), minlength=n + 1) > 0  # ids present (annotations may have gaps)
    if scores is not None:
        keep[1 : len(scores) + 1] = True  # one score per id, present or not
    keep[0] = False
    keep[edge] = False
    new_id = np.zeros(n + 1, np.int32)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new_id[labels], None if scores is None else np.asarray(scores)[keep[1 : len(scores) + 1]]


@dataclass
class BorderConvention:
    """Whether annotations leave out the objects cut by the image border.

    ``observed``: annotated objects touching the border; ``expected``: how many
    would if border objects were annotated like the others; ``exclude``: the verdict.
    """

    observed: int
    expected: float
    exclude: bool

    def note(self) -> str:
        """One line for the run's log and the console."""
        verdict = (
            "leave out objects cut by the image border: the model will too"
            if self.exclude
            else "include objects cut by the image border"
        )
        return (
            f"the annotations {verdict} ({self.observed} touch it, about {self.expected:.0f} "
            f"would if they were annotated like the others)"
        )


def border_convention(truths: list[np.ndarray]) -> BorderConvention:
    """Read from annotated label images whether objects cut by the border were left out.

    An object whose bounding box is ``h x w`` in an ``H x W`` image, placed at
    random, touches the border with probability ``p = 1 - (H - h)(W - w) / (H W)``.
    Each annotated object away from the border stands for ``1 / (1 - p)`` objects
    of its size, ``p / (1 - p)`` of them cut by the border, so their sum is the
    number of border objects to expect if they were annotated too. Far fewer
    (under :data:`BORDER_RATIO` of it, and unlikely by chance: Poisson p under
    :data:`BORDER_P`) means the annotator left them out. Few objects decide
    nothing: the default is to keep them.
    """
    observed, expected = 0, 0.0
    for labels in truths:
        labels = np.asarray(labels)
        if not labels.any():
            continue
        height, width = labels.shape
        edge = set(border_touching(labels).tolist())
        for k, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None:
                continue
            if k in edge:
                observed += 1
                continue
            h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
            p = 1.0 - max(height - h, 0) * max(width - w, 0) / (height * width)
            expected += p / max(1.0 - p, 1e-6)
    exclude = observed < BORDER_RATIO * expected and poisson.cdf(observed, expected) < BORDER_P
    return BorderConvention(observed, round(expected, 1), bool(exclude))


def particle_polarity(image: np.ndarray, labels: np.ndarray) -> int:
    """+1 when the particles are brighter than the background (median inside vs outside), -1 darker.

    0 when the image has no particles, no background, or both medians are equal.
    """
    inside = labels > 0
    if not inside.any() or inside.all():
        return 0
    image = np.asarray(image, np.float32)
    return int(np.sign(np.median(image[inside]) - np.median(image[~inside])))


def one_polarity(pairs: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    """Whether the particles of every ``(image, labels)`` pair with particles have the same polarity."""
    signs = {particle_polarity(image, labels) for image, labels in pairs} - {0}
    return len(signs) == 1
