"""Depth maps as 16-bit ImageJ TIFFs: 0.01 nm per count, 65535 where there is no value.

Written by ``depth frame`` (and the SEM frame simulator's truth), read back by
the tests and by anyone with Fiji: the pixel size is in the resolution tags
(unit nm, as :func:`micrometry.io.image.read_calibration` reads it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEPTH_COUNTS_PER_NM = 100  # 16-bit depth maps hold 0.01 nm steps (0..655.34 nm); 65535 = no value
NODATA = 65535


def depth_to_u16(depth_map: np.ndarray) -> np.ndarray:
    """Depth below the top surface (nm; NaN = none) -> uint16 counts of 0.01 nm, 65535 where none."""
    depth_map = np.asarray(depth_map, dtype=np.float64)
    counts = np.clip(np.rint(np.nan_to_num(depth_map) * DEPTH_COUNTS_PER_NM), 0, NODATA - 1).astype(np.uint16)
    counts[~np.isfinite(depth_map)] = NODATA
    return counts


def write_depth_tiff(path: str | Path, depth_map: np.ndarray, nm_per_px: float) -> None:
    """A frame's depth map as a 16-bit ImageJ TIFF: 0.01 nm per count (65535: no value), the pixel
    size in the resolution tags (unit nm, as ``read_calibration`` reads it)."""
    import tifffile

    from micrometry.io.atomic import atomic_path

    with atomic_path(Path(path)) as tmp:
        tifffile.imwrite(
            tmp,
            depth_to_u16(depth_map),
            imagej=True,
            resolution=(1.0 / nm_per_px, 1.0 / nm_per_px),
            metadata={
                "unit": "nm",
                "Info": "depth below the top surface: value / 100 = nm; 65535 = no value",
            },
        )


def read_depth_tiff(path: str | Path) -> np.ndarray:
    """A TIFF of :func:`write_depth_tiff` -> float32 depth in nm, NaN where it holds none."""
    import tifffile

    counts = tifffile.imread(path)
    out = counts.astype(np.float32) / DEPTH_COUNTS_PER_NM
    out[counts == NODATA] = np.nan
    return out
