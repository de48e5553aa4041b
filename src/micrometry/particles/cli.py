"""``micrometry particles ...`` commands."""

from __future__ import annotations

from pathlib import Path

import typer

particles_app = typer.Typer(help="Particles: segment, measure, compare.", no_args_is_help=True)


@particles_app.command("measure")
def measure(
    pred: Path = typer.Argument(..., help="Label-image folder, prediction folder (PRED/labels) or COCO .json."),
    out: Path = typer.Option(..., "--out", help="Particle table (.csv or .parquet); summaries go beside it."),
    pixel_size: float = typer.Option(1.0, "--pixel-size", help="Pixel side length in --unit."),
    unit: str = typer.Option("px", "--unit", help="Length unit of --pixel-size (e.g. um, nm)."),
    exclude_edges: bool = typer.Option(False, "--exclude-edges", help="Leave out particles touching the border."),
    images_json: Path = typer.Option(None, "--images-json", help="COCO images list for a results file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output tables."),
) -> None:
    """Measure every particle (ImageJ descriptors, ISO 9276-6) and summarise the size distribution."""
    from micrometry.particles.measure import check_outputs_free, measure_source, write_measurement

    check_outputs_free(out, overwrite)
    result = measure_source(pred, pixel_size=pixel_size, unit=unit, exclude_edges=exclude_edges,
                            images_json=images_json)
    paths = write_measurement(result, out, overwrite=overwrite)
    s = result.summary.iloc[0]
    typer.echo(f"{s['Count']} particles in {s['Images']} images; coverage {100 * s['Coverage']:.1f} %; "
               f"D50 (number) {s['D50_n']:.3g} {unit} [{s['D50_n_low']:.3g}, {s['D50_n_high']:.3g}]")
    for path in paths.values():
        typer.echo(f"wrote {path}")
