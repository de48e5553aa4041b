"""Benchmark the particle data side: generator speed and the watershed baseline's accuracy and speed.

    .venv/bin/python bench/particles_data.py [--n-test 8] [--height 1024] [--width 1280] [--seed 0]

Renders a test set in memory, segments it with the watershed baseline and
prints a table: seconds per generated image, seconds per segmented image,
COCO segm AP / AP50 / AP75 (maxDets 300) and F1 at IoU 0.5. On a shared
machine the timings vary with the load: run it twice.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from micrometry.io.coco import (
    CocoAnnotation,
    CocoDataset,
    CocoImage,
    compressed_rle,
    instances_to_results,
    mask_to_rle,
)
from micrometry.particles.evaluate import evaluate
from micrometry.particles.watershed import WatershedSegmenter
from micrometry.synth.particle_scene import SuspensionParams, image_rng, render_image


def truth_dataset(rendered: list, height: int, width: int) -> CocoDataset:
    images, annotations, next_id = [], {}, 1
    for image_id, r in enumerate(rendered, start=1):
        images.append(CocoImage(image_id, f"{image_id}.png", height, width))
        annotations[image_id] = []
        for i, ann in enumerate(r.annotations, start=1):
            rle = mask_to_rle(r.labels == i)
            annotations[image_id].append(
                CocoAnnotation(
                    next_id, image_id, 1, rle, compressed_rle(rle, height, width), ann["bbox"], ann["area"]
                )
            )
            next_id += 1
    return CocoDataset(None, None, images, [{"id": 1, "name": "particle"}], annotations)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    params = SuspensionParams(height=args.height, width=args.width)
    t0 = time.perf_counter()
    rendered = [render_image(params, image_rng(args.seed, "test", i)) for i in range(args.n_test)]
    gen_s = (time.perf_counter() - t0) / args.n_test

    segmenter = WatershedSegmenter()
    results = []
    t0 = time.perf_counter()
    for image_id, r in enumerate(rendered, start=1):
        inst = segmenter.segment(r.image)
        results.extend(instances_to_results(image_id, inst.labels, inst.scores))
    seg_s = (time.perf_counter() - t0) / args.n_test
    m = evaluate(results, truth_dataset(rendered, args.height, args.width))

    table = Table(
        title=f"particle data bench: {args.n_test} images {args.height}x{args.width}, seed {args.seed}"
    )
    for col in ("what", "value"):
        table.add_column(col)
    rows = [
        ("generation s/image", f"{gen_s:.3f}"),
        ("particles annotated / image", f"{np.mean([len(r.annotations) for r in rendered]):.1f}"),
        ("watershed s/image", f"{seg_s:.3f}"),
        ("watershed segm AP (maxDets 300)", f"{m['segm']['AP']:.3f}"),
        ("watershed segm AP50", f"{m['segm']['AP50']:.3f}"),
        ("watershed segm AP75", f"{m['segm']['AP75']:.3f}"),
        ("watershed bbox AP", f"{m['bbox']['AP']:.3f}"),
        ("watershed F1 @ IoU 0.5", f"{m['matching'][0]['f1']:.3f}"),
        (
            "watershed precision / recall @ 0.5",
            f"{m['matching'][0]['precision']:.3f} / {m['matching'][0]['recall']:.3f}",
        ),
    ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
