"""Every command's --help reads well in an 80-column terminal, and every command that runs a model takes --threads."""

from __future__ import annotations

import inspect

import pytest
import typer
from typer.testing import CliRunner

from micrometry.cli import app

WIDTH = 80


def commands(typer_app: typer.Typer, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """(command path, CommandInfo) of every command of a Typer app, sub-apps included."""
    found = [
        ((*path, c.name or c.callback.__name__.replace("_", "-")), c) for c in typer_app.registered_commands
    ]
    for group in typer_app.registered_groups:
        found += commands(group.typer_instance, (*path, group.name))
    return found


def render_help(typer_app: typer.Typer, path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(
        typer_app, [*path, "--help"], env={"COLUMNS": str(WIDTH), "TERMINAL_WIDTH": str(WIDTH)}
    )
    assert result.exit_code == 0, result.output
    return result.output


def broken_lines(text: str) -> list[str]:
    """Line breaks the terminal did not make: in the description above the option boxes, a line
    followed by more of its paragraph although the next word would have fitted on it
    ("... bright ones on a dark" / "field alike, ...")."""
    description = text.split("╭")[0].splitlines()
    broken = []
    for line, following in zip(description, description[1:]):
        if line.strip() and following.strip():
            next_word = following.split()[0]
            if len(line.rstrip()) + 1 + len(next_word) <= WIDTH - 1:
                broken.append(f"{line.strip()!r} / {following.strip()!r}")
    return broken


ALL = commands(app)


def test_the_walk_finds_every_command():
    names = {" ".join(path) for path, _ in ALL}
    assert {"particles predict", "depth train", "export", "demo", "serve", "synth particles"} <= names
    assert len(names) >= 20


@pytest.mark.parametrize("path", [path for path, _ in ALL], ids=[" ".join(p) for p, _ in ALL])
def test_help_fits_80_columns_without_broken_lines(path):
    text = render_help(app, path)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    assert broken_lines(text) == []


def test_help_texts_are_paragraphs_in_the_source():
    """Command docstrings and option help strings hold whole paragraphs: no line break inside one."""
    hard_wrapped = []
    for path, info in ALL:
        doc = info.help or inspect.getdoc(info.callback) or ""
        texts = [("docstring", p) for p in doc.split("\n\n")]
        for name, param in inspect.signature(info.callback).parameters.items():
            text = getattr(param.default, "help", None)
            if text:
                texts.append((f"--{name}", text))
        hard_wrapped += [f"{' '.join(path)} {where}: {t[:50]!r}" for where, t in texts if "\n" in t.strip()]
    assert hard_wrapped == []


def test_the_checker_finds_a_hard_wrapped_docstring():
    toy = typer.Typer()

    @toy.command()
    def go() -> None:
        """Segment particles.

        The shipped model handles dark particles on a bright field and bright ones on a dark
        field alike, and sizes each image itself.
        """

    @toy.command()
    def stop() -> None:
        """Stop."""

    # the terminal wraps after "on"; the docstring's own break after "a dark" is the broken one
    assert broken_lines(render_help(toy, ("go",))) == [
        "'a dark' / 'field alike, and sizes each image itself.'"
    ]
    assert broken_lines(render_help(toy, ("stop",))) == []


RUNS_A_MODEL = {
    "demo",
    "serve",
    "depth train",
    "depth predict",
    "depth frame",
    "particles train",
    "particles predict",
}


def test_every_command_that_runs_a_model_takes_threads():
    missing = []
    for path, info in ALL:
        params = set(inspect.signature(info.callback).parameters)
        if " ".join(path) in RUNS_A_MODEL or params & {"model", "method", "depth_model", "particle_model"}:
            if "threads" not in params:
                missing.append(" ".join(path))
    assert missing == []


def test_particles_predict_takes_threads(tmp_path):
    import numpy as np

    from micrometry.cli import run
    from micrometry.io.image import write_image

    image = np.full((64, 64), 200, np.uint8)
    image[20:40, 20:40] = 40
    write_image(tmp_path / "a.png", image)
    args = ["particles", "predict", str(tmp_path / "a.png"), "--model", "watershed", "--threads", "1"]
    assert run([*args, "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "labels" / "a.png").is_file()


def test_omp_wait_policy_is_set_in_one_place_by_importing_micrometry():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    setters = [
        str(p.relative_to(root))
        for folder in ("src", "bench", "tests")
        for p in (root / folder).rglob("*.py")
        if 'setdefault("OMP_WAIT_POLICY"' in p.read_text(encoding="utf-8") and p.name != "test_cli_help.py"
    ]
    assert setters == ["src/micrometry/__init__.py"]
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import os, micrometry; print(os.environ['OMP_WAIT_POLICY'])"
    assert (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout
        == "PASSIVE\n"
    )
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's own choice wins
    assert (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout
        == "ACTIVE\n"
    )
