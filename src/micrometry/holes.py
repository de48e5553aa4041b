"""Contact-hole conventions shared by the depth job and the SEM simulator (below both).

The levels at which critical dimensions and the sidewall angle are read
(docs/depth.md, "Hole metrology"), and the 72x48 window the depth models see:
the measurement (:mod:`micrometry.depth.measure`) and the simulator's truth
files (:mod:`micrometry.synth.sem_dataset`, :mod:`micrometry.synth.sem_frames`)
use these one definitions, so measured and true values mean the same thing.
"""

from __future__ import annotations

import math

import numpy as np

TOP_FRACTION = 0.9
BOTTOM_FRACTION = 0.1
WALL_LEVELS = (0.2, 0.8)
#: rows, columns of a depth model's input window
WINDOW = (72, 48)

# One hole's metrology columns, as measured (micrometry.depth.measure) and as the simulator's truth
# files write them: the same names so that a measured table and its truth line up column by column.
CD_COLUMNS = ("top_cd_x_nm", "top_cd_y_nm", "bottom_cd_x_nm", "bottom_cd_y_nm")
LENGTH_COLUMNS = ("depth_nm", "top_level_nm", "bottom_level_nm", *CD_COLUMNS)
ANGLE_COLUMNS = ("sidewall_angle_x_deg", "sidewall_angle_y_deg", "sidewall_angle_deg")
METROLOGY_COLUMNS = (*LENGTH_COLUMNS, *ANGLE_COLUMNS)
#: What a frame summarises per hole (mean, SD, 3-sigma) and its hole tables carry.
FRAME_QUANTITIES = ("depth_nm", *CD_COLUMNS, "sidewall_angle_deg")


def wall_angle_deg(
    depth_nm: float, chord_low_nm: float, chord_high_nm: float, wall_levels: tuple[float, float] = WALL_LEVELS
) -> float:
    """Sidewall angle from two chords of one axis (degrees from horizontal; NaN if a chord is).

    Shared by the measurement and the simulator's truth, so both mean the same angle.

    Examples
    --------
    >>> round(wall_angle_deg(100.0, 40.0, 60.0), 1)  # rise 60 nm over a run of 10 nm
    80.5
    """
    if not (math.isfinite(chord_low_nm) and math.isfinite(chord_high_nm)):
        return float("nan")
    rise = (wall_levels[1] - wall_levels[0]) * depth_nm
    run = (chord_high_nm - chord_low_nm) / 2.0
    return float(np.degrees(np.arctan2(rise, run)))


def window_origins(site_xy: np.ndarray) -> np.ndarray:
    """``(S, 2)`` int x0, y0 of the 72x48 window centred on each site (round half up)."""
    half = np.array([(WINDOW[1] - 1) / 2, (WINDOW[0] - 1) / 2])
    return np.floor(np.asarray(site_xy) - half + 0.5).astype(int)
