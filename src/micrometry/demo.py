"""``micrometry demo``: the one-command tour."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for the demo's data and report.")) -> None:
    """Run micrometry end to end on embedded synthetic data."""
    raise NotImplementedError
