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

from dataclasses import dataclass, field

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

    @classmethod
    def parse(cls, spec: str | None) -> "TTAPlan":
        """From a CLI spec: ``flip``, ``scales=0.8:1:1.25`` or both, comma-separated (``None``/``""``: none).

        Raises
        ------
        InputError
            An unknown item or a scale outside 0.25..4.
        """
        flips, scales = FLIPS[:1], (1.0,)
        for item in [s.strip() for s in (spec or "").split(",") if s.strip()]:
            if item == "flip":
                flips = FLIPS
            elif item.startswith("scales="):
                try:
                    scales = tuple(float(v) for v in item.removeprefix("scales=").split(":"))
                except ValueError:
                    raise InputError(f"--tta: bad scales {item!r} (e.g. scales=0.8:1:1.25)") from None
                if not scales or any(not 0.25 <= s <= 4 for s in scales):
                    raise InputError(f"--tta: scales must lie in 0.25..4, got {item!r}")
            else:
                raise InputError(f"--tta: unknown item {item!r} (use 'flip' and/or 'scales=A:B:C')")
        return cls(flips=flips, scales=scales)

    @property
    def passes(self) -> int:
        return len(self.flips) * len(self.scales)

    def describe(self) -> dict:
        return {"flips": [list(f) for f in self.flips], "scales": list(self.scales),
                "fusion": {"iou_threshold": self.iou_threshold, "vote": self.vote}}


def _resize(array: np.ndarray, shape: tuple[int, int], nearest: bool) -> np.ndarray:
    if array.shape == shape:
        return array
    if nearest:
        return cv2.resize(array.astype(np.float32), shape[::-1], interpolation=cv2.INTER_NEAREST).astype(np.int32)
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
        return {**self.plan.describe(), "flips_by": "map averaging" if self.map_flips else "instance fusion"}

    def _segment_labels(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = self.base.segment(image)
        return found.labels, found.scores

    def segment_labels(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = np.asarray(image)
        flips = self.plan.flips[:1] if self.map_flips else self.plan.flips
        passes = []
        for scale in self.plan.scales:
            shape = (max(8, int(round(image.shape[0] * scale))), max(8, int(round(image.shape[1] * scale))))
            scaled = _resize(image, shape, nearest=False)
            for axes in flips:
                labels, scores = self._segment_labels(np.flip(scaled, axes) if axes else scaled)
                labels = np.flip(labels, axes) if axes else labels
                passes.append((np.ascontiguousarray(_resize(labels, image.shape, nearest=True)), scores))
        if len(passes) == 1:
            return passes[0]
        return fuse_segmentations(passes, iou_threshold=self.plan.iou_threshold, vote=self.plan.vote)

    def segment(self, image: np.ndarray):
        from micrometry.particles.segmenter import Instances

        labels, scores = self.segment_labels(image)
        return Instances(labels=labels, scores=scores)

    def segment_batch(self, images: list[np.ndarray]) -> list:
        return [self.segment(image) for image in images]
