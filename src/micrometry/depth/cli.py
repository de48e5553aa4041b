"""``micrometry sem ...`` (datasets) and ``micrometry depth ...`` (models) commands."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer

from micrometry.engine import ENGINE_OPTION, RAY_ADDRESS_OPTION, RAY_WORKERS_OPTION
from micrometry.launch import supports_ddp
from micrometry.options import (
    fraction,
    minutes_to_seconds,
    nm_per_px_option,
    number,
    overwrite_option,
    seed_option,
    threads_option,
    time_budget_option,
)

sem_app = typer.Typer(help="SEM datasets in the 2022 Samsung 3D-metrology layout.", no_args_is_help=True)
depth_app = typer.Typer(help="Depth from SEM: train, predict, evaluate, measure.", no_args_is_help=True)


@sem_app.command("info")
def sem_info(
    data: Path = typer.Argument(..., help="Dataset folder (simulation_data/, train/, test/)."),
    check_images: bool = typer.Option(True, help="Decode every image and check it is 72x48."),
    as_json: bool = typer.Option(False, "--json", help="Print counts and problems as JSON."),
) -> None:
    """Validate a dataset and print counts per case, depth folder and site."""
    from rich.console import Console
    from rich.table import Table

    from micrometry.depth.dataset import index_dataset, validate_images
    from micrometry.errors import DatasetError

    index = index_dataset(data)
    if check_images:
        validate_images(index)
    counts = index.counts()
    sites = counts["images_per_site"]
    summary = {
        "root": str(index.root),
        "simulated_pairs": len(index.sim),
        "simulated_sem_images": 2 * len(index.sim),
        "simulated_base_structures": len({(p.family, p.base) for p in index.sim}),
        "sim_pairs_per_case": {f"Case_{k}": v for k, v in sorted(counts["sim_pairs_per_case"].items())},
        "real_train_images": len(index.real),
        "real_sites": len(sites),
        "real_images_per_depth": {
            f"Depth_{k}": v for k, v in sorted(counts["real_images_per_depth"].items())
        },
        "real_sites_per_depth": {f"Depth_{k}": v for k, v in sorted(counts["real_sites_per_depth"].items())},
        "images_per_site": {"min": min(sites.values(), default=0), "max": max(sites.values(), default=0)},
        "test_images": len(index.test),
        "problems": [{"path": str(p.path), "message": p.message, "fatal": p.fatal} for p in index.problems],
    }
    console = Console()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        table = Table(title=f"SEM dataset {index.root}")
        table.add_column("part")
        table.add_column("group")
        table.add_column("images", justify="right")
        table.add_column("sites", justify="right")
        for case, n in summary["sim_pairs_per_case"].items():
            table.add_row("simulation", case, f"{n} depth maps, {2 * n} SEM", "")
        for depth, n in summary["real_images_per_depth"].items():
            table.add_row("real train", depth, str(n), str(summary["real_sites_per_depth"].get(depth, 0)))
        table.add_row("test", "", str(summary["test_images"]), "")
        console.print(table)
        if sites:
            console.print(
                f"images per site: {summary['images_per_site']['min']}..{summary['images_per_site']['max']}"
            )
    # one line per problem, never wrapped: users grep these
    for problem in index.warnings:
        typer.echo(f"warning: {problem}", err=True)
    for problem in index.errors:
        typer.echo(f"error: {problem}", err=True)
    if index.errors:
        raise DatasetError(f"{len(index.errors)} problem(s) in the dataset, listed above", index.root)


def _parse_params(pairs: list[str]) -> dict:
    """``KEY=VALUE`` strings -> dict; values are read as JSON when they parse (numbers, true, lists)."""
    from micrometry.errors import InputError

    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--param expects KEY=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


@depth_app.command("train")
@supports_ddp
def depth_train(
    data: Path = typer.Argument(..., help="Dataset folder (simulation_data/, train/)."),
    out: Path = typer.Option(..., "--out", help="Run folder: config, metrics, log, checkpoints."),
    method: str | None = typer.Option(
        None,
        "--method",
        help="Method: unet-weak (default, the best on "
        "bench/depth.py), unet, ae (the official baseline), lookup, classifier, "
        "cyclegan; docs/depth.md describes each.",
    ),
    params: list[str] = typer.Option([], "--param", help="Method hyper-parameter KEY=VALUE (repeatable)."),
    epochs: int | None = number(None, "--epochs", low=1, help="Override the method's epochs."),
    time_budget: float | None = time_budget_option(
        help="Default: the method's own (cyclegan, lookup: their time_budget_s parameter; others: none)."
    ),
    seed: int = seed_option("Random seed (initialisation and shuffling)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu, cuda."),
    threads: int = threads_option(),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in OUT."),
    overwrite: bool = overwrite_option("an earlier run in OUT"),
    ddp: bool = typer.Option(
        False,
        "--ddp",
        help="Data-parallel: launch as `torchrun --nproc_per_node N -m micrometry depth train ... --ddp` (docs/scale.md).",
    ),
) -> None:
    """Train a depth method; prints the best validation metrics.

    Progress bar columns: each step's training losses, mean absolute errors in depth grey levels: map= whole depth map, depth= hole depth, real= depth of the real images (from their Depth_* folder); loss= a single-loss method's (ae: the same L1 error); ce= and acc= the case classifier's cross-entropy and accuracy.

    Validation metrics (val_rmse, ...) go to log.txt and metrics.json per epoch.
    """
    from micrometry.depth.methods import DEFAULT_METHOD, DEPTH_METHODS, DepthData, train_method
    from micrometry.errors import CheckpointError, InputError
    from micrometry.train import RunDir
    from micrometry.train.loop import configure_threads, select_device

    configure_threads(threads or None)
    select_device(device)  # an unusable --device is refused before the run folder exists
    RunDir.check_training(out, resume, overwrite)  # the rules both jobs share, before any work
    if resume:
        run = RunDir.for_training(out, resume=True)
        run.check_same_data(data)
        config = run.read_config()
        if method is not None and method != config.get("method"):
            raise InputError(f"run was trained with method {config.get('method')!r}, not {method!r}", out)
        if params:
            raise InputError("--param cannot change a run being resumed", out)
        method_config = config.get("method_config", {})
        if not isinstance(config.get("method"), str) or not isinstance(method_config, dict):
            raise CheckpointError(
                "config.json names no 'method' (with its 'method_config')", out / "config.json"
            )
        chosen = DEPTH_METHODS.create(config["method"], **method_config)
        epochs = epochs if epochs is not None else config.get("epochs")
        time_budget_s = (
            minutes_to_seconds(time_budget) if time_budget is not None else config.get("time_budget_s")
        )
        seed = config.get("seed", seed)
        done = run.finished(epochs, time_budget_s)
        if done:
            typer.echo(
                f"nothing to resume: {done} (give a larger --epochs or --time-budget to train on); "
                f"best: {_best_line(run.read_metrics())} -> {out}"
            )
            return
    else:
        chosen = DEPTH_METHODS.create(method or DEFAULT_METHOD, **_parse_params(params))
        if not Path(data).is_dir():
            raise InputError("no such dataset folder", data)
        run = None
        time_budget_s = minutes_to_seconds(time_budget)
    training_data = DepthData.load(data, chosen.uses)  # before the run folder exists: bad data leaves nothing
    if run is None:
        run = RunDir.for_training(out, overwrite=overwrite)
    metrics = train_method(
        chosen,
        training_data,
        run,
        resume=resume,
        time_budget_s=time_budget_s,
        epochs=epochs,
        seed=seed,
        device=device,
        extra_config={"data": str(Path(data).resolve())},
    )
    typer.echo(f"{chosen.name}: {_best_line(metrics)} -> {out}")


def _best_line(metrics: dict) -> str:
    best = metrics.get("best", {})
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.items())


@depth_app.command("predict")
def depth_predict(
    images: Path = typer.Argument(
        ..., help="Folder of SEM images, a dataset folder (uses its test/SEM), or a .txt list of image paths."
    ),
    model: str = typer.Option(
        "shipped",
        "--model",
        help="'shipped' (the depth model that comes with micrometry, "
        "unet-weak trained on its synthetic SEM data), a run folder written by `micrometry depth "
        "train`, or a model folder written by `micrometry export`.",
    ),
    out: Path = typer.Option(..., "--out", help="Folder for the depth PNGs (same file names)."),
    zip_path: Path | None = typer.Option(None, "--zip", help="Also write a submission zip of the PNGs."),
    batch_size: int = number(4096, "--batch-size", low=1, help="Images per inference batch."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu, cuda."),
    threads: int = threads_option(),
    overwrite: bool = overwrite_option("OUT / zip"),
    engine: str = ENGINE_OPTION,
    ray_workers: int = RAY_WORKERS_OPTION,
    ray_address: str | None = RAY_ADDRESS_OPTION,
) -> None:
    """Predict one 72x48 uint8 depth map per SEM image."""
    import time

    from micrometry.depth.methods import load_depth_model
    from micrometry.depth.predict import predict_folder
    from micrometry.engine import make_engine
    from micrometry.errors import show_warning
    from micrometry.io.atomic import refuse_existing
    from micrometry.train.loop import configure_threads

    runner = make_engine(engine, batch_size, ray_workers, ray_address)
    # (--zip inside --out, or --out holding the images: refused by the CLI for every command)
    refuse_existing(out, overwrite, folder=True)
    refuse_existing(zip_path, overwrite, folder=False)
    configure_threads(threads or None)
    method = load_depth_model(model, device=device)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:  # e.g. images unlike the training data
        warnings.simplefilter("always", UserWarning)
        n = predict_folder(
            images, method, out, zip_path, overwrite=overwrite, batch_size=batch_size, engine=runner
        )
    seconds = time.perf_counter() - started
    typer.echo(
        f"{n} depth maps ({method.name}) -> {out}"
        + (f" and {zip_path}" if zip_path else "")
        + f" in {seconds:.1f} s"
    )
    for w in caught:  # after the summary line, each once, in the CLI's one-line format
        show_warning(w.message, w.category)


@depth_app.command("evaluate")
def depth_evaluate(
    pred: Path = typer.Argument(..., help="Folder of predicted depth PNGs."),
    truth: Path = typer.Argument(
        ..., help="Folder of true depth PNGs with the same names (or a synth TRUTH root)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the scores as JSON."),
) -> None:
    """Pixel RMSE of predicted depth maps, overall and per case."""
    from rich.console import Console
    from rich.table import Table

    from micrometry.depth.evaluate import evaluate_folders

    result = evaluate_folders(pred, truth)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"Depth RMSE, {result['images']} images")
    table.add_column("case")
    table.add_column("images", justify="right")
    table.add_column("RMSE", justify="right")
    for case, r in result["per_case"].items():
        table.add_row(case, str(r["images"]), f"{r['rmse']:.3f}")
    table.add_row("all", str(result["images"]), f"{result['rmse']:.3f}", style="bold")
    Console().print(table)


@depth_app.command("measure")
def depth_measure(
    pred: Path = typer.Argument(..., help="Folder of depth PNGs (predicted or true)."),
    out: Path = typer.Option(..., "--out", help="Table to write, one row per image: .csv or .parquet."),
    nm_per_px: float = nm_per_px_option(),
    top_fraction: float = fraction(
        0.9, "--top-level", help="Top CD is read at this fraction of the depth above the bottom."
    ),
    bottom_fraction: float = fraction(
        0.1, "--bottom-level", help="Bottom CD is read at this fraction of the depth."
    ),
    overwrite: bool = overwrite_option("table"),
) -> None:
    """Per image: depth, top and bottom CD in x and y, sidewall angle (docs/depth.md), and why any is missing."""
    import math

    from micrometry.depth.dataset import load_image_folder
    from micrometry.depth.measure import failure_summary, hole_table, measure_maps
    from micrometry.errors import InputError
    from micrometry.io.atomic import atomic_path, refuse_existing

    if not (math.isfinite(nm_per_px) and nm_per_px > 0):
        raise InputError(f"--nm-per-px must be a finite number > 0, got {nm_per_px}")
    if bottom_fraction >= top_fraction:
        raise InputError(f"--bottom-level ({bottom_fraction}) must be below --top-level ({top_fraction})")
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InputError("--out must end in .csv or .parquet", out)
    refuse_existing(out, overwrite, folder=False)
    maps = load_image_folder(pred)
    rows = measure_maps(
        maps.images, nm_per_px=nm_per_px, top_fraction=top_fraction, bottom_fraction=bottom_fraction
    )
    table = hole_table(maps.names, rows)
    with atomic_path(out) as tmp:
        if suffix == ".csv":
            table.to_csv(tmp, index=False)  # NaN -> empty cell
        else:
            table.to_parquet(tmp, index=False)
    head, reasons = failure_summary(table)
    typer.echo(f"{head} -> {out} (mean depth {table['depth_nm'].mean():.2f} nm, {nm_per_px:g} nm/px)")
    for line in reasons:
        typer.echo(f"  {line}")
    missing = int((table["status"] != "ok").sum())
    if missing:
        typer.echo(
            f"warning: {missing} of {len(table)} holes not fully measured; the note column says why", err=True
        )


@depth_app.command("frame")
def depth_frame(
    frames: Path = typer.Argument(..., help="A CD-SEM frame (PNG/TIFF) or a folder of frames."),
    model: str = typer.Option(
        "shipped", "--model", help="'shipped', a run folder of `depth train`, or an exported model folder."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder for holes.csv, summary.json and one <frame>_depth.tif per frame."
    ),
    nm_per_px: float = nm_per_px_option(),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu, cuda."),
    threads: int = threads_option(),
    overwrite: bool = overwrite_option("OUT"),
) -> None:
    """Every hole of each frame: depth with its 90 % interval, CDs, sidewall angle, defects (docs/depth.md, "Frames")."""
    import math
    import time

    from micrometry.depth.frames import analyse_frames
    from micrometry.depth.methods import load_depth_model
    from micrometry.errors import InputError
    from micrometry.io.atomic import refuse_existing
    from micrometry.io.image import list_images
    from micrometry.train.loop import configure_threads

    if not (math.isfinite(nm_per_px) and nm_per_px > 0):
        raise InputError(f"--nm-per-px must be a finite number > 0, got {nm_per_px}")
    if not frames.exists():
        raise InputError("no such file or folder", frames)
    paths = list_images(frames)
    if not paths:
        raise InputError("no images found", frames)
    refuse_existing(out, overwrite, folder=True)
    configure_threads(threads or None)
    method = load_depth_model(model, device=device)
    started = time.perf_counter()
    summaries = analyse_frames(paths, method, out, nm_per_px=nm_per_px, overwrite=overwrite)
    seconds = time.perf_counter() - started
    holes = sum(s["holes"] for s in summaries.values())
    flagged = sum(len(s["flagged"]) for s in summaries.values())
    typer.echo(
        f"{len(summaries)} frame(s), {holes} hole sites, {flagged} flagged ({method.name}) -> {out} in {seconds:.1f} s"
    )
    for name, s in summaries.items():
        d = s["statistics"]["depth_nm"]
        typer.echo(
            f"  {name}: {s['status']['ok'] + s['status']['partial']} measured, {s['status']['border']} at the border; "
            f"depth {d['mean']:.1f} nm, 3 sigma {d['three_sigma']:.1f} nm; "
            + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in s["defects"].items())
        )
    unlike = sum(s["unlike_training_data"] for s in summaries.values())
    if unlike:
        normal = sum(s["measured_unflagged"] for s in summaries.values())
        typer.echo(
            f"warning: {unlike} of {normal} unflagged holes look unlike the model's training data: "
            f"their depths are unreliable; see {out / 'holes.csv'} (unlike_training_data)",
            err=True,
        )
