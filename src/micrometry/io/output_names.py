"""One output file per input: names that cannot collide, checked before any work.

Prediction commands write one file per input image, named after it (a depth
map ``NAME.png``, a label image ``labels/NAME.png``). Two inputs that would get
the same output name (``a.png`` and ``a.tif``; ``sub1/img.png`` and
``sub2/img.png`` from a list) would silently leave one result where two were
expected, so they are refused up front, naming both inputs.
"""

from __future__ import annotations

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
