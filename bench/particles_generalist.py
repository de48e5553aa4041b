"""The generalist particle model: how the shipped one is made, and how it compares per imaging mode.

Two subcommands::

    # reproduce the shipped model (synthetic mix of imaging modes, sizes, densities, noise levels)
    python bench/particles_generalist.py shipped --work WORK --out MODEL [--device cuda --minutes 4.3]

    # one table of segm AP per imaging mode (old vs new shipped model) + fine-tuning curves
    python bench/particles_generalist.py bench --work WORK [--old OLD_MODEL] [--new MODEL]

The shipped model is trained on every imaging mode but one (``darkfield``, held out so that
the fine-tuning curves measure adaptation to a mode the model never saw), with random
intensity inversion and gamma, and with automatic size: every training image is resized so
that its median particle measures 20 network pixels. Run from the repository root with
``PYTHONPATH=src``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: The shipped model's imaging modes (darkfield is held out for the fine-tuning curves).
SHIPPED_MODES = ("brightfield", "low-contrast", "uneven", "phase", "phase-negative", "fluorescence")
HELD_OUT_MODE = "darkfield"
ALL_MODES = (*SHIPPED_MODES, HELD_OUT_MODE)
#: (size range px, density, noise, height, width): one synth call each, images cycling through the modes.
RECIPES = (
    ("8,24", "crowded", "normal", 512, 640),
    ("8,24", "touching", "high", 512, 640),
    ("12,40", "normal", "low", 512, 640),
    ("12,40", "overlapping", "normal", 512, 640),
    ("20,60", "overlapping", "high", 512, 640),
    ("12,110", "normal", "normal", 768, 960),
    ("12,110", "sparse", "high", 768, 960),
    ("12,110", "touching", "normal", 768, 960),
    ("30,90", "crowded", "normal", 768, 960),
    ("30,90", "sparse", "low", 768, 960),
    ("50,150", "normal", "normal", 1024, 1280),
    ("50,150", "touching", "high", 1024, 1280),
)
#: The shipped model's network (wider than the CPU default: it has to cover every mode).
SHIPPED_WIDTHS = [24, 48, 96, 192]
#: The commit whose shipped particle model is "the old one" (dark-on-bright only, fixed scale 0.5).
OLD_COMMIT = "710876d"
OLD_MODEL_PATH = "src/micrometry/assets/models/particles-default"


def micrometry(*args: str) -> list[str]:
    return [sys.executable, "-m", "micrometry", *map(str, args)]


def synth_mix(work: Path, n_per_recipe: int, modes: tuple[str, ...], seed: int, jobs: int,
              recipes=RECIPES, n_test: int = 0) -> list[Path]:
    """Run one ``synth particles`` per recipe in parallel; returns the output folders."""
    def one(k: int) -> Path:
        sizes, density, noise, h, w = recipes[k]
        out, truth = work / "synth" / f"r{k:02d}", work / "truth" / f"r{k:02d}"
        if not (out / "train" / "annotations.json").is_file():
            subprocess.run(micrometry("synth", "particles", out, "--truth", truth, "--seed", seed + k,
                                      "--n-train", n_per_recipe, "--n-test", n_test, "--n-batch", 0,
                                      "--height", h, "--width", w, "--modes", ",".join(modes),
                                      "--size-range", sizes, "--density", density, "--noise", noise,
                                      "--overwrite"),
                           check=True, stdout=subprocess.DEVNULL)
        return out

    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(one, range(len(recipes))))


def merge_coco(parts: list[Path], out: Path, split: str = "train") -> Path:
    """One COCO folder from the ``split`` folders of several synth outputs (ids renumbered)."""
    shutil.rmtree(out, ignore_errors=True)
    (out / "images").mkdir(parents=True)
    images, annotations, categories = [], [], None
    for k, part in enumerate(parts):
        coco = json.loads((part / split / "annotations.json").read_text())
        categories = categories or coco["categories"]
        ids = {}
        for im in coco["images"]:
            ids[im["id"]] = len(images) + 1
            name = f"r{k:02d}_{im['file_name']}"
            os.link(part / split / "images" / im["file_name"], out / "images" / name)
            images.append({**im, "id": ids[im["id"]], "file_name": name})
        for ann in coco["annotations"]:
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": ids[ann["image_id"]]})
    (out / "annotations.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                      "categories": categories}))
    return out


def make_shipped(args) -> None:
    """Data, training and export of the shipped model (the command the README names)."""
    from micrometry.particles.models.training import TrainSettings, train_model

    work = Path(args.work)
    t0 = time.perf_counter()
    parts = synth_mix(work, args.n_per_recipe, SHIPPED_MODES, args.seed, args.jobs)
    data = merge_coco(parts, work / "mix")
    print(f"data: {len(parts)} recipes x {args.n_per_recipe} images in {time.perf_counter() - t0:.0f} s -> {data}",
          flush=True)
    settings = TrainSettings(epochs=10_000, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                             crop=args.crop, widths=list(SHIPPED_WIDTHS), seed=args.seed,
                             time_budget_s=args.minutes * 60, device=args.device, workers=args.workers,
                             val_fraction=0.08)
    run = work / "run"
    metrics = train_model(data, run, settings, overwrite=True)
    best = metrics["best"]
    print(f"trained {metrics['final']['epoch']} epochs in {metrics['final']['elapsed_s'] / 60:.1f} min; best epoch "
          f"{best['epoch']}: val AP {best['val_ap']:.3f}", flush=True)
    subprocess.run(micrometry("export", run, "--out", args.out, "--overwrite"), check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ship = sub.add_parser("shipped", help="reproduce the shipped particle model")
    ship.add_argument("--work", required=True, help="folder for the synthetic data and the run")
    ship.add_argument("--out", required=True, help="exported model folder to write")
    ship.add_argument("--device", default="auto")
    ship.add_argument("--minutes", type=float, default=4.3, help="training time budget")
    ship.add_argument("--workers", type=int, default=max(0, (os.cpu_count() or 1) - 2))
    ship.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel synth processes")
    ship.add_argument("--n-per-recipe", type=int, default=12)
    ship.add_argument("--steps-per-epoch", type=int, default=150)
    ship.add_argument("--batch-size", type=int, default=32)
    ship.add_argument("--crop", type=int, default=256)
    ship.add_argument("--seed", type=int, default=2026)
    ship.set_defaults(func=make_shipped)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
