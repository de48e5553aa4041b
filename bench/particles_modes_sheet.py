"""Render one PNG per imaging mode of the particle generator, to look at them side by side.

    .venv/bin/python bench/particles_modes_sheet.py FOLDER [--height 512 --width 640 --seed 0]
        [--density normal] [--noise normal] [--size-range 12,110]

Writes ``FOLDER/<mode>.png`` (the image), ``FOLDER/<mode>_truth.png`` (the
image with the annotated visible parts outlined in white) and prints, per
mode, the mean gray level inside the annotated particles and outside them and
the seconds the render took. Nothing here is committed: the PNGs are for eyes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from micrometry.io.image import write_image
from micrometry.synth.particle_dataset import with_options
from micrometry.synth.particle_optics import MODES
from micrometry.synth.particle_scene import SuspensionParams, image_rng, render_image


def outlined(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The image with the label boundaries drawn in white."""
    edges = cv2.morphologyEx(labels.astype(np.float32), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out = image.copy()
    out[edges & (labels > 0)] = 255
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--density", default=None)
    parser.add_argument("--noise", default=None)
    parser.add_argument("--size-range", default=None, help="MIN,MAX px")
    args = parser.parse_args()

    size = tuple(float(v) for v in args.size_range.split(",")) if args.size_range else None
    params = with_options(
        SuspensionParams(height=args.height, width=args.width),
        noise=args.noise,
        density=args.density,
        size_range_px=size,
    )
    args.folder.mkdir(parents=True, exist_ok=True)
    print(
        f"{'mode':16s} {'inside (gray)':>14s} {'outside (gray)':>15s} {'particles':>10s} {'render (s)':>11s}"
    )
    for mode in MODES:
        t0 = time.perf_counter()
        r = render_image(params, image_rng(args.seed, "sheet", 0), mode)
        seconds = time.perf_counter() - t0
        inside = r.labels > 0
        write_image(args.folder / f"{mode}.png", r.image)
        write_image(args.folder / f"{mode}_truth.png", outlined(r.image, r.labels))
        print(
            f"{mode:16s} {r.image[inside].mean():14.1f} {r.image[~inside].mean():15.1f} "
            f"{len(r.annotations):10d} {seconds:11.2f}"
        )


if __name__ == "__main__":
    main()
