"""``micrometry particles ...`` commands."""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from micrometry.engine import ENGINE_OPTION, RAY_ADDRESS_OPTION, RAY_WORKERS_OPTION
from micrometry.launch import supports_ddp
from micrometry.options import (
    fraction,
    minutes_to_seconds,
    number,
    overwrite_option,
    pixel_size_option,
    seed_option,
    threads_option,
    time_budget_option,
    unit_option,
)

particles_app = typer.Typer(help="Particles: segment, measure, compare.", no_args_is_help=True)

# Tables for people: never narrower than 120 columns when piped to a file or a pager.
stdout = Console(width=None if sys.stdout.isatty() else 120)


@contextlib.contextmanager
def _warnings_as_lines():
    """Show every user warning, as it happens, as one ``warning: ...`` line on stderr (no source lines)."""
    from micrometry.errors import show_warning

    def show(message, category, *args, **kwargs):
        # only warnings meant for the user (library deprecation noise is not)
        if issubclass(category, UserWarning):
            show_warning(message, category, *args, **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


DATA_HELP = (
    "Training data: a COCO folder (annotations.json + images/), images/ + masks/ (label images), "
    "images/ + rois/ (ImageJ ROI sets) or a corrected prediction folder (PRED with labels/)."
)


@particles_app.command("info")
def info(
    coco: Path | None = typer.Argument(None, help=DATA_HELP + " Or a COCO annotation file."),
    images: Path | None = typer.Option(
        None, "--images", help="Images folder (overrides DATA/images; a prediction folder's images)."
    ),
    annotations: Path | None = typer.Option(
        None, "--annotations", help="COCO annotation file (overrides COCO/annotations.json)."
    ),
    max_rows: int = number(30, "--max-rows", low=-1, help="Per-image rows to print (0: none, -1: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON instead of tables."),
    check_images: bool = typer.Option(
        True,
        "--check-images/--no-check-images",
        help="Decode every image (finds truncated files; headers are always read).",
    ),
) -> None:
    """Validate training data (any layout train reads) and print counts, sizes and per-image statistics."""
    from micrometry.io.coco import load_coco, resolve_coco
    from micrometry.particles.info import check_images as decode_all
    from micrometry.particles.info import dataset_summary, per_image_rows
    from micrometry.particles.training_data import detect_layout, load_training_set

    with _warnings_as_lines():
        if annotations is not None or coco is None:
            ann_path, img_dir = resolve_coco(coco, images, annotations)
            layout, ds = "coco", load_coco(ann_path, img_dir)
        else:
            layout, ds = detect_layout(coco), load_training_set(coco, images)
            ann_path = coco
        if check_images and ds.images_dir is not None:
            decode_all(ds)
    summary, rows = {"layout": layout, **dataset_summary(ds)}, per_image_rows(ds)
    if layout != "coco":  # which file each image's outlines came from (a prediction: the one edited)
        from micrometry.particles.training_data import annotation_files

        with _warnings_as_lines(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # said once already, while loading
            pairs = dict((image.name, found) for image, found in annotation_files(coco, images)[1])
        for row in rows:
            found = pairs.get(row["file"])
            row["annotations"] = (
                str(found.relative_to(coco)) if found and found.is_relative_to(coco) else str(found)
            )
    if as_json:
        typer.echo(json.dumps({"summary": summary, "images": rows}, indent=2))
        return

    title = "COCO dataset" if layout == "coco" else f"training data ({LAYOUT_NAMES[layout]})"
    table = Table(title=f"{title} {ann_path}", show_header=False)
    table.add_column("figure", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        table.add_row(key.replace("_", " "), _fmt(value))
    stdout.print(table)

    shown = rows if max_rows < 0 else rows[:max_rows]
    if shown:
        per = Table(
            title="per image" + (f" (first {len(shown)} of {len(rows)})" if len(shown) < len(rows) else "")
        )
        for col in shown[0]:
            per.add_column(
                col.replace("_", " "),
                justify="left" if col in ("file", "annotations") else "right",
                no_wrap=True,
                min_width=len(col),
            )
        for row in shown:
            per.add_row(*(_fmt(v) for v in row.values()))
        stdout.print(per)


LAYOUT_NAMES = {
    "coco": "COCO",
    "masks": "images/ + masks/",
    "rois": "images/ + ImageJ ROI sets",
    "prediction": "corrected prediction",
}


@particles_app.command("convert")
def convert(
    data: Path = typer.Argument(..., help=DATA_HELP),
    out: Path = typer.Option(..., "--out", help="COCO folder to write: annotations.json + images/ (copies)."),
    images: Path | None = typer.Option(
        None, "--images", help="Images folder, where the layout does not say (a prediction folder's images)."
    ),
    overwrite: bool = overwrite_option("COCO folder"),
) -> None:
    """Write training data of any layout train reads as a COCO folder (for CVAT, MMDetection, ...)."""
    from micrometry.particles.training_data import detect_layout, load_training_set, write_coco

    with _warnings_as_lines():
        layout = detect_layout(data)
        ds = load_training_set(data, images)
        write_coco(ds, out, overwrite=overwrite)
    typer.echo(f"{LAYOUT_NAMES[layout]}: {len(ds.images)} images, {ds.n_annotations} particles -> {out}")


@particles_app.command("quantize")
def quantize(
    model: Path = typer.Argument(
        ...,
        metavar="MODEL",
        help="A trained center-offset or unet-watershed model: a run folder or an exported model folder.",
    ),
    images: Path | None = typer.Option(
        None,
        "--images",
        help="Calibration images like those the model will predict (8 are used, spread over them): a folder of images, an image list (.txt) or training data of any layout train reads. Default: a run's own training images.",
    ),
    threads: int = threads_option(),
) -> None:
    """Give a model an int8 network: CPU prediction about 2x faster (ONNX Runtime), same accuracy on the bench.

    Writes MODEL/network.int8.onnx; predict uses it on a CPU from then on (MICROMETRY_PRECISION=fp32 predicts in float32). particles train makes one for every run; export carries it into the model folder.
    """
    import time

    from micrometry.io.image import read_image
    from micrometry.particles.models.dense.quantize_model import calibration_paths, quantize_model

    _set_threads(threads)
    t0 = time.perf_counter()
    with _warnings_as_lines():
        paths = calibration_paths(model, images)
        out = quantize_model(model, [read_image(p) for p in paths])
    typer.echo(
        f"int8 network calibrated on {len(paths)} image(s) in {time.perf_counter() - t0:.0f} s -> {out}; "
        "predict uses it on a CPU (MICROMETRY_PRECISION=fp32 for float32)"
    )


def _set_threads(threads: int) -> None:
    """``--threads`` of a command that runs a model only sometimes: torch is imported when asked."""
    if threads:
        from micrometry.train.loop import configure_threads

        configure_threads(threads)


def calibration_line(pixel_size: float, unit: str, source: str) -> str:
    """The calibration a measurement used, said once on the console."""
    if source == "none":
        return "calibration: none (sizes in pixels; --pixel-size and --unit calibrate them)"
    return f"calibration: {pixel_size:g} {unit}/px (from {'the image metadata' if source == 'metadata' else source})"


def adequacy_line(summary) -> str:
    """The count adequacy of a measure summary row, on one line."""
    parts = []
    for name in ("D50_n", "D90_n", "D50_v", "D90_v"):
        needed = int(summary[f"CountNeeded_{name}"])
        verdict = "ok" if 0 <= needed <= summary["Count"] else f"needs {needed:,}" if needed >= 0 else "-"
        label = f"{name[:3]} {'number' if name.endswith('_n') else 'volume'}"
        parts.append(f"{label} +-{100 * summary[f'Precision_{name}']:.1f} % ({verdict})")
    return (
        f"precision at {100 * summary['Confidence']:.0f} % (target +-{100 * summary['PrecisionTarget']:g} %): "
        + ", ".join(parts)
    )


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{value:.1f}"
    return "-" if value is None else str(value)


@particles_app.command("predict")
def predict(
    images: Path = typer.Argument(
        ..., help="Folder of images, one image, or a .txt list of image paths (one per line)."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder PRED (results.json, labels/, overlays/)."),
    model: str = typer.Option(
        "shipped",
        "--model",
        help="'shipped' (the center-offset model that comes with micrometry: trained on synthetic photos of six imaging modes and four realism modes, either polarity, particles of 8-150 px met at 20 network px by automatic size, and on 32 real images of fluorescent nuclei), a model name (watershed: classical, no training), a run folder written by `particles train`, or a model folder written by `micrometry export`.",
    ),
    ensemble: str | None = typer.Option(
        None,
        "--ensemble",
        help="Instead of --model: several models (each what --model takes) joined by commas, with optional weights after a colon (RUN_A,RUN_B or RUN_A:2,RUN_B:1), their particles fused by weighted mask fusion.",
    ),
    images_json: Path | None = typer.Option(
        None,
        "--images-json",
        help="COCO file listing the images (e.g. test/images.json): results use its image ids.",
    ),
    batch_size: int = number(4, "--batch-size", low=1, help="Images per segmenter call."),
    overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="Write overlay PNGs."),
    overwrite: bool = overwrite_option("PRED folder"),
    scale: float | None = number(
        None,
        "--scale",
        low=0.05,
        high=8,
        help="Learned models: network resolution relative to the image (default: the run's; automatic for models trained with automatic size, like the shipped one).",
    ),
    diameter: float | None = number(
        None,
        "--diameter",
        low=1,
        high=10000,
        help="Learned models with automatic size: the particles' typical (median area-equivalent) diameter in pixels; default: estimated per image by a first pass of the model. The shipped model sees particles at 20 network pixels: an image is resized by 20 / DIAMETER.",
    ),
    tile: int | None = number(
        None,
        "--tile",
        low=32,
        help="Learned models: tile side in network pixels for large images (default 1280 for the dense models, 768 for Mask R-CNN).",
    ),
    tta: bool | None = typer.Option(
        None,
        "--tta/--no-tta",
        help="Test-time augmentation, any model: the four flips (4 network passes; dense models average their maps, others fuse instances). Default: the model's own (on for a model fine-tuned on 1-4 images).",
    ),
    tta_scales: str | None = typer.Option(
        None,
        "--tta-scales",
        help="Multi-scale TTA, any model: also segment the image resized by each factor, e.g. 0.8,1,1.25; instances fused by weighted mask fusion.",
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Stop at the first unreadable or non-2-D file (default: skip it with a warning).",
    ),
    threads: int = threads_option(),
    engine: str = ENGINE_OPTION,
    ray_workers: int = RAY_WORKERS_OPTION,
    ray_address: str | None = RAY_ADDRESS_OPTION,
    pixel_size: str | None = pixel_size_option(
        "Pixel side length in --unit, stored with the results for `particles measure` "
        "(default: from TIFF/OME metadata when present).",
        auto=True,
    ),
    unit: str | None = unit_option(),
) -> None:
    """Segment particles in every image: COCO results, 16-bit label PNGs and overlays.

    The shipped model handles dark particles on a bright field and bright ones on a dark field alike, and sizes each image itself (the chosen diameter and scale are printed and stored in PRED/prediction.json).
    """
    from micrometry.engine import make_engine
    from micrometry.errors import InputError
    from micrometry.particles.models import load_particle_model
    from micrometry.particles.predict import predict_folder
    from micrometry.particles.tta import TTASegmenter
    from micrometry.train.loop import configure_threads

    configure_threads(threads or None)
    runner = make_engine(engine, batch_size, ray_workers, ray_address)
    options = {
        "scale": scale,
        "tile": tile,
        "tta": tta,
        "tta_scales": tta_scales,
        "diameter": diameter,
    }
    if ensemble is not None and model != "shipped":
        raise InputError("--model and --ensemble exclude each other: --ensemble names every model")
    segmenter = load_particle_model(
        None if ensemble is not None else model,
        ensemble=ensemble,
        **{k: v for k, v in options.items() if v is not None},
    )
    if tta is None and isinstance(segmenter, TTASegmenter):
        typer.echo("flip TTA on: the model's default after a few-image fine-tune (--no-tta turns it off)")
    with _warnings_as_lines():
        summary = predict_folder(
            segmenter,
            images,
            out,
            images_json,
            batch_size,
            overwrite,
            overlays,
            runner,
            strict=strict,
            pixel_size=pixel_size,
            unit=unit,
        )
    cal = summary.calibration
    if cal and cal["source"] == "scale bar":
        echo_scale_bars(summary.per_image)
    elif cal:
        typer.echo(calibration_line(cal["pixel_size"], cal["unit"], cal["source"].replace("image ", "")))
    else:
        typer.echo("calibration: none in the images (particles measure --pixel-size --unit calibrates)")
    _echo_sizes(summary.per_image)
    skipped = f", {len(summary.skipped)} skipped" if summary.skipped else ""
    typer.echo(
        f"{summary.images} images, {summary.particles} particles{skipped} "
        f"({summary.seconds_per_image:.2f} s/image) -> {out}"
    )


def scale_bar_line(name: str, bar: dict) -> str:
    """One image's calibration read from its scale bar, said once."""
    return (
        f"{name}: calibration {bar['pixel_size']:.5g} {bar['unit']}/px from the scale bar "
        f"('{bar['label']}' over {bar['bar_px']} px, confidence {bar['confidence']:.2f}); "
        f"data bar rows {bar['band_rows'][0]}-{bar['band_rows'][1] - 1} left out"
    )


def echo_scale_bars(per_image: list[dict], max_lines: int = 20) -> None:
    """Print each image's scale-bar calibration (or their range for many images)."""
    bars = [(p["file"], p["scale_bar"]) for p in per_image if p.get("scale_bar")]
    if len(bars) <= max_lines:
        for name, bar in bars:
            typer.echo(scale_bar_line(name, bar))
        return
    sizes = sorted(f"{b['pixel_size']:.5g} {b['unit']}/px" for _, b in bars)
    typer.echo(
        f"calibration from {len(bars)} scale bars: {sizes[0]} to {sizes[-1]}, lowest confidence "
        f"{min(b['confidence'] for _, b in bars):.2f} (per image in prediction.json)"
    )


def _echo_sizes(per_image: list[dict], max_lines: int = 20) -> None:
    """Print the particle diameter and network scale used for each image (or their range)."""
    sized = [p for p in per_image if p.get("scale") is not None]
    if not sized:
        return
    if len(sized) <= max_lines:
        for p in sized:
            d = p.get("diameter_px")
            typer.echo(
                f"{p['file']}: diameter {'-' if d is None else f'{d:.1f}'} px "
                f"({p.get('diameter_source', '')}), scale {p['scale']:.3g}"
            )
        return
    diameters = sorted(p["diameter_px"] for p in sized if p.get("diameter_px") is not None)
    scales = sorted(p["scale"] for p in sized)
    if diameters:
        typer.echo(
            f"particle diameter {diameters[0]:.1f}-{diameters[-1]:.1f} px (median "
            f"{diameters[len(diameters) // 2]:.1f}); scale {scales[0]:.3g}-{scales[-1]:.3g} "
            "(per image in prediction.json)"
        )


@particles_app.command("measure")
def measure(
    pred: Path = typer.Argument(
        ..., help="Label-image folder, prediction folder (PRED/labels) or COCO .json."
    ),
    out: Path = typer.Option(..., "--out", help="Particle table (.csv or .parquet); summaries go beside it."),
    pixel_size: str | None = pixel_size_option(auto=True),
    unit: str | None = unit_option(),
    exclude_edges: bool = typer.Option(
        False, "--exclude-edges", help="Leave out particles touching the border."
    ),
    images_json: Path | None = typer.Option(
        None, "--images-json", help="COCO images list for a results file (default: images.json beside it)."
    ),
    min_score: float = fraction(
        0.0, "--min-score", help="COCO results: ignore detections scoring below this."
    ),
    images: Path | None = typer.Option(
        None, "--images", help="Gray images named like the label images: adds Mean, Min, Max."
    ),
    rois: bool = typer.Option(
        False,
        "--rois",
        help="Also write each image's particle outlines as an ImageJ "
        "ROI set, OUT_STEM_rois/IMAGE_RoiSet.zip (ROI names = the Label column).",
    ),
    overwrite: bool = overwrite_option("output tables"),
    model: str | None = typer.Option(
        None,
        "--model",
        help="PRED is a folder of photos: segment them first with this model ('shipped', watershed, a run or an exported model folder).",
    ),
    target_precision: float = number(
        0.05,
        "--target-precision",
        low=0,
        high=1,
        low_open=True,
        help="Count adequacy: the relative 95 % CI half-width D50 and D90 should reach (0.05: +-5 %); the summary says how many particles that needs.",
    ),
    threads: int = threads_option(),
) -> None:
    """Measure every particle (ImageJ descriptors, ISO 9276-6) and summarise the size distribution.

    The summary also holds the count adequacy (how precise D50/D90 are for this count, and the count a --target-precision needs), the shape distributions and the touching/agglomerate counts.
    """
    from micrometry.particles.measure import (
        check_outputs_free,
        measure_source,
        unreliable_warning,
        write_measurement,
    )
    from micrometry.particles.psd import adequacy_warning

    check_outputs_free(out, overwrite, rois=rois)
    _set_threads(threads)
    if model is not None:
        typer.echo(f"segmenting the photos in {pred} with model {model!r} first")
    with _warnings_as_lines():
        result = measure_source(
            pred,
            pixel_size=pixel_size,
            unit=unit,
            exclude_edges=exclude_edges,
            images_json=images_json,
            min_score=min_score,
            images_dir=images,
            rois=rois,
            model=model,
            target=target_precision,
        )
        line = unreliable_warning(result.particles)
        if line:
            warnings.warn(line)
        paths = write_measurement(result, out, overwrite=overwrite)
        s = result.summary.iloc[0]
        if s["Calibration"] == "scale bar":
            for _, row in result.images.iterrows():
                typer.echo(
                    f"{row['Image']}: calibration {row['PixelSize']:.5g} {result.unit}/px from the scale bar "
                    f"('{row['ScaleBarLabel']}' over {row['ScaleBarPx']} px, confidence "
                    f"{row['ScaleBarConfidence']:.2f}); data bar left out"
                )
        else:
            typer.echo(calibration_line(s["PixelSize"], result.unit, s["Calibration"]))
        size = (
            f"; D50 (number) {s['D50_n']:.3g} {result.unit} [{s['D50_n_low']:.3g}, {s['D50_n_high']:.3g}]"
            if s["Count"]
            else ""
        )
        typer.echo(
            f"{s['Count']} particles in {s['Images']} images; coverage {100 * s['Coverage']:.1f} %{size}"
        )
        if s["Count"]:
            typer.echo(adequacy_line(s))
            typer.echo(
                f"flags: {s['Touching']} touching, {s['Agglomerates']} probable agglomerates "
                "(columns Touching, Agglomerate); volume weighting assumes " + s["VolumeWeighting"]
            )
            line = adequacy_warning(s, int(s["Count"]))
            if line:
                warnings.warn(line)
    for path in paths.values():
        typer.echo(f"wrote {path}")


@particles_app.command("compare")
def compare(
    a: Path = typer.Argument(
        ..., help="Batch A (reference): a table from 'particles measure', or a source it accepts."
    ),
    b: Path = typer.Argument(..., help="Batch B: same kinds as A."),
    out: Path = typer.Option(..., "--out", help="Output folder: compare.csv, compare.json, report.html."),
    model: str | None = typer.Option(
        None,
        "--model",
        help="A and B are folders of raw images: segment them with this model first ('shipped', watershed, a run or an exported model folder).",
    ),
    pixel_size: float | None = pixel_size_option(
        "Pixel size in --unit when A/B are measured here (default: image metadata, else pixels)."
    ),
    unit: str | None = unit_option(),
    exclude_edges: bool = typer.Option(False, "--exclude-edges", help="Leave out border-touching particles."),
    alpha: float = number(0.01, "--alpha", low=0, high=0.5, low_open=True, help="KS significance level."),
    rel_threshold: float = number(
        0.05, "--rel-threshold", low=0, help="Relevant median shift, fraction of A's median."
    ),
    n_boot: int = number(1000, "--n-boot", low=100, help="Bootstrap resamples."),
    seed: int = seed_option("Bootstrap seed."),
    overwrite: bool = overwrite_option("output folder"),
    threads: int = threads_option(),
) -> None:
    """Compare two batches descriptor by descriptor; say plainly what changed."""
    from micrometry.particles.compare import CompareSettings
    from micrometry.particles.compare_run import run_compare
    from micrometry.report.particles import write_compare_report

    _set_threads(threads)
    settings = CompareSettings(alpha=alpha, relative_threshold=rel_threshold, n_boot=n_boot, seed=seed)
    with _warnings_as_lines():
        comparison = run_compare(
            a,
            b,
            out,
            settings,
            model=model,
            pixel_size=pixel_size,
            unit=unit,
            exclude_edges=exclude_edges,
            overwrite=overwrite,
            render=write_compare_report,
        ).comparison
    for line in comparison["verdict"]:
        typer.echo(line)
    typer.echo(f"{int(comparison['changed'].sum())} of {len(comparison)} descriptors changed -> {out}")


@particles_app.command("evaluate")
def evaluate_cmd(
    pred: Path = typer.Argument(..., help="COCO results JSON (or a PRED folder holding results.json)."),
    gt: Path = typer.Argument(..., help="Ground-truth COCO annotations (e.g. TRUTH/test_annotations.json)."),
    max_dets: int = number(
        None,
        "--max-dets",
        low=1,
        help="Detections per image for COCO AP/AR (default: 300, or 1.5x the most true "
        "particles in one image when more).",
    ),
    match_score: float = fraction(0.5, "--match-score", help="Minimum score for instance matching."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """COCO segm/bbox AP (maxDets >= 300, more for crowded images) and instance matching at IoU 0.5..0.9."""
    from micrometry.io.coco import load_coco, normalize_results
    from micrometry.io.coco.dataset import read_json
    from micrometry.particles.evaluate import COCO_KEYS, evaluate, one_class, reconcile_results

    if pred.is_dir():
        pred = pred / "results.json"
    with _warnings_as_lines():
        dataset = load_coco(gt)
        images_json = pred.parent / "images.json"
        pred_images = read_json(images_json).get("images") if images_json.is_file() else None
        records, notes = reconcile_results(read_json(pred), dataset, pred_images, pred)
        for note in notes:
            warnings.warn(note)
        dataset = one_class(dataset)
        results = normalize_results(records, dataset, pred)
    with _warnings_as_lines():
        metrics = evaluate(results, dataset, max_dets=max_dets, match_score=match_score)
    metrics["notes"] = notes
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    coco = Table(
        title=f"COCO AP, maxDets={metrics['max_dets']}: {metrics['pred_instances']} predictions, "
        f"{metrics['gt_instances']} true particles, {metrics['images']} images"
    )
    coco.add_column("")
    for key in COCO_KEYS:
        coco.add_column(key, justify="right")
    for iou_type in ("segm", "bbox"):
        coco.add_row(iou_type, *(_fmt3(metrics[iou_type][k]) for k in COCO_KEYS))
    stdout.print(coco)
    match = Table(title=f"instance matching (score >= {match_score})")
    for col in ("IoU", "TP", "FP", "FN", "precision", "recall", "F1", "mean matched IoU", "PQ"):
        match.add_column(col, justify="right")
    for row in metrics["matching"]:
        match.add_row(
            f"{row['iou']:.1f}",
            str(row["tp"]),
            str(row["fp"]),
            str(row["fn"]),
            *(_fmt3(row[k]) for k in ("precision", "recall", "f1", "mean_matched_iou", "panoptic_quality")),
        )
    stdout.print(match)


def _finished_run(out: Path, model: str | None, epochs: int | None, time_budget: float | None) -> str | None:
    """Why the run in ``out`` has nothing left to train, with the limits the user gave or the run's own.

    None whenever train_model has something to say first (not a run, another model, ...).
    """
    from micrometry.train import RunDir

    config_path = Path(out) / "config.json"
    if not config_path.is_file() or not (Path(out) / "checkpoints" / "last.pt").is_file():
        return None
    try:
        config = json.loads(config_path.read_text())
    except ValueError:
        return None
    if model is not None and model != config.get("model"):
        return None
    settings = config.get("settings", {})
    run = RunDir(out)
    return run.finished(
        epochs if epochs is not None else settings.get("epochs"),
        minutes_to_seconds(time_budget) if time_budget is not None else settings.get("time_budget_s"),
    )


def _run_config(run: Path) -> dict:
    """A run's ``config.json`` ({} when unreadable: the lines drawn from it are only said)."""
    from micrometry.errors import CheckpointError
    from micrometry.train import RunDir

    try:
        return RunDir.existing(run).read_config()
    except (CheckpointError, OSError):
        return {}


def _echo_training_scale(config: dict) -> None:
    """Say which network scale the training images were seen at (chosen by their particle sizes or given)."""
    scales, settings = config.get("scales"), config.get("settings", {})
    if not scales:
        return
    if settings.get("scale") is None:
        typer.echo(
            f"training scale: automatic, {scales['min']:.3g}-{scales['max']:.3g} (median {scales['median']:.3g}): "
            f"each image's median particle resized to {settings.get('net_diameter', 20):g} network px"
        )
    else:
        typer.echo(f"training scale: {settings['scale']:.3g}")


def _fmt3(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@particles_app.command("train")
@supports_ddp
def train(
    coco: Path = typer.Argument(..., help=DATA_HELP),
    out: Path = typer.Option(
        ..., "--out", help="Run folder (config.json, metrics.json, log.txt, checkpoints/)."
    ),
    images: Path | None = typer.Option(
        None, "--images", help="Images folder, where the layout does not say (a prediction folder's images)."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="center-offset (default; the shipped model is one), unet-watershed, maskrcnn or cascade-maskrcnn.",
    ),
    epochs: int | None = number(
        None,
        "--epochs",
        low=1,
        help="Epochs at most (default 100; on a CPU the time budget usually ends training first).",
    ),
    steps_per_epoch: int | None = number(
        None, "--steps-per-epoch", low=1, help="Batches per epoch (default 40)."
    ),
    batch_size: int | None = number(None, "--batch-size", low=1, help="Crops per batch (default 4)."),
    crop: int | None = number(None, "--crop", low=32, help="Crop side in network pixels (default 192)."),
    time_budget: float | None = time_budget_option("Default 15."),
    scale: float | None = number(
        None,
        "--scale",
        low=0.05,
        high=8,
        help="Train (and later predict) at this fraction of the image size (default: automatic, each image resized so that its median particle measures 20 network pixels; predict then sizes each image the same way).",
    ),
    init: str | None = typer.Option(
        None,
        "--init",
        help="Fine-tune: start from the weights of 'shipped', a run folder or an exported model folder (its architecture and size convention; a third of the learning rate, with warm-up). The way to adapt micrometry to your own images: works with 1-5 annotated images.",
    ),
    device: str = typer.Option(
        "auto", "--device", help="Where to train: auto (CUDA when present), cpu, cuda, cuda:1 ..."
    ),
    workers: int = number(
        0,
        "--workers",
        low=0,
        high=256,
        help="Processes drawing training crops (0: none; use several to keep a GPU busy).",
    ),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="The convolutions' arithmetic: auto (bfloat16 on a CPU with AMX, 2-3x faster; else float32), fp32 or bf16.",
    ),
    seed: int = seed_option("Seed for initialisation, data split, crops and augmentation."),
    exclude_border: bool | None = typer.Option(
        None,
        "--exclude-border/--keep-border",
        help="Whether the model reports particles touching the image border (default: as the annotations do: left out when they leave them out).",
    ),
    threads: int = threads_option(),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last checkpoint."
    ),
    overwrite: bool = overwrite_option("an earlier run in --out"),
    ddp: bool = typer.Option(
        False,
        "--ddp",
        help="Data-parallel: launch as `torchrun --nproc_per_node N -m micrometry particles train ... --ddp` (docs/scale.md).",
    ),
) -> None:
    """Train a particle instance model on annotated images (COCO, masks, ROI sets), with validation AP per epoch."""
    from micrometry.particles.models.training import TrainSettings, train_model

    if resume and not overwrite:  # (both: train_model refuses the pair)
        done = _finished_run(out, model, epochs, time_budget)
        if done:
            typer.echo(
                f"nothing to resume: {done} (give a larger --epochs or --time-budget to train on) -> {out}"
            )
            return

    given = {
        "model": model,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
        "crop": crop,
        "scale": scale,
        "seed": seed,
        "init": init,
        "device": device,
        "workers": workers,
        "precision": precision,
        "exclude_border": exclude_border,
    }
    settings = TrainSettings(**{k: v for k, v in given.items() if v is not None})
    if time_budget is not None:
        settings.time_budget_s = minutes_to_seconds(time_budget)
    with _warnings_as_lines():
        metrics = train_model(
            coco,
            out,
            settings,
            resume=resume,
            overwrite=overwrite,
            threads=threads or None,
            model_given=model is not None,
            given={k for k, v in (("epochs", epochs), ("time_budget_s", time_budget)) if v is not None},
            images=images,
        )
    best, final = metrics.get("best", {}), metrics.get("final", {})
    if best and not best.get("val_ap"):
        typer.secho(
            "warning: validation AP is 0: no predicted particle matched a validation particle yet "
            "(too little training for these images: a longer --time-budget, more images, or a --scale "
            "that makes particles 10-60 network pixels across)",
            fg=typer.colors.YELLOW,
            err=True,
        )
    config = _run_config(out)
    _echo_training_scale(config)
    from micrometry.particles.models.dense.quantized import FILE as INT8_FILE

    if (out / INT8_FILE).is_file():
        typer.echo(f"int8 network for CPU prediction: {out / INT8_FILE}")
    _echo_few_images_hint(config)
    # the summary stays the last line: the web page and the napari widget show it
    typer.echo(
        f"trained {final.get('epoch', 0)} epochs in {final.get('elapsed_s', 0) / 60:.1f} min; "
        f"best epoch {best.get('epoch')}: val AP {best.get('val_ap', float('nan')):.3f}, "
        f"AP50 {best.get('val_ap50', float('nan')):.3f}, F1@0.5 {best.get('val_f1', float('nan')):.3f} -> {out}"
    )


def _echo_few_images_hint(config: dict) -> None:
    """After fine-tuning on 1-4 images: the model predicts with flip TTA (docs/your-own-images.md)."""
    from micrometry.particles.models.base import few_image_finetune

    n_train = few_image_finetune(config)
    if n_train is not None:
        typer.echo(
            f"fine-tuned on {n_train} image(s): the model predicts with flip TTA by default, for steadier "
            "counts (--no-tta turns it off; docs/your-own-images.md)"
        )
