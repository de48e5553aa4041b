"""``micrometry synth ...``: write synthetic datasets with their hidden ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

synth_app = typer.Typer(help="Synthesise datasets in the real formats, with ground truth.", no_args_is_help=True)


@synth_app.command("particles")
def particles(
    out: Path = typer.Argument(..., help="Output folder: train/, test/, batches/A, batches/B."),
    truth: Path = typer.Option(..., "--truth", help="Folder for the hidden answers (test annotations, true descriptors)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same images."),
    n_train: int = typer.Option(8, "--n-train", min=0, help="Annotated training images."),
    n_test: int = typer.Option(4, "--n-test", min=0, help="Test images (answers go to TRUTH)."),
    n_batch: int = typer.Option(3, "--n-batch", min=0, help="Images in each of batches A and B."),
    height: int = typer.Option(1024, "--height", min=32, help="Image height in pixels."),
    width: int = typer.Option(1280, "--width", min=32, help="Image width in pixels."),
    params_file: Optional[Path] = typer.Option(None, "--params", help="JSON of generator parameters "
                                               "({\"population\": {...}, \"optics\": {...}, \"distractors\": {...}}); "
                                               "see OUT/synth_config.json for every name."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing OUT and TRUTH folders."),
) -> None:
    """Synthetic brightfield particle images with COCO ground truth (see docs/particles-data.md)."""
    from micrometry.errors import InputError
    from micrometry.io.coco import read_json
    from micrometry.synth.particles import SuspensionParams, generate_dataset

    overrides = read_json(params_file) if params_file is not None else {}
    if not isinstance(overrides, dict):
        raise InputError("parameters must be a JSON object", params_file)
    overrides = {**overrides.get("params", overrides), "height": height, "width": width}
    try:
        params = SuspensionParams.from_dict(overrides)
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc), params_file) from None
    summary = generate_dataset(out, truth, params, seed=seed, n_train=n_train, n_test=n_test,
                               n_batch=n_batch, overwrite=overwrite)
    typer.echo(f"{summary['images']} images ({summary['train_annotations']} train and "
               f"{summary['test_annotations']} test particles annotated) in {summary['seconds']:.1f} s "
               f"({summary['seconds_per_image']:.2f} s/image) -> {out}, answers in {truth}")
