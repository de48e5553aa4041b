"""``micrometry synth ...``: write synthetic datasets with their hidden ground truth."""

from __future__ import annotations

from pathlib import Path

import typer

synth_app = typer.Typer(help="Synthesise datasets in the real formats, with ground truth.", no_args_is_help=True)


@synth_app.command("sem")
def synth_sem(
    out: Path = typer.Argument(..., help="Dataset folder to create (the 2022 Samsung 3D-metrology layout)."),
    truth: Path = typer.Option(..., "--truth", help="Folder for the hidden ground truth (outside OUT)."),
    seed: int = typer.Option(0, help="Random seed; the dataset is a deterministic function of it."),
    n_structures: int = typer.Option(200, help="Simulated base structures (x4 cases x2 renders)."),
    n_sites: int = typer.Option(40, help="Real training sites."),
    images_per_site: int = typer.Option(25, help="Real images per site."),
    n_test: int = typer.Option(200, help="Real test images."),
    overwrite: bool = typer.Option(False, help="Replace existing OUT and TRUTH folders."),
) -> None:
    """Synthesise simulated SEM/depth pairs, real sites with average depths, and test images."""
    from rich.console import Console

    from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset

    config = SemSynthConfig(seed=seed, n_structures=n_structures, n_sites=n_sites,
                            images_per_site=images_per_site, n_test=n_test)
    counts = write_sem_dataset(out, truth, config, overwrite=overwrite)
    Console().print(f"wrote {out} and {truth}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))
