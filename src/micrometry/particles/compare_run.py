"""``micrometry particles compare``: load two batches, compare them, write CSV and JSON.

The HTML report is presentation, a layer above the job: the command passes
:func:`micrometry.report.particles.write_compare_report` as ``render``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from micrometry.errors import InputError
from micrometry.io.atomic import atomic_dir, write_json
from micrometry.particles.compare import CompareSettings, compare_tables, comparison_summary
from micrometry.particles.measure import (
    CSV_FLOAT_FORMAT,
    TABLE_SUFFIXES,
    measure_source,
    read_table,
    unreliable_warning,
)

COMPARE_CSV = "compare.csv"
COMPARE_JSON = "compare.json"
REPORT_HTML = "report.html"
# Saved with the comparison so that 'micrometry report' can redraw it.
BATCH_A = "batch_a.parquet"
BATCH_B = "batch_b.parquet"


@dataclass
class BatchComparison:
    """What one comparison of two batches found (written to ``compare.csv`` and ``compare.json``).

    Attributes
    ----------
    a, b : DataFrame
        The two batches' particle tables.
    comparison : DataFrame
        One row per descriptor (``changed``, ``verdict``, statistics).
    summary : dict
        ``compare.json``'s content (the decision ``rule``, ``inputs``, ...).
    names : (str, str)
        Short names of the batches for figures.
    """

    a: pd.DataFrame
    b: pd.DataFrame
    comparison: pd.DataFrame
    summary: dict
    names: tuple[str, str]


def load_batch(
    path: str | Path,
    model: str | None = None,
    pixel_size: float | None = None,
    unit: str | None = None,
    exclude_edges: bool = False,
) -> pd.DataFrame:
    """A batch's particle table: read a measure table, or measure a label/COCO/image source now."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        table = read_table(path)
    elif model is not None or path.is_dir() or path.suffix.lower() == ".json":
        table = measure_source(path, pixel_size=pixel_size, unit=unit, model=model, n_boot=100).particles
    elif not path.exists():
        raise InputError("no such file or folder", path)
    else:
        raise InputError(
            "expected a .csv/.parquet table from 'particles measure', a label folder or a COCO .json", path
        )
    if exclude_edges and "TouchesBorder" in table:
        table = table[~table["TouchesBorder"].astype(bool)]
    return table


def run_compare(
    a: str | Path,
    b: str | Path,
    out: str | Path,
    settings: CompareSettings,
    model: str | None = None,
    pixel_size: float | None = None,
    unit: str | None = None,
    exclude_edges: bool = False,
    overwrite: bool = False,
    render: Callable[[BatchComparison, Path], None] | None = None,
) -> BatchComparison:
    """Compare batch ``a`` with batch ``b`` and write ``out/`` (compare.csv, compare.json, the tables).

    ``render(result, folder)``, when given, adds more files to the output folder
    before it appears (the command passes the HTML report's writer).
    """
    with atomic_dir(out, overwrite=overwrite) as tmp:
        table_a = load_batch(a, model, pixel_size, unit, exclude_edges)
        table_b = load_batch(b, model, pixel_size, unit, exclude_edges)
        for what, table in (("batch A: ", table_a), ("batch B: ", table_b)):
            line = unreliable_warning(table, what)
            if line:
                warnings.warn(line)
        comparison = compare_tables(table_a, table_b, settings=settings)
        summary = comparison_summary(comparison, settings)
        summary["inputs"] = {"a": str(a), "b": str(b), "exclude_edges": exclude_edges}
        comparison.to_csv(tmp / COMPARE_CSV, index=False, float_format=CSV_FLOAT_FORMAT)
        write_json(tmp / COMPARE_JSON, summary)
        table_a.to_parquet(tmp / BATCH_A, index=False)
        table_b.to_parquet(tmp / BATCH_B, index=False)
        names = (Path(a).stem or "A", Path(b).stem or "B")
        if names[0] == names[1]:
            names = ("A", "B")
        result = BatchComparison(table_a, table_b, comparison, summary, names)
        if render is not None:
            render(result, tmp)
    return result
