"""The web form's options: one definition of each default and valid range, and the parsing of form values.

The defaults are the CLI's (:mod:`micrometry.options`: ``--nm-per-px 2.0``;
an uncalibrated pixel size means pixels), so the page and the terminal give the
same numbers for the same image.
"""

from __future__ import annotations

import math
import re

from micrometry.errors import InputError
from micrometry.options import (
    DEFAULT_NM_PER_PX,
    MAX_NM_PER_PX,
    MAX_PIXEL_SIZE,
    MIN_NM_PER_PX,
    MIN_PIXEL_SIZE,
    PIXEL_UNIT,
)

NM_PER_PX = DEFAULT_NM_PER_PX
PIXEL_SIZE = 1.0  # one pixel per pixel: uncalibrated
UNIT = PIXEL_UNIT

__all__ = [
    "MAX_NM_PER_PX",
    "MAX_PIXEL_SIZE",
    "MIN_NM_PER_PX",
    "MIN_PIXEL_SIZE",
    "NM_PER_PX",
    "PIXEL_SIZE",
    "UNIT",
]
_UNIT = re.compile(r"^[A-Za-zµ]{1,8}$")


def positive_number(text, what: str, default: float, maximum: float, minimum: float = 0.0) -> float:
    """A finite number in ``[minimum, maximum]`` (and > 0) from a form field; blank means ``default``.

    Raises
    ------
    InputError
        Not a number, not finite, not positive or above ``maximum`` (the message names the field).
    """
    text = "" if text is None else str(text).strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{what} must be a number, got {text[:40]!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{what} must be a finite number, got {text[:40]!r}")
    if not 0 < value <= maximum:
        raise InputError(f"{what} must be positive and at most {maximum:g}, got {value:g}")
    if value < minimum:
        raise InputError(f"{what} must be at least {minimum:g}, got {value:g}")
    return value


def pixel_size_or_auto(text) -> float | str:
    """The pixel size field: ``auto`` (read the scale bar) or :func:`positive_number`."""
    if text is not None and str(text).strip().lower() == "auto":
        return "auto"
    return positive_number(text, "pixel size", PIXEL_SIZE, MAX_PIXEL_SIZE, MIN_PIXEL_SIZE)


def length_unit(text, pixel_size: float | str, pixel_size_given: bool = True) -> str:
    """The unit of the pixel size: letters only; ``px`` only with a pixel size of 1.

    Parameters
    ----------
    pixel_size_given : bool
        Whether the form held a pixel size; a unit without one is refused, as
        the CLI refuses ``--unit`` without ``--pixel-size``: pixel values would
        be labelled as calibrated lengths.

    Raises
    ------
    InputError
        Not a plain unit name, a unit without a pixel size, or a calibrated
        pixel size given in pixels.
    """
    unit = ("" if text is None else str(text).strip()) or UNIT
    if not _UNIT.match(unit):
        raise InputError(f"unit must be a short unit name such as um or nm, got {unit[:20]!r}")
    if pixel_size == "auto":
        return unit  # the scale bar's label gives the unit
    if unit != PIXEL_UNIT and not pixel_size_given:
        raise InputError(f"a unit ({unit}) needs a pixel size: give the pixel size in {unit}")
    if unit == "px" and pixel_size != 1.0:
        raise InputError(f"a pixel size of {pixel_size:g} needs its unit (um, nm, ...), not px")
    return unit


def flag(text) -> bool:
    """A checkbox: present and not 'off'/'false'/'0'."""
    return text is not None and str(text).strip().lower() not in ("", "0", "false", "off", "no")
