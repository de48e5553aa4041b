"""The generalist particle model: how the shipped one is made, and how it compares per imaging mode.

Three subcommands::

    # rebuild the shipped model on a CPU (synthetic mix of imaging modes, sizes, densities, noise
    # levels, textured grounds, texture-only images); resumable, fit to run in the background
    nohup nice -n 5 python bench/particles_generalist.py shipped --work WORK --out MODEL \
        [--minutes 150 --threads 2] [--resume] [--init shipped] [--device cuda] > WORK.log 2>&1 &

    # one table of segm AP per imaging mode (old vs new shipped model) + fine-tuning curves
    python bench/particles_generalist.py bench --work WORK [--old OLD_MODEL] [--new MODEL]

    # segm AP, count ratio and D50 error per mode (realism modes and texture-only images included)
    python bench/particles_generalist.py modes --work WORK NAME=MODEL [NAME=MODEL ...]

The shipped model is trained on every imaging mode but one (``darkfield``, held out so that
the fine-tuning curves measure adaptation to a mode the model never saw), on the realism
modes (textured grounds, texture inside nuclei, 16-bit high dynamic range, particles of
150-400 px, and texture-only images whose right answer is no particle), on real annotated
nuclei (``--real``, default ``mnfinder-train``: bench/realdata.py's training sets, fetched with
``pip download`` into ``--cache`` when the model is built, never at run time), with random
intensity inversion and gamma, and with automatic size: every training image is resized so
that its median particle measures 20 network pixels. ``shipped`` writes its data and run
under WORK; ``--resume`` goes on from the run's last checkpoint after an interruption (the
synthetic data already written is reused). Run from the repository root with
``PYTHONPATH=src``; docs/particles-models.md gives the recipe and its figures.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realdata  # noqa: E402  (bench/realdata.py: fetches and converts the real sets)

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
#: The realism modes (docs/particles-data.md), in the shipped mix since this recipe.
REALISM_MODES = ("tissue", "dic", "chromatin", "fluorescence-hdr")
#: (size range px, density, noise, height, width, modes): one synth call each, images cycling through
#: the recipe's modes. Large particles, textured grounds and texture-only images (density ``none``).
REALISM_RECIPES = (
    ("12,40", "crowded", "normal", 512, 640, REALISM_MODES),
    ("20,60", "touching", "normal", 512, 640, REALISM_MODES),
    ("30,90", "touching", "low", 768, 960, REALISM_MODES),
    ("12,110", "normal", "high", 768, 960, REALISM_MODES),
    ("150,400", "touching", "normal", 1024, 1280, (*REALISM_MODES, "fluorescence", "brightfield")),
    ("8,24", "none", "normal", 512, 640, ("tissue", "dic", "chromatin")),
    ("8,24", "none", "high", 768, 960, ("dic", "tissue", "fluorescence-hdr")),
    ("16,50", "normal", "normal", 512, 640, ("chromatin",)),  # half of them with cell bodies
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
    n_per_recipe: int | list[int],
    modes: tuple[str, ...],
    seed: int,
    jobs: int,
    recipes=RECIPES,
    n_test: int = 0,
) -> list[Path]:
    """Run one ``synth particles`` per recipe in parallel; returns the output folders.

    ``n_per_recipe``: images per recipe, one number for all or one per recipe.
    """
    counts = [n_per_recipe] * len(recipes) if isinstance(n_per_recipe, int) else n_per_recipe

    def one(k: int) -> Path:
        sizes, density, noise, h, w = recipes[k][:5]
        recipe_modes = recipes[k][5] if len(recipes[k]) > 5 else modes
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
                    counts[k],
                    "--n-test",
                    n_test,
                    "--n-batch",
                    0,
                    "--height",
                    h,
                    "--width",
                    w,
                    "--modes",
                    ",".join(recipe_modes),
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


def merge_coco(folders: list[Path], out: Path) -> Path:
    """One COCO folder from several (ids renumbered; images hard-linked, prefixed by their folder's index)."""
    shutil.rmtree(out, ignore_errors=True)
    (out / "images").mkdir(parents=True)
    images, annotations, categories = [], [], None
    for k, folder in enumerate(folders):
        coco = json.loads((folder / "annotations.json").read_text())
        categories = categories or coco["categories"]
        ids = {}
        for im in coco["images"]:
            ids[im["id"]] = len(images) + 1
            name = f"r{k:02d}_{im['file_name']}"
            os.link(folder / "images" / im["file_name"], out / "images" / name)
            images.append({**im, "id": ids[im["id"]], "file_name": name})
        for ann in coco["annotations"]:
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": ids[ann["image_id"]]})
    (out / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return out


def make_shipped(args) -> None:
    """Data, training and export of the shipped model (the command docs/particles-models.md names)."""
    from micrometry.particles.models.training import TrainSettings, train_model
    from micrometry.train import RunDir

    unknown = sorted(set(args.real) - set(realdata.TRAINING_SETS))
    if unknown:
        sys.exit(f"--real: unknown set(s) {', '.join(unknown)}; known: {', '.join(realdata.TRAINING_SETS)}")
    work = Path(args.work)
    t0 = time.perf_counter()
    recipes = tuple((*r, SHIPPED_MODES) for r in RECIPES) + REALISM_RECIPES
    counts = [classic_count(args)] * len(RECIPES) + [args.n_per_recipe] * len(REALISM_RECIPES)
    parts = synth_mix(work, counts, SHIPPED_MODES, args.seed, args.jobs, recipes=recipes)
    real = [realdata.prepare(name, Path(args.cache)) for name in args.real]
    data = merge_coco([part / "train" for part in parts] + real, work / "mix")
    print(
        f"data: {recipe_counts(args)}"
        + "".join(f" + {real_images(folder)} real images ({folder.name})" for folder in real)
        + f" in {time.perf_counter() - t0:.0f} s -> {data}",
        flush=True,
    )
    settings = TrainSettings(
        epochs=10_000,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        crop=args.crop,
        widths=args.widths,
        seed=args.seed,
        time_budget_s=args.minutes * 60,
        device=args.device,
        workers=args.workers,
        val_fraction=0.08,
        init=args.init,
        precision=args.precision,
    )
    run = work / "run"
    resume = args.resume and (run / "config.json").is_file()
    metrics = train_model(
        data,
        run,
        settings,
        resume=resume,
        overwrite=not resume,
        threads=args.threads,
        given={"time_budget_s"},
        quantize=False,  # made below, from the float16 weights the model ships
    )
    best = metrics["best"]
    print(
        f"trained {metrics['final']['epoch']} epochs in {metrics['final']['elapsed_s'] / 60:.1f} min; best epoch "
        f"{best['epoch']}: val AP {best['val_ap']:.3f}",
        flush=True,
    )
    subprocess.run(micrometry("export", run, "--out", args.out, "--overwrite"), check=True)
    half_weights(Path(args.out))
    # int8 network for CPU prediction, calibrated on training images spread over the recipes
    quantize = micrometry(
        "particles", "quantize", args.out, "--images", work / "mix", "--threads", str(args.threads)
    )
    subprocess.run(quantize, check=True)
    precision = RunDir.existing(run).read_config().get("precision")  # what ran, not what was asked
    record_recipe(Path(args.out), args, metrics, time.perf_counter() - t0, precision)


def classic_count(args) -> int:
    """Images per recipe of the classic imaging modes (``--classic-per-recipe``, else ``--n-per-recipe``)."""
    return args.classic_per_recipe or args.n_per_recipe


def recipe_counts(args) -> str:
    """The synthetic part of the mix in words, e.g. ``12 synth recipes x 12 images + 8 realism recipes x 6``."""
    if classic_count(args) == args.n_per_recipe:
        return f"{len(RECIPES) + len(REALISM_RECIPES)} synth recipes x {args.n_per_recipe} images"
    return (
        f"{len(RECIPES)} synth recipes x {classic_count(args)} images + "
        f"{len(REALISM_RECIPES)} realism recipes x {args.n_per_recipe}"
    )


def real_images(folder: Path) -> int:
    return len(json.loads((folder / "annotations.json").read_text())["images"])


def half_weights(out: Path) -> None:
    """Store an exported model's float32 tensors as float16 (half the size; loaded into float32 networks)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from micrometry.io.atomic import atomic_path

    path = out / "weights.safetensors"
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safe_open handle is no dict)
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def record_recipe(out: Path, args, metrics: dict, seconds: float, precision: str | None) -> None:
    """Write the command, the machine and the budget into the exported model's provenance."""
    import platform

    import torch

    from micrometry.io.atomic import write_json

    document = json.loads((out / "model.json").read_text())
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    machine = (
        torch.cuda.get_device_name(0)
        if device.startswith("cuda")
        else f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
    )
    final = metrics["final"]
    document["provenance"].update(
        {
            "run": (
                "PYTHONPATH=src python bench/particles_generalist.py shipped --work WORK --out MODEL "
                f"--minutes {args.minutes:g} --threads {args.threads} --workers {args.workers} "
                f"--n-per-recipe {args.n_per_recipe} "
                + (f"--classic-per-recipe {args.classic_per_recipe} " if args.classic_per_recipe else "")
                + f"--device {args.device} --precision {args.precision}"
                + (f" --init {args.init}" if args.init else "")
                + f" --real '{','.join(args.real)}'"
                + (f" --widths {','.join(map(str, args.widths))}" if args.widths != SHIPPED_WIDTHS else "")
            ),
            "recipe": (
                f"{recipe_counts(args)} (modes {', '.join(SHIPPED_MODES)}; "
                f"realism {', '.join(REALISM_MODES)}; 150-400 px particles; texture-only images)"
                + "".join(f" + real set {name} ({realdata.TRAINING_SETS[name][1]})" for name in args.real)
                + ", "
                f"{final['epoch']} epochs x {args.steps_per_epoch} steps of {args.batch_size} crops of "
                f"{args.crop} px, widths {'-'.join(map(str, args.widths))}"
                + (f", starting from the weights of {args.init}" if args.init else ", from random weights")
            ),
            "machine": f"{machine}; torch {torch.__version__}; {args.threads} thread(s), {args.workers} crop worker(s)",
            "precision": precision,
            "budget_minutes": args.minutes,
            "trained_minutes": round(final["elapsed_s"] / 60, 1),
            "wall_minutes": round(seconds / 60, 1),
            "weights": "stored as float16 (half the size; loaded into float32 networks)",
            "int8_network": "network.int8.onnx: 'micrometry particles quantize MODEL --images WORK/mix' "
            "(8 training images spread over the recipes)",
        }
    )
    write_json(out / "model.json", document)


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


def mode_parts(work: Path, n_per_mode: int, seed: int) -> list[tuple[str, Path]]:
    """(mode, COCO folder) of the held-out synthetic images of :func:`compare_modes`.

    The seven classic modes are the images :func:`mode_table` scores (same recipe and seed);
    the realism modes and the texture-only images (``none``) come from their own synth calls.
    """
    recipe = (("12,110", "normal", "normal", 512, 640),)
    groups = (
        ("modes", ALL_MODES, recipe),
        ("realism", REALISM_MODES, recipe),
        ("large", ("chromatin", "tissue"), (("150,400", "touching", "normal", 1024, 1280),)),
        ("empty", ("tissue", "dic", "chromatin"), (("8,24", "none", "normal", 512, 640),)),
    )
    parts = []
    for folder, modes, rec in groups:
        part = synth_mix(work / folder, n_per_mode * len(modes), modes, seed, 1, recipes=rec)[0]
        label = {"large": " 150-400 px", "empty": " texture only"}.get(folder, "")
        parts.extend((f"{mode}{label}", part, i, len(modes)) for i, mode in enumerate(modes))
    return parts


def compare_modes(args) -> None:
    """segm AP, count ratio and D50 error per synthetic mode, for several models side by side."""
    import torch

    from micrometry.io.coco import load_coco
    from micrometry.particles.models import load_particle_model as load_segmenter
    from realdata import score_outputs, segment_all

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    models = dict(spec.split("=", 1) for spec in args.models)
    segmenters = {name: load_segmenter(path) for name, path in models.items()}
    rows = []
    for mode, part, index, cycle in mode_parts(work, args.n_per_mode, args.seed):
        dataset = load_coco(part / "train")
        ids = [im.id for k, im in enumerate(dataset.images) if k % cycle == index]
        row = {"mode": mode, "images": len(ids), "true": sum(len(dataset.annotations[i]) for i in ids)}
        for name, segmenter in segmenters.items():
            outputs, seconds = segment_all(segmenter, dataset, ids)
            if row["true"]:
                m = score_outputs(dataset, ids, outputs)
                row[name] = {k: m[k] for k in ("AP", "count_ratio", "D50_err", "count_pred")}
            else:
                row[name] = {"count_pred": int(sum(len(outputs[i][1]) for i in ids))}
            row[name]["s_per_image"] = seconds
        rows.append(row)
        print(json.dumps(row), flush=True)
    names = list(models)
    print(
        f"\nper synthetic mode ({args.n_per_mode} held-out images each; 512x640, sizes 12-110 px, density normal; "
        "150-400 px: 1024x1280, touching; texture only: no particle): segm AP / count ratio / D50 error"
    )
    print("| mode | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for r in rows:
        cells = []
        for name in names:
            m = r[name]
            cells.append(
                f"{m['AP']:.3f} / x{m['count_ratio']:.2f} / {100 * m['D50_err']:+.0f} %"
                if "AP" in m
                else f"{m['count_pred']} particles found"
            )
        print(f"| {r['mode']} | " + " | ".join(cells) + " |")
    (work / "modes.json").write_text(json.dumps(rows, indent=2))


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
    ship = sub.add_parser("shipped", help="rebuild the shipped particle model (CPU; resumable)")
    ship.add_argument("--work", required=True, help="folder for the synthetic data and the run")
    ship.add_argument("--out", required=True, help="exported model folder to write")
    ship.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    ship.add_argument("--minutes", type=float, default=150.0, help="training time budget (minutes)")
    ship.add_argument("--threads", type=int, default=2, help="CPU threads of the training process")
    ship.add_argument("--resume", action="store_true", help="go on from WORK/run after an interruption")
    ship.add_argument("--init", help="start from a model's weights (e.g. 'shipped') instead of random ones")
    ship.add_argument(
        "--workers", type=int, default=1, help="crop-drawing processes beside training (a GPU wants several)"
    )
    ship.add_argument("--jobs", type=int, default=2, help="parallel synth processes")
    ship.add_argument("--n-per-recipe", type=int, default=8)
    ship.add_argument(
        "--classic-per-recipe",
        type=int,
        help="images per recipe of the classic imaging modes (default: --n-per-recipe); more of them "
        "weighs the classic modes more against the realism ones",
    )
    ship.add_argument("--steps-per-epoch", type=int, default=50)
    ship.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="the convolutions' arithmetic (auto: bfloat16 on a CPU with AMX, 2-3x faster; else float32)",
    )
    ship.add_argument("--batch-size", type=int, default=8)
    ship.add_argument("--crop", type=int, default=192)
    ship.add_argument(
        "--widths",
        type=lambda text: [int(w) for w in text.split(",")],
        default=list(SHIPPED_WIDTHS),
        help="channels per U-Net level, comma-separated (default %(default)s)",
    )
    ship.add_argument("--seed", type=int, default=2026)
    ship.add_argument(
        "--real",
        type=lambda text: [name for name in text.split(",") if name],
        default=["mnfinder-train"],
        help="real annotated sets of bench/realdata.py's TRAINING_SETS to add to the mix, fetched "
        "with pip download into --cache ('' for none; default %(default)s)",
    )
    ship.add_argument("--cache", default=str(Path.home() / ".cache" / "micrometry-bench"))
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
    modes = sub.add_parser(
        "modes", help="AP, count ratio and D50 error per synthetic mode, models side by side"
    )
    modes.add_argument("--work", required=True)
    modes.add_argument("models", nargs="+", help="NAME=MODEL (a model folder, 'shipped' or 'watershed')")
    modes.add_argument("--n-per-mode", type=int, default=3)
    modes.add_argument("--seed", type=int, default=5000)
    modes.add_argument("--threads", type=int, default=1)
    modes.set_defaults(func=compare_modes)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
