"""One definition of every option that several commands (and the web app) share.

Each shared option is a factory returning a ``typer.Option`` so that every
command gets the same name, default, unit and validation; a command may only
reword the help. Numbers are validated when the command line is parsed
(finite, in range): a bad value is one line ``error: --opt: ...`` and exit 2,
before any work.

Defaults, and why:

* ``--nm-per-px 2.0``: the pixel size the SEM simulator renders with
  (``synth.sem_physics.SemPhysics.nm_per_px``); the web app uses
  :data:`DEFAULT_NM_PER_PX` too (it used 1, which halved every CD).
* ``--pixel-size`` / ``--unit``: none, i.e. pixels, unless the image metadata
  (TIFF resolution tags, OME-TIFF) calibrates it; ``--unit`` needs a pixel size.
* ``--time-budget`` in **minutes** everywhere (``0.5`` is 30 s; ``0`` no limit);
  run folders store it in seconds (``time_budget_s``).
* ``--threads 0`` (all cores) everywhere: that is torch's own default and the
  fastest on a machine of one's own. The cost measured on busy shared machines
  (2 threads 3-8x slower than 1) came from spinning OpenMP threads, which
  ``OMP_WAIT_POLICY=PASSIVE`` (set by ``import micrometry``, before torch loads) removes; on a
  machine shared with other jobs, ``--threads 1`` is still the polite choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import typer

from micrometry.errors import InputError

DEFAULT_NM_PER_PX = 2.0
DEFAULT_THREADS = 0
PIXEL_UNIT = "px"

# Plausible pixel sizes. Beyond them a value is a typo (or a wrong unit), and areas would under- or
# overflow float64 (1e-300 squared is 0; 1e160 squared is inf): refused, not measured as 0 or inf.
# In any unit: 1e-12 m is below any microscope's pixel, 1e6 mm is a kilometre per pixel.
MIN_PIXEL_SIZE, MAX_PIXEL_SIZE = 1e-12, 1e6
# An SEM pixel: 0.001 nm is far below any SEM's resolution; 1e6 nm is 1 mm.
MIN_NM_PER_PX, MAX_NM_PER_PX = 1e-3, 1e6


# --------------------------------------------------------------------------- validation


def check_number(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    allow_none: bool = True,
) -> Any:
    """``value`` unchanged when it is a finite number in range, else :class:`InputError`.

    Parameters
    ----------
    value : int, float or None
        The parsed option value.
    name : str
        The option's name (``--pixel-size``), which leads the message.
    low, high : float, optional
        Inclusive bounds; ``low_open`` makes the lower bound exclusive (``> low``).
    allow_none : bool
        Whether ``None`` (option not given) passes.
    """
    if value is None:
        if allow_none:
            return value
        raise InputError("a value is required", name)
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"must be a finite number, got {value}", name)
    if low is not None and (value <= low if low_open else value < low):
        raise InputError(f"must be {'>' if low_open else '>='} {low:g}, got {value:g}", name)
    if high is not None and value > high:
        raise InputError(f"must be <= {high:g}, got {value:g}", name)
    return value


def _checker(
    name: str, low: float | None = None, high: float | None = None, low_open: bool = False
) -> Callable[[Any], Any]:
    """A typer callback that validates one numeric option at parse time."""

    def callback(value: Any) -> Any:
        # repeatable options arrive as lists
        if isinstance(value, (list, tuple)):
            return [check_number(v, name, low, high, low_open) for v in value]
        return check_number(value, name, low, high, low_open)

    return callback


def number(
    default: Any,
    *names: str,
    help: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    **kwargs: Any,
) -> Any:
    """A numeric ``typer.Option`` validated at parse time (finite, in ``[low, high]``)."""
    return typer.Option(
        default, *names, help=help, callback=_checker(names[0], low, high, low_open), **kwargs
    )


def positive(default: Any, *names: str, help: str, **kwargs: Any) -> Any:
    """A numeric option that must be finite and > 0."""
    return number(default, *names, help=help, low=0, low_open=True, **kwargs)


def fraction(default: Any, *names: str, help: str, **kwargs: Any) -> Any:
    """A numeric option in ``[0, 1]``."""
    return number(default, *names, help=help, low=0, high=1, **kwargs)


# --------------------------------------------------------------------------- shared options


def nm_per_px_option(help: str = "SEM pixel size in nm (CDs in nm)") -> Any:
    return number(
        DEFAULT_NM_PER_PX,
        "--nm-per-px",
        low=MIN_NM_PER_PX,
        high=MAX_NM_PER_PX,
        help=f"{help}; default {DEFAULT_NM_PER_PX:g}.",
    )


def pixel_size_option(
    help: str = "Pixel side length in --unit (default: from TIFF/OME metadata when "
    "present, else measurements stay in pixels).",
    auto: bool = False,
) -> Any:
    """``--pixel-size``; with ``auto`` it also takes ``auto`` (read the image's scale bar)."""
    if not auto:
        return number(None, "--pixel-size", low=MIN_PIXEL_SIZE, high=MAX_PIXEL_SIZE, help=help)
    help += (
        " 'auto': read each image's burned-in scale bar and its label (nm, um, µm, mm), leaving the"
        " data bar out of the analysis; refused when unsure (docs/scale-bar.md)."
    )
    return typer.Option(None, "--pixel-size", help=help, callback=parse_pixel_size, metavar="SIZE|auto")


AUTO = "auto"


def parse_pixel_size(value: Any) -> float | str | None:
    """``--pixel-size`` as given: None, ``"auto"`` or a finite number > 0 (else :class:`InputError`)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == AUTO):
        return None if value is None else AUTO
    try:
        number_ = float(value)
    except (TypeError, ValueError):
        raise InputError(f"expected a number > 0 or 'auto', got {value!r}", "--pixel-size") from None
    return check_number(number_, "--pixel-size", MIN_PIXEL_SIZE, MAX_PIXEL_SIZE)


def unit_option(
    help: str = "Length unit of --pixel-size (e.g. um, nm); needs --pixel-size or calibrated images.",
) -> Any:
    return typer.Option(None, "--unit", help=help, callback=_check_unit)


def _check_unit(value: str | None) -> str | None:
    if value is not None and (not value.strip() or not value.replace("µ", "u").isidentifier()):
        raise InputError(f"expected a unit name such as um or nm, got {value!r}", "--unit")
    return value


def time_budget_option(help: str = "") -> Any:
    """``--time-budget MIN``; None when not given, so that a resumed run keeps its own budget."""
    text = "Stop training after this many minutes (0.5 = 30 s; 0: no limit)."
    return number(None, "--time-budget", help=f"{text} {help}".strip(), low=0)


def threads_option() -> Any:
    return number(
        DEFAULT_THREADS,
        "--threads",
        low=0,
        help="CPU threads for torch; 0: all cores (default). On a machine shared with other jobs, "
        "1 is kinder (docs: micrometry/options.py).",
    )


def seed_option(help: str = "Random seed.") -> Any:
    return number(0, "--seed", low=0, high=2**32 - 1, help=help)


def overwrite_option(what: str = "outputs") -> Any:
    return typer.Option(False, "--overwrite", help=f"Replace existing {what}.")


def quiet_option() -> Any:
    return typer.Option(
        False,
        "--quiet",
        "-q",
        help="No progress bars (warnings and results still print).",
        callback=_set_quiet,
    )


def _set_quiet(value: bool) -> bool:
    if value:
        import os

        os.environ["MICROMETRY_QUIET"] = "1"
    return value


def minutes_to_seconds(minutes: float | None) -> float | None:
    """``--time-budget`` minutes -> the seconds run folders store; 0 means no limit (None)."""
    if minutes is None:
        return None
    return minutes * 60.0 if minutes > 0 else None


def calibration(
    pixel_size: float | None, unit: str | None, metadata: tuple[float, str] | None = None
) -> tuple[float, str, str]:
    """The pixel size and unit to measure with, and where they came from.

    ``--pixel-size`` wins over image metadata; without either, lengths stay in
    pixels. ``--unit`` alone (no pixel size, no metadata) is refused: it would
    label pixel values as calibrated ones.

    Returns
    -------
    (pixel_size, unit, source)
        ``source`` is ``"--pixel-size"``, ``"metadata"`` or ``"none"``.
    """
    if pixel_size is not None:
        check_number(pixel_size, "--pixel-size", MIN_PIXEL_SIZE, MAX_PIXEL_SIZE)
        if unit is None and pixel_size != 1:
            raise InputError("needs --unit (e.g. --unit um)", "--pixel-size")
        return float(pixel_size), unit or PIXEL_UNIT, "--pixel-size"
    if metadata is not None:
        size, meta_unit = metadata
        if not MIN_PIXEL_SIZE <= size <= MAX_PIXEL_SIZE:
            raise InputError(
                f"the images' calibration ({size:g} {meta_unit}/px) is implausible; give --pixel-size and --unit"
            )
        if unit is not None and unit != meta_unit:
            raise InputError(
                f"{unit} differs from the images' calibration ({size:g} {meta_unit}/px); "
                "give --pixel-size too",
                "--unit",
            )
        return float(size), meta_unit, "metadata"
    if unit is not None and unit != PIXEL_UNIT:
        raise InputError(
            "a unit needs a pixel size: give --pixel-size (the images carry no calibration)", "--unit"
        )
    return 1.0, PIXEL_UNIT, "none"
