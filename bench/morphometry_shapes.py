"""Validation of Perim., Feret, MinFeret, Area, Major/Minor against analytic shapes.

Prints a Markdown table of signed relative errors (percent) per shape and a
summary of the worst absolute error per shape family. Run:
``.venv/bin/python bench/morphometry_shapes.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from micrometry.particles.analytic import validation_shapes
from micrometry.particles.morphometry import measure_labels


def main() -> None:
    rows = []
    for shape in validation_shapes():
        m = measure_labels(shape.mask.astype(np.int32)).iloc[0]
        true_angle = shape.major_angle
        rows.append({
            "shape": shape.name,
            "Area %": 100 * (m["Area"] / shape.area - 1),
            "Perim. %": 100 * (m["Perim."] / shape.perimeter - 1),
            "Feret %": 100 * (m["Feret"] / shape.feret - 1),
            "MinFeret %": 100 * (m["MinFeret"] / shape.min_feret - 1),
            "Circ.": m["Circ."],
            "FeretAngle err deg": (m["FeretAngle"] - true_angle + 90) % 180 - 90,
        })
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(table.to_markdown(index=False, floatfmt="+.2f") if _has_tabulate() else table.round(2).to_string())
    family = table["shape"].str.split().str[0]
    summary = table.drop(columns=["shape", "Circ."]).abs().groupby(family).max()
    print()
    print("worst |error| per family")
    print(summary.round(2).to_string())


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
