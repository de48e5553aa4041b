"""Which particle-table columns (ImageJ names) carry a unit: the vocabulary of calibration and labels.

Constants only, so that reports and the web view can read it without loading the measuring code.
"""

from __future__ import annotations

# Descriptors that carry a length unit.
DESCRIPTOR_LENGTHS = (
    "Perim.",
    "Feret",
    "MinFeret",
    "Major",
    "Minor",
    "X",
    "Y",
    "EqDiam",
    "PerimEqDiam",
    "GeodLength",
    "GeodThickness",
)
# Every column that carries a length, an area or an angle: calibration multiplies lengths by
# pixel_size and areas by pixel_size ** 2; angles are degrees whatever the calibration.
LENGTH_COLUMNS = [*DESCRIPTOR_LENGTHS, "BX", "BY", "Width", "Height"]  # with the bounding box
AREA_COLUMNS = ["Area"]
ANGLE_COLUMNS = ["Angle", "FeretAngle"]
