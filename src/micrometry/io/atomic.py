"""Outputs appear whole or not at all: write to a temporary name, then rename.

A crash, Ctrl-C or bad input half-way through never leaves a half-written file
or folder where the user expects a result.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from micrometry.errors import OutputExistsError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; rename it to ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give it the permissions a plain open() would
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, Paths: the usual suspects in metrics dictionaries
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def refuse_existing(path: str | Path | None, overwrite: bool = False) -> None:
    """Refuse an output that exists, before any work is done (the writers would only find out at the end).

    Parameters
    ----------
    path : str, Path or None
        A file or folder to be written; None (an optional output not asked for) is never refused.
    overwrite : bool
        The command's ``--overwrite``: replacing the output is allowed.

    Raises
    ------
    OutputExistsError
        ``path`` is a file, or a non-empty folder, and ``overwrite`` is false
        (an empty folder holds nothing to lose).
    """
    if path is None or overwrite:
        return
    path = Path(path)
    if path.is_dir() and not any(path.iterdir()):
        return
    if path.exists():
        raise OutputExistsError("already exists (pass --overwrite to replace it)", path)


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a whole output folder under a temporary name, then move it into place.

    Parameters
    ----------
    path : str or Path
        The final folder.
    overwrite : bool
        Replace an existing non-empty folder. Without it, an existing non-empty
        folder is an :class:`OutputExistsError` raised before any work is done.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError("exists and is not a folder", path)
    refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
