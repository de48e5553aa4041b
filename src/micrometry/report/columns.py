"""The column names the reports read, in one place, so that a rename elsewhere is one edit here.

Two generations of names exist side by side (old output files stay on disk):

* depth metrology: ``hole_depth``, ``top_cd_x``, ... (unitless names) and
  ``depth_nm``, ``top_cd_x_nm``, ``sidewall_angle_deg``, ... (units in the name).
  The reports use the names with units; :func:`depth_columns` renames old ones.
* particle tables: ImageJ names (``Area``, ``Perim.``, ``EqDiam``) with one
  ``Unit`` column, or the same names carrying their unit (``Area_um2``,
  ``Perim_um``, ``EqDiam_px``). The reports use the ImageJ names plus ``Unit``
  (the figure code labels axes from them); :func:`particle_columns` renames
  names with units back and fills ``Unit``.
"""

from __future__ import annotations

import re

import pandas as pd

from micrometry.particles.columns import ANGLE_COLUMNS, AREA_COLUMNS, DESCRIPTOR_LENGTHS

# Depth metrology: the name the report uses -> older names of the same quantity.
DEPTH_ALIASES = {
    "depth_nm": ("hole_depth",),
    "top_level_nm": ("top_level",),
    "bottom_level_nm": ("bottom_level",),
    "top_cd_x_nm": ("top_cd_x",),
    "top_cd_y_nm": ("top_cd_y",),
    "bottom_cd_x_nm": ("bottom_cd_x",),
    "bottom_cd_y_nm": ("bottom_cd_y",),
    "sidewall_angle_x_deg": ("sidewall_angle_x",),
    "sidewall_angle_y_deg": ("sidewall_angle_y",),
    "sidewall_angle_deg": ("sidewall_angle",),
}

# Particle descriptors that carry a length (or, for Area, an area) unit; ImageJ names.
PARTICLE_LENGTHS = DESCRIPTOR_LENGTHS
PARTICLE_AREAS = tuple(AREA_COLUMNS)
PARTICLE_ANGLES = tuple(ANGLE_COLUMNS)  # degrees, whatever the calibration

# Other spellings of ImageJ names (the particle synthesiser's truth CSV says EqDiameter).
PARTICLE_ALIASES = {"EqDiameter": "EqDiam"}

# "Area_um2", "Perim_um", "EqDiam_px": a name, an underscore, a unit, "2" for areas.
_WITH_UNIT = re.compile(r"(?P<name>[A-Za-z]+)_(?P<unit>[A-Za-zµ]+?)(?P<square>2)?")


def depth_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with old depth-metrology names renamed to the names with units (a copy)."""
    renames = {
        old: new
        for new, olds in DEPTH_ALIASES.items()
        for old in olds
        if old in table.columns and new not in table.columns
    }
    return table.rename(columns=renames)


def particle_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with unit-carrying particle names (``Area_um2``) renamed to ImageJ names and ``Unit`` set.

    A table that already uses ImageJ names comes back unchanged (a copy).
    """
    by_stem = {name.rstrip("."): name for name in (*PARTICLE_LENGTHS, *PARTICLE_AREAS)}
    renames, units = {}, set()
    for column in table.columns:
        match = _WITH_UNIT.fullmatch(str(column))
        if match is None or match["name"] not in by_stem or by_stem[match["name"]] in table.columns:
            continue
        name = by_stem[match["name"]]
        # an area's unit is squared in its name (um2); a length's is not
        if bool(match["square"]) != (name in PARTICLE_AREAS):
            continue
        renames[column] = name
        units.add(match["unit"])
    renames.update(
        {
            old: new
            for old, new in PARTICLE_ALIASES.items()
            if old in table.columns and new not in table.columns
        }
    )
    out = table.rename(columns=renames)
    if "Unit" not in out.columns and len(units) == 1:
        out["Unit"] = units.pop()
    return out


def particle_unit(table: pd.DataFrame) -> str:
    """The length unit of a particle table (after :func:`particle_columns`); 'px' when it says none."""
    if "Unit" in table and len(table):
        return str(table["Unit"].iloc[0])
    return "px"


def descriptor_label(descriptor: str, unit: str) -> str:
    """Axis label of a particle descriptor with its unit: 'EqDiam (um)', 'Area (um²)', 'AR'."""
    if descriptor in PARTICLE_LENGTHS:
        return f"{descriptor} ({unit})"
    if descriptor in PARTICLE_AREAS:
        return f"{descriptor} ({unit}²)"
    if descriptor in PARTICLE_ANGLES:
        return f"{descriptor} (°)"
    return descriptor


def quantity_label(column: str) -> str:
    """Axis label of a depth-metrology column from its unit suffix: 'depth_nm' -> 'depth (nm)'."""
    for suffix, unit in (("_nm", "nm"), ("_deg", "°"), ("_px", "px")):
        if column.endswith(suffix):
            return f"{_words(column[: -len(suffix)])} ({unit})"
    return _words(column)


def _words(name: str) -> str:
    return " ".join("CD" if word == "cd" else word for word in name.split("_"))
