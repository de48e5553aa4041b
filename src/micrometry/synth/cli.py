"""``micrometry synth ...``: write synthetic datasets with their hidden ground truth."""

from __future__ import annotations

import typer

synth_app = typer.Typer(help="Synthesise datasets in the real formats, with ground truth.", no_args_is_help=True)
