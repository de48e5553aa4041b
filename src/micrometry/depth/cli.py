"""``micrometry sem ...`` (datasets) and ``micrometry depth ...`` (models) commands."""

from __future__ import annotations

import typer

sem_app = typer.Typer(help="SEM datasets in the 2022 Samsung 3D-metrology layout.", no_args_is_help=True)
depth_app = typer.Typer(help="Depth from SEM: train, predict, evaluate, measure.", no_args_is_help=True)
