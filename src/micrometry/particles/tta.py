"""Test-time augmentation for every particle model: flips and scales, fused per instance.

A :class:`TTASegmenter` runs any segmenter on flipped and rescaled copies of
the image, maps each result back onto the image and fuses the instances with
:func:`~micrometry.particles.fusion.fuse_segmentations` (weighted mask fusion).
A segmenter whose output is a dense map that flips well (the U-Net models:
``supports_map_flips``) averages its maps over the flips instead, which is
cheaper and better than fusing four sets of instances; the scales still go
through instance fusion.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from micrometry.errors import InputError
from micrometry.particles.fusion import fuse_segmentations

#: the four flips, as numpy axes to reverse
FLIPS: tuple[tuple[int, ...], ...] = ((), (1,), (0,), (0, 1))


@dataclass(frozen=True)
class TTAPlan:
    """Which augmented copies to segment: flips (numpy axes) x scales (relative image size)."""

    flips: tuple[tuple[int, ...], ...] = ((),)
    scales: tuple[float, ...] = (1.0,)
    iou_threshold: float = 0.5
    vote: float = 0.5

    @property
    def passes(self) -> int:
        return len(self.flips) * len(self.scales)

    def describe(self) -> dict:
        return {
            "flips": [list(f) for f in self.flips],
            "scales": list(self.scales),
            "fusion": {"iou_threshold": self.iou_threshold, "vote": self.vote, "ties": "union"},
        }


def parse_scales(scales: str | list[float] | tuple[float, ...] | None) -> tuple[float, ...]:
    """``"0.8,1,1.25"`` (or numbers) -> ``(0.8, 1.0, 1.25)``; None -> ``(1.0,)``.

    Raises
    ------
    InputError
        Not numbers, or a factor outside 0.25..4.
    """
    if scales is None:
        return (1.0,)
    try:
        values = tuple(float(v) for v in (scales.split(",") if isinstance(scales, str) else scales))
    except ValueError:
        raise InputError(
            f"--tta-scales must be numbers separated by commas (e.g. 0.8,1,1.25), not {scales!r}"
        ) from None
    if not values or any(not 0.25 <= v <= 4 for v in values):
        raise InputError(f"--tta-scales factors must lie between 0.25 and 4, not {scales!r}")
    return values


def tta_plan(flips: bool, scales: str | list[float] | None) -> TTAPlan | None:
    """The plan for the CLI's ``--tta`` (four flips) and ``--tta-scales``; None when there is nothing to do."""
    plan = TTAPlan(flips=FLIPS if flips else FLIPS[:1], scales=parse_scales(scales))
    return None if plan.passes == 1 and plan.scales == (1.0,) else plan


def _resize(array: np.ndarray, shape: tuple[int, int], nearest: bool) -> np.ndarray:
    if array.shape == shape:
        return array
    if nearest:
        return cv2.resize(array.astype(np.float32), shape[::-1], interpolation=cv2.INTER_NEAREST).astype(
            np.int32
        )
    shrink = shape[0] < array.shape[0]
    return cv2.resize(array, shape[::-1], interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


@dataclass
class TTASegmenter:
    """Any segmenter, run on augmented copies of each image and fused (see the module docstring)."""

    base: object
    plan: TTAPlan = field(default_factory=TTAPlan)

    def __post_init__(self) -> None:
        self.name = getattr(self.base, "name", "segmenter")
        self.map_flips = len(self.plan.flips) > 1 and getattr(self.base, "supports_map_flips", False)
        if self.map_flips:
            self.base.tta = True

    def describe(self) -> dict:
        """Recorded with the results (``PRED/prediction.json``)."""
        return {
            "tta": {
                **self.plan.describe(),
                "flips_by": "map averaging" if self.map_flips else "instance fusion",
            }
        }

    def segment(self, image: np.ndarray):
        """The fused :class:`~micrometry.particles.segmenter.Instances` of all passes."""
        image = np.asarray(image)
        flips = self.plan.flips[:1] if self.map_flips else self.plan.flips
        passes, first = [], None
        for scale in self.plan.scales:
            shape = (max(8, int(round(image.shape[0] * scale))), max(8, int(round(image.shape[1] * scale))))
            scaled = _resize(image, shape, nearest=False)
            for axes in flips:
                found = self.base.segment(np.ascontiguousarray(np.flip(scaled, axes)) if axes else scaled)
                first = first or found
                labels = np.flip(found.labels, axes) if axes else found.labels
                passes.append(
                    (np.ascontiguousarray(_resize(labels, image.shape, nearest=True)), found.scores)
                )
        if len(passes) == 1:
            labels, scores = passes[0]
        else:
            # Passes of equal standing: ties kept (a leader would break the flips' symmetry).
            labels, scores = fuse_segmentations(
                passes, iou_threshold=self.plan.iou_threshold, vote=self.plan.vote, ties="union"
            )
        # The base segmenter's own result type (Instances), without importing it here.
        return replace(first, labels=labels, scores=scores)

    def segment_batch(self, images: list[np.ndarray]) -> list:
        return [self.segment(image) for image in images]
