"""Particles per second of ``measure_labels`` on a synthetic label image.

Random ellipses (radii 4..20 px) are drawn into a 2048 x 2048 label image
without overlap; prints particles, seconds and particles/s. Run:
``.venv/bin/python bench/morphometry_speed.py``.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from micrometry.particles.morphometry import measure_labels


def random_labels(size: int = 2048, n: int = 6000, seed: int = 0) -> np.ndarray:
    """Label image of up to ``n`` random ellipses; later ones overwrite earlier ones."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int32)
    for i in range(1, n + 1):
        centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        axes = (int(rng.integers(4, 21)), int(rng.integers(4, 21)))
        cv2.ellipse(labels, centre, axes, float(rng.uniform(0, 180)), 0, 360, i, -1)
    return labels


def main() -> None:
    labels = random_labels()
    start, cpu = time.perf_counter(), time.process_time()
    table = measure_labels(labels, pixel_size=0.5, unit="um")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(
        f"particles {len(table)}  wall {seconds:.2f} s ({len(table) / seconds:.0f}/s)  "
        f"cpu {cpu:.2f} s ({len(table) / cpu:.0f}/s)"
    )


if __name__ == "__main__":
    main()
