"""One output file per input: names that cannot collide, checked before any work.

Prediction commands write one file per input image, named after it (a depth
map ``NAME.png``, a label image ``labels/NAME.png``). Two inputs that would get
the same output name (``a.png`` and ``a.tif``; ``sub1/img.png`` and
``sub2/img.png`` from a list) would silently leave one result where two were
expected, so they are refused up front, naming both inputs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from micrometry.errors import DatasetError


def unique_output_names(
    inputs: Sequence[str | Path], suffix: str, where: str | Path | None = None
) -> list[str]:
    """The output file name of each input (its stem + ``suffix``), refusing any two that collide.

    Names are compared without regard to case: on a case-insensitive file
    system (macOS, Windows) ``A.png`` and ``a.png`` are one file.

    Parameters
    ----------
    inputs : sequence of str or Path
        The input files, in order.
    suffix : str
        The outputs' suffix, with its dot (``".png"``).
    where : str or Path, optional
        What the error names (the input folder or list); the first input otherwise.

    Returns
    -------
    list of str
        One name per input, in order.

    Raises
    ------
    DatasetError
        Two inputs would write the same output file.
    """
    names = [Path(p).stem + suffix for p in inputs]
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        j = first.setdefault(name.casefold(), i)
        if j != i:
            raise DatasetError(
                f"{inputs[j]} and {inputs[i]} would both be written as {name}: "
                "rename one of them (outputs are named after their inputs)",
                where if where is not None else inputs[i],
            )
    return names


# Most bytes in a file name on common file systems (ext4, xfs, btrfs, APFS, NTFS in UTF-16 units).
NAME_MAX = 255


def fit_file_name(stem: str, suffix: str) -> str:
    """``stem + suffix``, or, when that passes :data:`NAME_MAX` bytes, the stem cut and marked with a
    short hash of the whole stem (``<start>~<8 hex>``), so that outputs derived from a long but legal
    input name (``NAME_RoiSet.zip`` from a 250-character ``NAME.png``) can still be written, and
    two long names sharing their start stay apart."""
    name = stem + suffix
    raw = os.fsencode(name)
    if len(raw) <= NAME_MAX:
        return name
    digest = hashlib.sha1(os.fsencode(stem)).hexdigest()[:8]
    room = NAME_MAX - len(os.fsencode(suffix)) - 1 - len(digest)
    start = os.fsencode(stem)[:room].decode("utf-8", errors="ignore")  # never half a character
    return f"{start}~{digest}{suffix}"
