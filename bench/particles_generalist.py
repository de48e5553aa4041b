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


def synth_mix(
    work: Path,
    n_per_recipe: int,
    modes: tuple[str, ...],
    seed: int,
    jobs: int,
    recipes=RECIPES,
    n_test: int = 0,
) -> list[Path]:
    """Run one ``synth particles`` per recipe in parallel; returns the output folders."""

    def one(k: int) -> Path:
        sizes, density, noise, h, w = recipes[k]
        out, truth = work / "synth" / f"r{k:02d}", work / "truth" / f"r{k:02d}"
        if not (out / "train" / "annotations.json").is_file():
            subprocess.run(
                micrometry(
                    "synth",
                    "particles",
                    out,
                    "--truth",
                    truth,
                    "--seed",
                    seed + k,
                    "--n-train",
                    n_per_recipe,
                    "--n-test",
                    n_test,
                    "--n-batch",
                    0,
                    "--height",
                    h,
                    "--width",
                    w,
                    "--modes",
                    ",".join(modes),
                    "--size-range",
                    sizes,
                    "--density",
                    density,
                    "--noise",
                    noise,
                    "--overwrite",
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
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
    (out / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return out


def make_shipped(args) -> None:
    """Data, training and export of the shipped model (the command the README names)."""
    from micrometry.particles.models.training import TrainSettings, train_model

    work = Path(args.work)
    t0 = time.perf_counter()
    parts = synth_mix(work, args.n_per_recipe, SHIPPED_MODES, args.seed, args.jobs)
    data = merge_coco(parts, work / "mix")
    print(
        f"data: {len(parts)} recipes x {args.n_per_recipe} images in {time.perf_counter() - t0:.0f} s -> {data}",
        flush=True,
    )
    settings = TrainSettings(
        epochs=10_000,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        crop=args.crop,
        widths=list(SHIPPED_WIDTHS),
        seed=args.seed,
        time_budget_s=args.minutes * 60,
        device=args.device,
        workers=args.workers,
        val_fraction=0.08,
    )
    run = work / "run"
    metrics = train_model(data, run, settings, overwrite=True)
    best = metrics["best"]
    print(
        f"trained {metrics['final']['epoch']} epochs in {metrics['final']['elapsed_s'] / 60:.1f} min; best epoch "
        f"{best['epoch']}: val AP {best['val_ap']:.3f}",
        flush=True,
    )
    subprocess.run(micrometry("export", run, "--out", args.out, "--overwrite"), check=True)


def old_model(work: Path) -> Path:
    """The previous shipped model, taken from git history (commit :data:`OLD_COMMIT`)."""
    out = work / "old-shipped"
    if not (out / "weights.safetensors").is_file():
        out.mkdir(parents=True, exist_ok=True)
        for name in ("model.json", "weights.safetensors"):
            blob = subprocess.run(
                ["git", "show", f"{OLD_COMMIT}:{OLD_MODEL_PATH}/{name}"], check=True, capture_output=True
            ).stdout
            (out / name).write_bytes(blob)
    return out


def ap_of(segmenter, dataset, image_ids) -> float:
    """segm AP of ``segmenter`` on some images of a COCO dataset; ``segmenter`` may also be a
    function ``image_id -> segmenter`` (e.g. one told each image's true particle diameter)."""
    from micrometry.io.coco import CocoDataset, instances_to_results
    from micrometry.io.image import read_image
    from micrometry.particles.evaluate import evaluate

    results = []
    for image_id in image_ids:
        chosen = segmenter(image_id) if callable(segmenter) else segmenter
        found = chosen.segment(read_image(dataset.image_path(image_id)))
        results.extend(instances_to_results(image_id, found.labels, found.scores))
    subset = CocoDataset(
        None,
        None,
        [im for im in dataset.images if im.id in set(image_ids)],
        dataset.categories,
        {i: dataset.annotations[i] for i in image_ids},
    )
    return evaluate(results, subset)["segm"]["AP"] or 0.0


def mode_table(work: Path, old: Path, new: Path, n_per_mode: int, seed: int) -> list[dict]:
    """segm AP per imaging mode of held-out synthetic images, old vs new model."""
    from micrometry.io.coco import load_coco
    from micrometry.particles.models import load_particle_model

    recipe = (("12,110", "normal", "normal", 512, 640),)
    part = synth_mix(work / "modes", n_per_mode * len(ALL_MODES), ALL_MODES, seed, 1, recipes=recipe)[0]
    dataset = load_coco(part / "train")
    by_mode: dict[str, list[int]] = {}
    for im in dataset.images:
        by_mode.setdefault(im.extra.get("imaging_mode") if hasattr(im, "extra") else None, []).append(im.id)
    if None in by_mode:  # image entries do not expose the mode: the k-th image is the k-th mode, cyclically
        by_mode = {
            mode: [im.id for k, im in enumerate(dataset.images) if k % len(ALL_MODES) == i]
            for i, mode in enumerate(ALL_MODES)
        }
    from micrometry.particles.models.sizing import median_diameter

    old_seg, new_seg = load_particle_model(old), load_particle_model(new)
    # The new model told each image's true median diameter (as training measured it): what a
    # perfect automatic size would give, to tell sizing errors from the network's own.
    told = lambda image_id: load_particle_model(new, diameter=median_diameter(dataset.labels(image_id)))  # noqa: E731
    rows = []
    for mode in ALL_MODES:
        ids = by_mode[mode]
        rows.append(
            {
                "mode": mode,
                "images": len(ids),
                "in_training": mode in SHIPPED_MODES,
                "old_AP": ap_of(old_seg, dataset, ids),
                "new_AP": ap_of(new_seg, dataset, ids),
                "new_AP_true_diameter": ap_of(told, dataset, ids),
            }
        )
        print(
            f"{mode:15s} old {rows[-1]['old_AP']:.3f} new {rows[-1]['new_AP']:.3f} "
            f"(true diameter {rows[-1]['new_AP_true_diameter']:.3f})",
            flush=True,
        )
    return rows


def finetune_curves(work: Path, new: Path, minutes: float, seed: int, n_train: int) -> dict[str, list]:
    """Validation AP vs minutes on the held-out mode: from scratch vs ``--init`` the new model."""
    from micrometry.particles.models.training import TrainSettings, train_model

    recipe = (("12,110", "normal", "normal", 512, 640),)
    part = synth_mix(work / "heldout", n_train, (HELD_OUT_MODE,), seed + 1, 1, recipes=recipe)[0]
    curves = {}
    for name, init in (("scratch", None), ("init shipped", str(new))):
        settings = TrainSettings(
            epochs=10_000,
            steps_per_epoch=8,
            batch_size=4,
            crop=160,
            widths=list(SHIPPED_WIDTHS),
            time_budget_s=minutes * 60,
            val_fraction=0.25,
            seed=seed,
            init=init,
            device="cpu",
        )
        metrics = train_model(
            part / "train", work / f"run-{name.replace(' ', '-')}", settings, overwrite=True, threads=1
        )
        curves[name] = [(round(h["elapsed_s"] / 60, 2), round(h["val_ap"], 3)) for h in metrics["history"]]
        print(name, curves[name], flush=True)
    return curves


def quarter_time_check(curves: dict[str, list]) -> str:
    """Does ``init shipped`` reach the from-scratch final AP within a quarter of its time?"""
    scratch, init = curves["scratch"], curves["init shipped"]
    target, total = max(ap for _, ap in scratch[-2:]), scratch[-1][0]
    reached = next((t for t, ap in init if ap >= target), None)
    if reached is None:
        return f"init shipped never reached the from-scratch final AP {target:.3f}"
    verdict = "met" if reached <= total / 4 else "missed"
    if target <= 0:
        verdict += "; trivially: from scratch learned nothing in its budget"
    return (
        f"init shipped reached the from-scratch final AP {target:.3f} after {reached:.2f} min, "
        f"{100 * reached / total:.0f} % of the from-scratch {total:.2f} min (target 25 %: {verdict})"
    )


def run_bench(args) -> None:
    import torch

    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    old = Path(args.old) if args.old else old_model(work)
    from micrometry.particles.models.base import shipped_model_dir

    new = Path(args.new) if args.new else shipped_model_dir()
    rows = mode_table(work, old, new, args.n_per_mode, args.seed)
    curves = finetune_curves(work, new, args.minutes, args.seed, args.n_train) if args.minutes > 0 else {}
    old_ref = next(r["old_AP"] for r in rows if r["mode"] == "brightfield")
    print(
        f"\nsegm AP per imaging mode ({args.n_per_mode} held-out 512x640 images each, sizes 12-110 px, "
        "density normal; old = previous shipped model at its fixed scale 0.5, new = generalist, automatic size)"
    )
    print(
        "| mode | in new model's training | old AP | new AP | new AP, told the true diameter | "
        "new >= old on brightfield |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {'yes' if r['in_training'] else 'no (held out)'} | {r['old_AP']:.3f} | "
            f"{r['new_AP']:.3f} | {r['new_AP_true_diameter']:.3f} | {'yes' if r['new_AP'] >= old_ref else 'no'} |"
        )
    if curves:
        print(
            f"\nfine-tuning on {HELD_OUT_MODE} ({args.n_train} images 512x640, 25 % held out; CPU, 1 thread; "
            "validation segm AP vs minutes)"
        )
        for name, points in curves.items():
            print(f"| {name} | " + " ".join(f"{t:.2f} min: {ap:.3f};" for t, ap in points) + " |")
        print(quarter_time_check(curves))
    (work / "bench.json").write_text(json.dumps({"modes": rows, "curves": curves}, indent=2))


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
    bench = sub.add_parser("bench", help="AP per imaging mode (old vs new) and fine-tuning curves")
    bench.add_argument("--work", required=True)
    bench.add_argument("--old", help="the previous shipped model folder (default: from git history)")
    bench.add_argument("--new", help="the model to compare (default: the shipped one)")
    bench.add_argument("--n-per-mode", type=int, default=3)
    bench.add_argument("--n-train", type=int, default=8, help="held-out-mode images for fine-tuning")
    bench.add_argument(
        "--minutes",
        type=float,
        default=6.0,
        help="training time per fine-tuning curve (0: the mode table only)",
    )
    bench.add_argument("--seed", type=int, default=5000)
    bench.set_defaults(func=run_bench)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
