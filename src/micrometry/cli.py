"""The ``micrometry`` command line.

Each job keeps its commands beside its code (``micrometry/*/cli.py``); this
module only assembles them and turns user errors into one line and exit code 2.
"""

from __future__ import annotations

import functools
import os
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
    extra: tuple[Path, ...] = ()
    if job == "depth":
        from micrometry.depth.methods.base import export_run

        exported = export_run(run_dir)
    else:
        from micrometry.particles.models.base import export_run
        from micrometry.particles.models.dense.quantized import int8_file

        exported = export_run(run_dir)
        int8 = int8_file(exported)  # its int8 network goes along
        extra = (int8,) if int8 is not None else ()
    write_model(out, exported, overwrite=overwrite, extra_files=extra)
    size = sum(f.stat().st_size for f in out.iterdir())
    typer.echo(f"exported {job} model {exported.model!r} ({size / 1e6:.2f} MB) -> {out}")


_register()


# Parameters that name what a command writes (``synth`` writes its TRUTH folder too); every other
# path parameter, and every text parameter naming an existing path (--model RUN), is an input.
OUTPUT_PARAMS = ("out", "zip_path")
EXTRA_OUTPUT_PARAMS = {("synth",): ("truth",)}  # by command group


class Interrupted(Exception):
    """Ctrl-C (SIGINT) during a command: reported as one line and exit code 130."""


def _param_name(param) -> str:
    if param.param_type_name == "option" and param.opts:
        return param.opts[0]
    return param.metavar or param.name.upper()


def _guard_command(command, path: tuple[str, ...]) -> None:
    """Check a command's outputs against its inputs before it runs, and report Ctrl-C as one line."""
    callback = command.callback
    if callback is None:
        return
    outputs = OUTPUT_PARAMS + EXTRA_OUTPUT_PARAMS.get(path[:1], ())
    params = {p.name: p for p in command.params}

    @functools.wraps(callback)
    def guarded(*args, **kwargs):
        from micrometry.io.atomic import refuse_overlap

        outs, ins = {}, {}
        for name, value in kwargs.items():
            param = params.get(name)
            if param is None or value is None or isinstance(value, bool):
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            if name in outputs:
                outs[_param_name(param)] = value
                continue
            for i, v in enumerate(values):
                key = _param_name(param) + (f" #{i + 1}" if i else "")
                if isinstance(v, os.PathLike):
                    ins[key] = v
                elif isinstance(v, str):  # --model RUN, --init RUN, an ensemble "RUN1,RUN2"
                    for part in (p.strip() for p in v.split(",")):
                        if part and os.path.lexists(part):
                            ins[key] = part
        for name, value in list(ins.items()):  # an image list's images are inputs too
            if str(value).lower().endswith(".txt") and os.path.isfile(value):
                ins.update({f"{name} line {i + 1}": p for i, p in enumerate(_listed(value))})
        for name, value in {**outs, **ins}.items():
            _check_text(value, name)
        for name, value in outs.items():
            if os.path.islink(value) and not os.path.exists(value):  # it would fail after the work
                raise InputError(
                    f"{name} is a broken symbolic link (to {os.readlink(value)}); remove it or choose "
                    "another output",
                    value,
                )
        refuse_overlap(outs, ins)
        try:
            return callback(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted from None

    command.callback = guarded


def _listed(path) -> list:
    """The images a ``.txt`` list names (none when it cannot be read: the command says why)."""
    from micrometry.io.image import read_image_list

    try:
        return read_image_list(path)
    except InputError:
        return []


def _check_text(path, name: str) -> None:
    """A path that is not text (non-UTF-8 bytes) cannot be printed or written into results: refused."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(
            f"{name}: the path is not valid UTF-8 text; rename it", ascii(str(path))[1:-1]
        ) from None


def _guard_all(command, path: tuple[str, ...] = ()) -> None:
    if getattr(command, "commands", None):
        for name, sub in command.commands.items():
            _guard_all(sub, (*path, name))
    else:
        _guard_command(command, path)


def _usage_line(exc: typer.TyperException) -> str:
    """A usage error as one line: ``micrometry depth predict: Missing option '--out' (see ... --help)``."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "micrometry"
    message = " ".join(exc.format_message().split())
    return f"{where}: {message} (see {where} --help)"


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (0 ok, 2 bad input or usage, 130 interrupted)."""
    warnings.showwarning = show_warning
    command = typer.main.get_command(app)
    _guard_all(command)
    args = [str(a) for a in argv] if argv is not None else None
    try:
        with warnings.catch_warnings():
            # NumPy's overflow/invalid RuntimeWarnings are numerics, not the user's business: the
            # values they touch are checked where they matter (non-finite -> missing, with a note)
            warnings.filterwarnings(
                "ignore", r"(overflow|underflow|invalid value|divide by zero) encountered", RuntimeWarning
            )
            code = command.main(args=args, prog_name="micrometry", standalone_mode=False)
    except typer.TyperException as exc:  # usage errors (exit code 2) and the like
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help
            typer.echo(exc.format_message())
            return 2
        typer.secho(f"error: {_usage_line(exc)}", fg=typer.colors.RED, err=True)
        return 2
    except (Interrupted, KeyboardInterrupt, typer.Abort):
        return _interrupted()
    except InputError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        return 2
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    if code == 130:  # typer's own handling of a Ctrl-C outside the command
        return _interrupted()
    return code if isinstance(code, int) else 0


def _interrupted() -> int:
    typer.secho(
        "error: interrupted (Ctrl-C); outputs not finished were not written", fg=typer.colors.RED, err=True
    )
    return 130


def main() -> None:
    sys.exit(run())
