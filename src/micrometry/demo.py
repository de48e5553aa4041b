"""``micrometry demo``: the one-command tour on embedded synthetic data.

Everything a user would do by hand, in order, with the same functions the
commands use: synthesise data, train, predict, evaluate, measure, compare, and
one HTML report at the end. Nothing here is demo-only logic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from micrometry.options import seed_option, threads_option


@dataclass
class DemoSize:
    """How much the tour does (README: the measured time of the full tour on 2 CPU cores)."""

    n_structures: int = 300
    n_sites: int = 24
    images_per_site: int = 20
    n_test: int = 200
    # unet-weak's 60 epochs on the tour's data: about 230 s on 2 quiet cores before the render loss
    # (docs/depth.md, "Issue 27"), which costs each step about 1.75x: 240 s then stopped it at epoch 23
    depth_budget_s: float = 420.0
    particle_test_images: int = 3
    particle_batch_images: int = 3
    particle_height: int = 1024
    particle_width: int = 1280

    @classmethod
    def quick(cls) -> DemoSize:
        """A reduced tour for the test suite: same steps, tiny data."""
        return cls(
            n_structures=16,
            n_sites=4,
            images_per_site=3,
            n_test=12,
            depth_budget_s=8.0,
            particle_test_images=1,
            particle_batch_images=2,
            particle_height=320,
            particle_width=400,
        )


def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for the demo's data, runs and report."),
    seed: int = seed_option("Random seed of the synthetic data and the training."),
    quick: bool = typer.Option(False, help="A reduced tour on tiny data (what the test suite runs)."),
    threads: int = threads_option(),
) -> None:
    """Run micrometry end to end on synthetic data and write one HTML report."""
    from rich.console import Console

    from micrometry.train.loop import configure_threads

    configure_threads(threads or None)

    from micrometry.report.html import Report

    size = DemoSize.quick() if quick else DemoSize()
    console = Console()
    out.mkdir(parents=True, exist_ok=True)
    report = Report("micrometry demo")
    report.text(
        "Everything below was computed by `micrometry demo` on synthetic data with known ground truth: "
        "the same commands run unchanged on your own images."
    )

    console.rule("[bold]1. Depth from SEM")
    depth = _depth_tour(out, size, seed, console, report)
    console.rule("[bold]2. Particles")
    particles = _particle_tour(out, size, seed, console, report)

    path = report.write(out / "report.html")
    console.rule("[bold]Summary")
    _print_summary(console, depth, particles)
    console.print(f"report: [bold]{path.resolve()}[/bold]")


def _depth_tour(out: Path, size: DemoSize, seed: int, console, report) -> dict:
    from micrometry.depth.dataset import load_image_folder
    from micrometry.depth.evaluate import evaluate_folders
    from micrometry.depth.measure import hole_table, measure_maps
    from micrometry.depth.methods import (
        DEFAULT_METHOD,
        DEPTH_METHODS,
        DepthData,
        load_depth_model,
        train_method,
    )
    from micrometry.depth.predict import predict_folder
    from micrometry.io.atomic import atomic_path
    from micrometry.options import DEFAULT_NM_PER_PX
    from micrometry.report.depth import depth_report
    from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset
    from micrometry.train import RunDir

    data, truth = out / "sem", out / "sem-truth"
    console.print(
        f"synthesising the SEM dataset ({size.n_structures} simulated structures, "
        f"{size.n_sites * size.images_per_site} real training images, {size.n_test} test images)..."
    )
    config = SemSynthConfig(
        seed=seed,
        n_structures=size.n_structures,
        n_sites=size.n_sites,
        images_per_site=size.images_per_site,
        n_test=size.n_test,
    )
    counts = write_sem_dataset(data, truth, config, overwrite=True)
    console.print(
        f"synthesised {counts['simulated_sem']} simulated SEM images, {counts['real_train_images']} real "
        f"training images on {counts['real_sites']} sites, {counts['test_images']} test images -> {data}"
    )

    scores = {}
    methods = ["ae"] if DEFAULT_METHOD == "ae" else ["ae", DEFAULT_METHOD]
    for name in methods:
        method = DEPTH_METHODS.create(name)
        run = RunDir.for_training(out / "runs" / f"depth-{name}", overwrite=True)
        console.print(f"training [bold]{name}[/bold] (budget {size.depth_budget_s:.0f} s) -> {run.path}")
        train_method(
            method, DepthData.load(data, method.uses), run, time_budget_s=size.depth_budget_s, seed=seed
        )
        pred = out / "predictions" / f"depth-{name}"
        predict_folder(data / "test" / "SEM", load_depth_model(run.path), pred, overwrite=True)
        scores[name] = evaluate_folders(pred, truth / "test_depth")
        run.close()
        per_case = "  ".join(f"case {c} {v['rmse']:.2f}" for c, v in sorted(scores[name]["per_case"].items()))
        console.print(
            f"[bold]{name}[/bold]: test RMSE [bold]{scores[name]['rmse']:.2f} nm[/bold] ({per_case}) "
            f"-> {pred}"
        )
        _drop_checkpoints(run.path, keep_best=name == methods[-1], console=console)

    best = methods[-1]
    pred = out / "predictions" / f"depth-{best}"
    maps = load_image_folder(pred)
    table = hole_table(maps.names, measure_maps(maps.images.astype("float32"), nm_per_px=DEFAULT_NM_PER_PX))
    with atomic_path(out / "depth-metrology.csv") as tmp:
        table.to_csv(tmp, index=False)
    console.print(
        f"measured {len(table)} holes (depth, top/bottom CD, sidewall angle; {DEFAULT_NM_PER_PX:g} nm/px) "
        f"-> {out / 'depth-metrology.csv'}"
    )

    section = depth_report(
        pred,
        sem_dir=data / "test" / "SEM",
        truth_dir=truth / "test_depth",
        cases=truth / "test_truth.csv",
        title=f"Depth from SEM ({best})",
    )
    section.section("RMSE against the official baseline (ae)")
    section.table(_depth_score_table(scores))
    section.section("Hole metrology (first rows)")
    section.table(table.head(20))
    report.include(section)
    return scores


def _drop_checkpoints(run: Path, keep_best: bool, console) -> None:
    """Delete what the tour does not need: every run's resume state (last.pt) and the
    baseline's model, once its predictions exist (they were most of demo-out's size)."""
    names = ("last",) if keep_best else ("last", "best")
    freed = 0
    for name in names:
        path = run / "checkpoints" / f"{name}.pt"
        if path.is_file():
            freed += path.stat().st_size
            path.unlink()
    if freed:
        what = "resume checkpoint" if keep_best else "checkpoints (its predictions are kept)"
        console.print(f"  removed {run.name}'s {what}: {freed / 1e6:.0f} MB")


def _depth_score_table(scores: dict):
    import pandas as pd

    rows = []
    for name, s in scores.items():
        row = {"method": name, "RMSE": s["rmse"]}
        row.update({f"Case {c}": v["rmse"] for c, v in sorted(s["per_case"].items())})
        row["ratio to ae"] = s["rmse"] / scores["ae"]["rmse"]
        rows.append(row)
    return pd.DataFrame(rows)


def _particle_tour(out: Path, size: DemoSize, seed: int, console, report) -> dict:
    from micrometry.particles.compare import CompareSettings
    from micrometry.particles.compare_run import run_compare
    from micrometry.particles.evaluate import evaluate
    from micrometry.particles.measure import measure_source, write_measurement
    from micrometry.particles.models import load_particle_model
    from micrometry.particles.predict import predict_folder
    from micrometry.report.particles import (
        compare_report,
        measure_report,
        overlay_samples,
        write_compare_report,
    )
    from micrometry.synth.particle_dataset import generate_dataset
    from micrometry.synth.particle_scene import SuspensionParams

    data, truth = out / "particles", out / "particles-truth"
    params = SuspensionParams(height=size.particle_height, width=size.particle_width)
    console.print(f"synthesising {size.particle_test_images} particle test images and two batches...")
    generate_dataset(
        data,
        truth,
        params,
        seed=seed,
        n_train=0,
        n_test=size.particle_test_images,
        n_batch=size.particle_batch_images,
        overwrite=True,
    )
    console.print(
        f"synthesised {size.particle_test_images} test images and two batches of "
        f"{size.particle_batch_images} images -> {data}"
    )

    scores = {}
    models = {"shipped": "shipped", "watershed": "watershed"}  # --model values: the shipped model first
    for label, model in models.items():
        pred = out / "predictions" / f"particles-{label}"
        predict_folder(
            load_particle_model(model),
            data / "test" / "images",
            pred,
            images_json=data / "test" / "images.json",
            overwrite=True,
        )
        scores[label] = evaluate(pred / "results.json", truth / "test_annotations.json")
        console.print(
            f"[bold]{label}[/bold]: segm AP [bold]{scores[label]['segm']['AP']:.3f}[/bold] "
            f"(AP50 {scores[label]['segm']['AP50']:.3f}) -> {pred}"
        )

    best = next(iter(models))
    pred = out / "predictions" / f"particles-{best}"
    measurement = measure_source(pred, pixel_size=0.5, unit="um", images_dir=data / "test" / "images")
    write_measurement(measurement, out / "particles-measure.csv", overwrite=True)
    console.print(
        f"measured {len(measurement.particles)} particles (0.5 um/px) -> {out / 'particles-measure.csv'}"
    )

    settings = CompareSettings(seed=seed)
    comparison = run_compare(
        data / "batches" / "A",
        data / "batches" / "B",
        out / "compare",
        settings,
        model=models[best],
        pixel_size=0.5,
        unit="um",
        overwrite=True,
        render=write_compare_report,
    ).comparison
    for line in comparison.loc[comparison["changed"], "verdict"]:
        console.print(f"  {line}")

    report.include(
        measure_report(
            measurement.particles,
            measurement.images,
            measurement.summary,
            overlays=overlay_samples(pred, data / "test" / "images", limit=2),
            title=f"Particles: segmentation ({best}) and morphometry",
        )
    )
    import pandas as pd

    ap = pd.DataFrame(
        [
            {
                "model": k,
                **{m: v["segm"][m] for m in ("AP", "AP50", "AP75")},
                "F1@0.5": v["matching"][0]["f1"],
            }
            for k, v in scores.items()
        ]
    )
    report.section("Particles: segmentation accuracy on the synthetic test images")
    report.table(ap)
    from micrometry.io.coco import read_json

    rule = read_json(out / "compare" / "compare.json")["rule"]["text"]
    batches = (
        pd.read_parquet(out / "compare" / "batch_a.parquet"),
        pd.read_parquet(out / "compare" / "batch_b.parquet"),
    )
    report.include(compare_report(*batches, comparison, rule, title="Particles: batch A versus batch B"))
    return {"scores": scores, "changed": comparison.loc[comparison["changed"], "verdict"].tolist()}


def _print_summary(console, depth: dict, particles: dict) -> None:
    from rich.table import Table

    table = Table(title="what the demo measured")
    table.add_column("job")
    table.add_column("model")
    table.add_column("result", justify="right")
    for name, s in depth.items():
        per_case = "  ".join(f"C{c} {v['rmse']:.2f}" for c, v in sorted(s["per_case"].items()))
        table.add_row("depth RMSE (nm)", name, f"{s['rmse']:.2f}   ({per_case})")
    for name, s in particles["scores"].items():
        table.add_row("particle segm AP", name, f"{s['segm']['AP']:.3f}  (AP50 {s['segm']['AP50']:.3f})")
    table.add_row("batch B vs A", "", f"{len(particles['changed'])} descriptors changed")
    console.print(table)
