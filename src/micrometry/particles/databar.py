"""Segmenting and measuring micrographs that carry a data bar (``--pixel-size auto``).

The data bar (scale bar, label, tool settings) is read by
:func:`micrometry.io.scalebar.read_scale_bar`; here it is left out of the
analysis: the image is cropped to the rows above (or below) the band before a
model sees it, and the labels are padded back to the full image with the band
empty, so no particle comes from the bar's text and the label images keep the
image's size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from micrometry.io.scalebar import ScaleBar, image_rows, read_scale_bar
from micrometry.particles.segmenter import Instances

#: The record's calibration source for a scale bar.
SCALE_BAR_SOURCE = "scale bar"

#: Lengths in micrometres of the units a scale bar may give.
UM_PER_UNIT = {"nm": 1e-3, "um": 1.0, "mm": 1e3}


def convert(value: float, unit: str, to: str) -> float:
    """``value`` in ``unit`` (nm, um, mm) expressed in ``to``."""
    return value * UM_PER_UNIT[unit] / UM_PER_UNIT[to]


def band_of(scale_bar: ScaleBar | dict) -> tuple[int, int]:
    """The data bar's ``[start, stop)`` rows of a scale bar (object or its record)."""
    band = scale_bar.band_rows if isinstance(scale_bar, ScaleBar) else scale_bar["band_rows"]
    return int(band[0]), int(band[1])


def crop(image: np.ndarray, band: tuple[int, int]) -> np.ndarray:
    """The image without its data bar's rows."""
    return image[image_rows(image.shape, band)]


def pad(found: Instances, shape: tuple[int, ...], band: tuple[int, int]) -> Instances:
    """Instances of a cropped image placed back into the full image (the band stays empty)."""
    labels = np.zeros(shape[:2], np.int32)
    labels[image_rows(shape, band)] = found.labels
    info = {**(found.info or {}), "data_bar_rows": list(band)}
    return Instances(labels, found.scores, info)


def segment_without_bar(segmenter, image: np.ndarray, band: tuple[int, int]) -> Instances:
    """Segment ``image`` with its data bar left out."""
    return pad(segmenter.segment(crop(image, band)), image.shape, band)


def scale_bar_record(image: np.ndarray, path: str | Path | None = None) -> dict:
    """Read the scale bar (raises :class:`~micrometry.io.scalebar.ScaleBarError` when unsure) as a
    JSON-ready record with ``source``."""
    return {**read_scale_bar(image, path).as_dict(), "source": SCALE_BAR_SOURCE}
