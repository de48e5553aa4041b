"""Seconds per image of ``particles predict`` at real sizes, decoding and writing included.

Two workloads, synthesised with fixed seeds into ``--work`` (nothing downloaded):

* ``nuclei``: 1024 x 1280 images of crowded ~20 px particles (``synth particles --density crowded
  --size-range 14,26``, fluorescence and brightfield), 1,000+ particles per image;
* ``default``: the default ``synth particles`` images (1024 x 1280, median diameter 30 px).

Each model predicts every image of a workload through ``predict_folder`` (reading, sizing passes,
network, decoding, label PNG, ROI set, overlay, COCO results, reliability verdict): the table gives
seconds per image and per Mpx, and where the time went: the network passes (sizing passes included),
the decoding of instances, and the rest (reading, writing the label PNG, ROI set, overlay and COCO
results, the verdict). Model loading is left out (once per run).

To compare two source trees (before/after a change) on a shared machine, give several ``--src``: each
round runs every tree once, in turn, in its own process, so both see the same load; the load average
is printed with every row. Run::

    .venv/bin/python bench/speed_particles.py [--work bench-out/speed] [--model shipped --model RUN]
        [--src OLD/src --src NEW/src --rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKLOADS = {
    "nuclei": [
        "--height", "1024", "--width", "1280", "--density", "crowded", "--size-range", "14,26",
        "--modes", "fluorescence,brightfield", "--seed", "11",
    ],
    "default": ["--height", "1024", "--width", "1280", "--seed", "12"],
}  # fmt: skip


def make_workloads(work: Path, n_images: int) -> dict[str, Path]:
    """Synthesise each workload's test images once (``WORK/<name>/test/images``)."""
    folders = {}
    for name, options in WORKLOADS.items():
        out = work / name
        images = out / "test" / "images"
        if not images.is_dir():
            subprocess.run(
                [sys.executable, "-m", "micrometry", "--quiet", "synth", "particles", str(out), "--truth",
                 str(work / f"{name}_truth"), "--n-train", "0", "--n-test", str(n_images), "--n-batch", "0",
                 "--overwrite", *options],
                check=True,
            )  # fmt: skip
        folders[name] = images
    return folders


def measure(model: str, images: Path, threads: int) -> dict:
    """Predict every image of ``images`` with ``model`` in this process; seconds by stage (per image)."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from micrometry.particles.models.base import load_particle_model
    from micrometry.particles.predict import predict_folder

    segmenter = load_particle_model(model)
    stages = {"network_s": 0.0, "decode_s": 0.0}
    net = getattr(segmenter, "predict_maps", None)
    method = getattr(segmenter, "method", None)
    if net is not None and method is not None:  # a dense model: time its two halves

        def timed(function, key):
            def wrapper(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    stages[key] += time.perf_counter() - start

            return wrapper

        segmenter.predict_maps = timed(segmenter.predict_maps, "network_s")
        method.decode = timed(method.decode, "decode_s")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = predict_folder(segmenter, images, Path(tmp) / "pred")
        total = time.perf_counter() - start
        record = json.loads((Path(tmp) / "pred" / "prediction.json").read_text())
    n = record["images"]
    segment = float(summary["segment_seconds"] if isinstance(summary, dict) else summary.segment_seconds)
    pixels = np.mean([_pixels(images / p["file"]) for p in record["per_image"]])
    return {
        "images": n,
        "particles_per_image": record["particles"] / n,
        "mpx": pixels / 1e6,
        "total_s": total / n,
        "s_per_mpx": total / n / (pixels / 1e6),
        "segment_s": segment / n,
        "network_s": stages["network_s"] / n,
        "decode_s": stages["decode_s"] / n,
        "other_s": (total - segment) / n,
        "scale": float(np.mean([p.get("scale") or 0 for p in record["per_image"]])),
        "unreliable": sum(not p.get("reliable", True) for p in record["per_image"]),
    }


def _pixels(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as image:
        return image.width * image.height


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("bench-out/speed"))
    parser.add_argument("--model", action="append", help="shipped (default), a run or an exported model")
    parser.add_argument("--src", action="append", help="source trees to compare (default: this one)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--images", type=int, default=2, help="images per workload")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workload", action="append", choices=list(WORKLOADS))
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "IMAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child: one model, one folder, in this process
        print(json.dumps(measure(args.one[0], Path(args.one[1]), args.threads)))
        return
    folders = make_workloads(args.work, args.images)
    sources = args.src or [str(Path(__file__).resolve().parents[1] / "src")]
    header = (
        f"{'tree':<28} {'model':<10} {'workload':<8} {'part/img':>8} {'Mpx':>5} {'s/img':>6} {'s/Mpx':>6} "
        f"{'net s':>6} {'dec s':>6} {'other s':>7} {'load':>5}"
    )
    print(header)
    for _ in range(args.rounds):
        for model in args.model or ["shipped"]:
            for workload in args.workload or list(WORKLOADS):
                for src in sources:  # alternately: every tree under the same load
                    env = {
                        **os.environ,
                        "PYTHONPATH": src,
                        "OMP_WAIT_POLICY": "PASSIVE",
                        "MICROMETRY_QUIET": "1",
                    }
                    load = os.getloadavg()[0]
                    out = subprocess.run(
                        [sys.executable, __file__, "--one", model, str(folders[workload]), "--threads",
                         str(args.threads)],
                        env=env, capture_output=True, text=True, check=True,
                    )  # fmt: skip
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    tree = str(Path(src).parent)[-28:]
                    print(
                        f"{tree:<28} {Path(model).name[:10]:<10} {workload:<8} {r['particles_per_image']:>8.0f} "
                        f"{r['mpx']:>5.2f} {r['total_s']:>6.2f} {r['s_per_mpx']:>6.2f} {r['network_s']:>6.2f} "
                        f"{r['decode_s']:>6.2f} {r['other_s']:>7.2f} {load:>5.1f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
