"""Validation of Area, Perim., Feret, MinFeret, FeretAngle and Solidity against analytic shapes.

Prints one row per shape (signed errors: relative for area and perimeter,
in pixels for the calipers) and the worst absolute error per shape family, as
Markdown for docs/morphometry.md. Run: ``.venv/bin/python bench/morphometry_shapes.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from micrometry.particles.analytic import AnalyticShape, validation_shapes
from micrometry.particles.morphometry import measure_labels


def feret_angle_error(shape: AnalyticShape, measured: float) -> float:
    """Angle error in degrees; NaN for discs (every direction is a diameter).

    A rectangle has two equally long diagonals: the error is to the nearer one.
    """
    if shape.name.startswith("disc"):
        return math.nan
    candidates = [shape.major_angle]
    if shape.name.startswith(("rectangle", "square")):
        tilt = math.degrees(math.atan2(shape.min_feret, math.sqrt(shape.feret**2 - shape.min_feret**2)))
        long_side = shape.major_angle - tilt  # major_angle is the diagonal at long side + tilt
        candidates = [long_side + tilt, long_side - tilt]
    return min(abs((measured - c + 90) % 180 - 90) for c in candidates)


def validation_table() -> pd.DataFrame:
    rows = []
    for shape in validation_shapes():
        m = measure_labels(shape.mask.astype(np.int32)).iloc[0]
        rows.append(
            {
                "shape": shape.name,
                "Area %": 100 * (m["Area"] / shape.area - 1),
                "Perim. %": 100 * (m["Perim."] / shape.perimeter - 1),
                "Feret px": m["Feret"] - shape.feret,
                "MinFeret px": m["MinFeret"] - shape.min_feret,
                "FeretAngle deg": feret_angle_error(shape, m["FeretAngle"]),
                "Solidity": m["Solidity"],
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    table = validation_table()
    print(_markdown(table))
    family = table["shape"].str.split().str[0]
    worst = table.drop(columns=["shape"]).abs().groupby(family).max()
    worst["Solidity"] = table.groupby(family)["Solidity"].min()
    worst = (
        worst.rename(columns={"Solidity": "min Solidity"}).reset_index().rename(columns={"shape": "family"})
    )
    print()
    print("Worst |error| per family (min Solidity: true value 1)")
    print(_markdown(worst))


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = [
            f"{v:+.2f}"
            if isinstance(v, float) and c != "Solidity" and c != "min Solidity"
            else (f"{v:.3f}" if isinstance(v, float) else str(v))
            for c, v in row.items()
        ]
        lines.append("| " + " | ".join(c.replace("+nan", "-") for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
