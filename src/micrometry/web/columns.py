"""The table columns the web app reads or renames, in one place (a column rename elsewhere is one edit here).

Depth metrology columns get their units in their names (``depth_nm``,
``sidewall_angle_deg``); once :mod:`micrometry.depth.measure` writes those names
itself, :data:`DEPTH_UNIT_NAMES` no longer matches anything and can go.
Particle columns are found by their ImageJ base name whether or not a unit
suffix follows (``Area``, ``Area_um2``, ``Area_px``).
"""

from __future__ import annotations

import pandas as pd

# measure_maps' names -> names with units; decimals per column (0.01 nm, 0.1 degree).
DEPTH_UNIT_NAMES = {
    "hole_depth": "depth_nm",
    "top_level": "top_level_nm",
    "bottom_level": "bottom_level_nm",
    "top_cd_x": "top_cd_x_nm",
    "top_cd_y": "top_cd_y_nm",
    "bottom_cd_x": "bottom_cd_x_nm",
    "bottom_cd_y": "bottom_cd_y_nm",
    "sidewall_angle_x": "sidewall_angle_x_deg",
    "sidewall_angle_y": "sidewall_angle_y_deg",
    "sidewall_angle": "sidewall_angle_deg",
}
DEPTH_COLUMN = "depth_nm"
DECIMALS_BY_SUFFIX = {"_nm": 2, "_deg": 1}

# Particle columns the page reads, by ImageJ base name.
PARTICLE_ID = "Label"
PARTICLE_SIZE = "EqDiam"  # D10/D50/D90 are of the area-equivalent diameter, as in particles measure
PARTICLE_BORDER = "TouchesBorder"
PARTICLE_UNIT = "Unit"
HISTOGRAM_COLUMNS = ["Area", "Feret", "AR", "Circ.", "Solidity", "Convexity"]


def depth_table(table: pd.DataFrame) -> pd.DataFrame:
    """Metrology table with units in its column names, rounded to the measurement's precision."""
    table = table.rename(columns=DEPTH_UNIT_NAMES)
    for column in table.columns:
        for suffix, decimals in DECIMALS_BY_SUFFIX.items():
            if str(column).endswith(suffix) and pd.api.types.is_float_dtype(table[column]):
                table[column] = table[column].round(decimals)
    return table


def particle_column(table: pd.DataFrame, base: str) -> str | None:
    """The column holding ImageJ's ``base`` measurement, with or without a unit suffix; None if absent."""
    if base in table.columns:
        return base
    return next((c for c in table.columns if str(c).startswith(base + "_")), None)


def particle_header(column: str, unit: str) -> str:
    """A column name for display, with its unit when the name does not carry one."""
    from micrometry.particles.columns import AREA_COLUMNS, LENGTH_COLUMNS

    if column in LENGTH_COLUMNS:
        return f"{column} ({unit})"
    if column in AREA_COLUMNS:
        return f"{column} ({unit}²)"
    return column
