"""The ``micrometry`` command line.

Each job keeps its commands beside its code (``micrometry/*/cli.py``); this
module only assembles them and turns user errors into one line and exit code 2.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import typer

from micrometry.errors import InputError, show_warning
from micrometry.options import quiet_option

app = typer.Typer(
    name="micrometry",
    help="Turn microscope images into measurements: depth from SEM, particle morphometry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from micrometry import __version__

        typer.echo(f"micrometry {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    quiet: bool = quiet_option(),
) -> None:
    """Turn microscope images into measurements: depth from SEM, particle morphometry."""


def _register() -> None:
    from micrometry.demo import demo
    from micrometry.depth.cli import depth_app, sem_app
    from micrometry.particles.cli import particles_app
    from micrometry.report.cli import report
    from micrometry.synth.cli import synth_app
    from micrometry.web.cli import serve

    app.add_typer(synth_app, name="synth")
    app.add_typer(sem_app, name="sem")
    app.add_typer(depth_app, name="depth")
    app.add_typer(particles_app, name="particles")
    app.command("demo")(demo)
    app.command("report")(report)
    app.command("serve")(serve)
    app.command("export")(export)


def export(
    run_dir: Path = typer.Argument(
        ..., metavar="RUN", help="A finished training run folder (depth or particles)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Exported model folder MODEL (model.json + weights.safetensors)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing MODEL folder."),
) -> None:
    """Export a training run's best model as a small folder that every --model option accepts.

    The folder holds model.json (format, job, model name, preprocessing, the settings inference needs, provenance) and weights.safetensors (tensors only: loading it never runs code). Optimiser state, RNG state and history stay in the run.
    """
    from micrometry.errors import OutputExistsError
    from micrometry.modelfile import run_job, write_model

    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError("already exists (pass --overwrite to replace it)", out)
    job = run_job(run_dir)
    if job == "depth":
        from micrometry.depth.methods.base import export_run
    else:
        from micrometry.particles.models.base import export_run
    exported = export_run(run_dir)
    write_model(out, exported, overwrite=overwrite)
    size = sum(f.stat().st_size for f in out.iterdir())
    typer.echo(f"exported {job} model {exported.model!r} ({size / 1e6:.2f} MB) -> {out}")


_register()


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (0 ok, 2 bad input or usage, 130 interrupted)."""
    warnings.showwarning = show_warning
    try:
        # Standalone mode: typer prints usage errors itself and exits with code 2.
        app(args=[str(a) for a in argv] if argv is not None else None, prog_name="micrometry")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except InputError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return 0


def main() -> None:
    sys.exit(run())
