"""The web form's options: one definition of each default and valid range, and the parsing of form values.

The defaults are the CLI's (:mod:`micrometry.options`: ``--nm-per-px 2.0``;
an uncalibrated pixel size means pixels), so the page and the terminal give the
same numbers for the same image.
"""

from __future__ import annotations

import math
import re

from micrometry.errors import InputError
from micrometry.options import DEFAULT_NM_PER_PX, PIXEL_UNIT

NM_PER_PX = DEFAULT_NM_PER_PX
PIXEL_SIZE = 1.0  # one pixel per pixel: uncalibrated
UNIT = PIXEL_UNIT

# Beyond these a value is a typo or an attack, not a calibration (1 m per pixel; 1 mm per SEM pixel).
MAX_PIXEL_SIZE = 1e6
MAX_NM_PER_PX = 1e6
_UNIT = re.compile(r"^[A-Za-zµ]{1,8}$")


def positive_number(text, what: str, default: float, maximum: float) -> float:
    """A finite number in ``(0, maximum]`` from a form field; blank means ``default``.

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
    return value


def pixel_size_or_auto(text) -> float | str:
    """The pixel size field: ``auto`` (read the scale bar) or :func:`positive_number`."""
    if text is not None and str(text).strip().lower() == "auto":
        return "auto"
    return positive_number(text, "pixel size", PIXEL_SIZE, MAX_PIXEL_SIZE)


def length_unit(text, pixel_size: float | str) -> str:
    """The unit of the pixel size: letters only; ``px`` only with a pixel size of 1.

    Raises
    ------
    InputError
        Not a plain unit name, or a calibrated pixel size given in pixels.
    """
    unit = ("" if text is None else str(text).strip()) or UNIT
    if not _UNIT.match(unit):
        raise InputError(f"unit must be a short unit name such as um or nm, got {unit[:20]!r}")
    if pixel_size == "auto":
        return unit  # the scale bar's label gives the unit
    if unit == "px" and pixel_size != 1.0:
        raise InputError(f"a pixel size of {pixel_size:g} needs its unit (um, nm, ...), not px")
    return unit


def flag(text) -> bool:
    """A checkbox: present and not 'off'/'false'/'0'."""
    return text is not None and str(text).strip().lower() not in ("", "0", "false", "off", "no")
