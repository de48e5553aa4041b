"""``micrometry demo``: the one-command tour on embedded synthetic data."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for the demo's data, runs and report."),
    seed: int = typer.Option(0, help="Random seed of the synthetic data."),
    overwrite: bool = typer.Option(True, help="Replace an earlier demo in OUT."),
) -> None:
    """Run micrometry end to end on synthetic data and summarise what it found."""
    from rich.console import Console
    from rich.table import Table

    from micrometry.depth.dataset import index_dataset
    from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset

    console = Console()
    console.rule("[bold]micrometry demo: depth from SEM")
    data, truth = out / "sem", out / "sem-truth"
    config = SemSynthConfig(seed=seed, n_structures=100, n_sites=16, images_per_site=20, n_test=100)
    write_sem_dataset(data, truth, config, overwrite=overwrite)
    index = index_dataset(data)
    counts = index.counts()
    table = Table(title=f"synthetic SEM dataset in {data}")
    table.add_column("part")
    table.add_column("images", justify="right")
    table.add_row("simulated SEM (2 renders per depth map)", str(2 * len(index.sim)))
    table.add_row("simulated depth maps", str(len(index.sim)))
    table.add_row("real train images", str(len(index.real)))
    table.add_row("real sites", str(len(counts["images_per_site"])))
    table.add_row("test images", str(len(index.test)))
    console.print(table)
    console.print(f"hidden ground truth in {truth}")
