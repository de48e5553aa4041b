"""Benchmark the particle models: accuracy, training time and CPU speed on one synthetic set.

    .venv/bin/python bench/particles.py [--work bench-out/particles] [--budget 15] [--n-train 30] [--n-test 10]
        [--variant standard|overlapping] [--models ...] [--ensembles maskrcnn+center-offset ...] [--tta]

1. ``micrometry synth particles`` writes a 1024x1280 dataset with a fixed seed
   (30 annotated training images, ~100 particles each; test answers hidden in
   TRUTH). ``--variant overlapping`` asks the generator for its crowded,
   occluding particles (``--density overlapping``, ~450 per image: instance
   separation is the hard part); a generator without that option is reported
   and the variant skipped.
2. Each learned model is trained with ``micrometry particles train`` (its
   defaults, ``--time-budget`` minutes); the classical ``watershed`` needs none.
   ``MODEL.sN`` is a second run of MODEL trained with ``--seed N`` (seed ensembles).
3. Every model segments the test images in this process, timed with two torch
   threads; the project evaluator scores them against TRUTH. ``--tta [MODEL..]``
   adds a flip-TTA row per learned model (``--tta`` alone: all); each
   ``--ensembles A+B`` fuses the members' outputs by weighted mask fusion, as
   ``--ensemble RUN_A,RUN_B`` does (its time is the members' plus the fusion);
   ``A@tta`` names A's flip-TTA output (``--ensemble RUN_A,RUN_B --tta``).

Prints one table: segm AP, AP50, AP75, F1@0.5, training minutes, wall and
process-CPU seconds per 1024x1280 image (CPU time is the figure that survives a
busy machine) and the 1-minute load average after the model was timed.
Runs already in WORK are reused (delete them to retrain). Timings depend on
the machine's load: say how busy it was when you quote them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import micrometry  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads)
from micrometry.io.coco import instances_to_results, load_coco  # noqa: E402
from micrometry.io.image import read_image  # noqa: E402
from micrometry.particles.evaluate import evaluate  # noqa: E402
from micrometry.particles.fusion import fuse_segmentations  # noqa: E402
from micrometry.particles.models import load_particle_model  # noqa: E402

CLI = [sys.executable, "-m", "micrometry"]
LEARNED = ["unet-watershed", "center-offset", "maskrcnn", "cascade-maskrcnn"]


def learned(name: str) -> tuple[str, list[str]] | None:
    """``(model, extra train args)`` of a learned model's bench name; ``MODEL.sN``: trained with ``--seed N``
    (a second run of one model, for seed ensembles). None for the classical models."""
    model, _, seed = name.partition(".s")
    if model not in LEARNED or (seed and not seed.isdigit()):
        return None
    return model, (["--seed", seed] if seed else [])


def generator_has_density() -> bool:
    """Whether this installation's generator offers ``--density`` (the crowded/overlapping variant)."""
    out = subprocess.run([*CLI, "synth", "particles", "--help"], capture_output=True, text=True)
    return "--density" in out.stdout


def synthesise(work: Path, seed: int, n_train: int, n_test: int, variant: str) -> tuple[Path, Path]:
    data, truth = work / "data", work / "truth"
    if not (data / "train" / "annotations.json").is_file():
        extra = [] if variant == "standard" else ["--density", variant]
        subprocess.run(
            [
                *CLI,
                "synth",
                "particles",
                data,
                "--truth",
                truth,
                "--seed",
                str(seed),
                "--n-train",
                str(n_train),
                "--n-test",
                str(n_test),
                "--n-batch",
                "0",
                "--overwrite",
                *extra,
            ],
            check=True,
        )
    return data, truth


def train(model: str, data: Path, run: Path, budget_min: float, extra: list[str]) -> float | None:
    """Train with the CLI unless ``run`` already holds a finished run; returns training minutes."""
    if not (run / "metrics.json").is_file():
        cmd = [
            *CLI,
            "particles",
            "train",
            data / "train",
            "--model",
            model,
            "--out",
            run,
            "--time-budget",
            str(budget_min),
            "--overwrite",
            *extra,
        ]
        print("$", " ".join(map(str, cmd)), flush=True)
        if subprocess.run(cmd).returncode != 0:
            return None
    final = json.loads((run / "metrics.json").read_text())["final"]
    return final["elapsed_s"] / 60


def test_images(data: Path):
    images = load_coco(data / "test" / "images.json", data / "test" / "images")
    return [(entry.id, read_image(images.image_path(entry.id))) for entry in images.images]


def segment_all(segmenter, images: list, threads: int) -> tuple[list, float, float]:
    """Per-image ``(labels, scores)``, wall seconds and process CPU seconds per image."""
    torch.set_num_threads(threads)
    outputs, wall, cpu = [], 0.0, 0.0
    for _, image in images:
        t0, c0 = time.perf_counter(), time.process_time()
        found = segmenter.segment(image)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        outputs.append((found.labels, found.scores))
    return outputs, wall / len(images), cpu / len(images)


def score(outputs: list, images: list, truth: Path) -> dict:
    """segm AP / AP50 / AP75 and F1@0.5 of per-image outputs."""
    results = []
    for (image_id, _), (labels, scores) in zip(images, outputs, strict=False):
        results.extend(instances_to_results(image_id, labels, scores))
    metrics = evaluate(results, truth / "test_annotations.json")
    return {
        "AP": metrics["segm"]["AP"],
        "AP50": metrics["segm"]["AP50"],
        "AP75": metrics["segm"]["AP75"],
        "F1": metrics["matching"][0]["f1"],
    }


def timed_row(name: str, minutes, segmenter, images, truth, threads) -> tuple[dict, list]:
    outputs, wall, cpu = segment_all(segmenter, images, threads)
    row = {
        "model": name,
        "train_min": minutes,
        **score(outputs, images, truth),
        "s_per_image": wall,
        "cpu_s_per_image": cpu,
        "load_1min": os.getloadavg()[0],
    }
    print(json.dumps(row), flush=True)
    return row, outputs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("bench-out/particles"))
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--n-train", type=int, default=30)
    parser.add_argument("--n-test", type=int, default=10)
    parser.add_argument(
        "--variant",
        choices=["standard", "overlapping"],
        default="standard",
        help="synthetic data: the default mix, or crowded occluding particles",
    )
    parser.add_argument("--budget", type=float, default=15, help="training minutes per learned model")
    parser.add_argument("--models", nargs="+", default=["watershed", *LEARNED])
    parser.add_argument(
        "--ensembles",
        nargs="*",
        default=[
            "center-offset+maskrcnn",
            "center-offset+cascade-maskrcnn",
            "maskrcnn+cascade-maskrcnn",
            "center-offset+maskrcnn+cascade-maskrcnn",
        ],
        help="'+'-joined scored models fused by weighted mask fusion (optionally MODEL:WEIGHT; "
        "MODEL@tta: the model's flip-TTA output, as --tta scored it)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads when timing inference")
    parser.add_argument("--train-args", default="", help="extra arguments for 'particles train'")
    parser.add_argument(
        "--tta",
        nargs="*",
        default=None,
        help="also score these learned models (none named: all) with flip TTA",
    )
    args = parser.parse_args()

    if args.variant != "standard" and not generator_has_density():
        print(f"variant {args.variant!r} skipped: this generator has no --density option")
        return
    data, truth = synthesise(args.work, args.seed, args.n_train, args.n_test, args.variant)
    images = test_images(data)
    rows, minutes_of, outputs_of, seconds_of = [], {}, {}, {}
    for model in args.models:
        minutes = None
        if trained_as := learned(model):
            run = args.work / "runs" / model
            base, seed_args = trained_as
            minutes = train(base, data, run, args.budget, args.train_args.split() + seed_args)
            if minutes is None:
                print(f"{model}: training failed")
                continue
            minutes_of[model] = minutes
            segmenter = load_particle_model(run)
        else:
            segmenter = load_particle_model(model)
        row, outputs_of[model] = timed_row(model, minutes, segmenter, images, truth, args.threads)
        seconds_of[model] = (row["s_per_image"], row["cpu_s_per_image"])
        rows.append(row)
        if trained_as and (args.tta == [] or model in (args.tta or [])):
            row, outputs_of[f"{model}@tta"] = timed_row(
                f"{model} + flip TTA",
                minutes,
                load_particle_model(run, tta=True),
                images,
                truth,
                args.threads,
            )
            seconds_of[f"{model}@tta"] = (row["s_per_image"], row["cpu_s_per_image"])
            minutes_of[f"{model}@tta"] = minutes
            rows.append(row)
    for spec in args.ensembles:
        # The members' outputs above, fused as `--ensemble RUN_A,RUN_B` (EnsembleSegmenter) fuses them.
        members = [
            (name, float(w) if w else 1.0) for name, _, w in (m.partition(":") for m in spec.split("+"))
        ]
        if any(name not in outputs_of for name, _ in members):
            print(f"ensemble {spec} skipped: a member was not scored")
            continue
        fused, fusion_s = [], 0.0
        for k in range(len(images)):
            t0 = time.perf_counter()
            fused.append(
                fuse_segmentations([outputs_of[name][k] for name, _ in members], [w for _, w in members])
            )
            fusion_s += time.perf_counter() - t0
        fusion_s /= len(images)
        rows.append(
            {
                "model": f"ensemble {spec}",
                "train_min": sum(minutes_of.get(n, 0.0) for n, _ in members),
                "members": [{"model": n, "weight": w} for n, w in members],
                **score(fused, images, truth),
                "s_per_image": sum(seconds_of[n][0] for n, _ in members) + fusion_s,
                "cpu_s_per_image": sum(seconds_of[n][1] for n, _ in members) + fusion_s,
                "load_1min": os.getloadavg()[0],
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    table = Table(
        title=f"particles bench ({args.variant}): {args.n_train} train / {args.n_test} test images "
        f"1024x1280, seed {args.seed}, {os.cpu_count()} CPU cores, {args.threads} torch threads, "
        f"{args.budget:g} training minutes per model"
    )
    for col in (
        "model",
        "segm AP",
        "AP50",
        "AP75",
        "F1@0.5",
        "training min",
        "s / image",
        "CPU s / image",
        "load 1 min",
    ):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(
            r["model"],
            f"{r['AP']:.3f}",
            f"{r['AP50']:.3f}",
            f"{r['AP75']:.3f}",
            f"{r['F1']:.3f}",
            "-" if r["train_min"] is None else f"{r['train_min']:.1f}",
            f"{r['s_per_image']:.2f}",
            f"{r['cpu_s_per_image']:.2f}",
            f"{r['load_1min']:.1f}",
        )
    Console(width=160).print(table)
    (args.work / "table.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
