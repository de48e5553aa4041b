"""``micrometry particles ...`` commands."""

from __future__ import annotations

import typer

particles_app = typer.Typer(help="Particles: segment, measure, compare.", no_args_is_help=True)
