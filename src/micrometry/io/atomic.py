"""Outputs appear whole or not at all: write to a temporary name, then rename.

A crash, Ctrl-C or bad input half-way through never leaves a half-written file
or folder where the user expects a result. Temporary names carry the host and
process id of their writer (``.NAME.<host>.<pid>.<random>.partial``), so that
the next write of the same output removes what a killed writer left behind,
and never what a running one is still building.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from micrometry.errors import InputError, OutputExistsError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; rename it to ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # (stale temporaries are cleared by refuse_existing, once per output: listing the folder on
    # every write here would cost O(n^2) for the thousands of files a predict writes into one folder)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give it the permissions a plain open() would
        os.chmod(tmp_path, 0o666 & ~_umask())
        if path.is_dir():  # os.replace would fail with a traceback; the CLI checks this before the work
            raise OutputExistsError("is a folder (a file is to be written here)", path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _host() -> str:
    # dots would make the temporary name ambiguous to parse
    return socket.gethostname().replace(".", "_") or "host"


def _temp_prefix(path: Path) -> str:
    """``.NAME.<host>.<pid>.``: whose temporary this is (see :func:`remove_stale_temporaries`)."""
    return f".{path.name}.{_host()}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove temporaries of ``path`` left by writers on this host that no longer run (killed ones).

    A temporary of another host, of a live process, or of an unknown naming
    scheme is kept: it may still be in use.

    Returns
    -------
    list of Path
        What was removed.
    """
    path = Path(path)
    prefix = f".{path.name}.{_host()}."
    removed = []
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for candidate in candidates:
        pid_text = candidate.name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _pid_alive(int(pid_text)):
            continue
        if not (candidate.name.endswith(".partial") or ".tmp" in candidate.name):
            continue
        if candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


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


def refuse_existing(path: str | Path | None, overwrite: bool = False, folder: bool | None = None) -> None:
    """Refuse an output that exists or cannot be written, before any work is done.

    (The writers would only find out at the end.) An output that passes has the
    temporaries of killed earlier runs removed (:func:`remove_stale_temporaries`).

    Parameters
    ----------
    path : str, Path or None
        A file or folder to be written; None (an optional output not asked for) is never refused.
    overwrite : bool
        The command's ``--overwrite``: replacing the output is allowed.
    folder : bool, optional
        True: the output is a folder, so an existing file there is refused even
        with ``overwrite``; False: the output is a file, so an existing folder
        is refused. None: either.

    Raises
    ------
    OutputExistsError
        ``path`` is a file, or a non-empty folder, and ``overwrite`` is false
        (an empty folder holds nothing to lose); or it is of the wrong kind.
    InputError
        ``path`` cannot be created (see :func:`check_writable`).
    """
    if path is None:
        return
    path = Path(path)
    if folder is True and path.exists() and not path.is_dir():
        raise OutputExistsError("exists and is not a folder", path)
    if folder is False and path.is_dir():
        raise OutputExistsError("is a folder (a file is to be written here)", path)
    check_writable(path)
    if path.is_dir() and Path.cwd().resolve().is_relative_to(path.resolve()):
        # replacing it would move the user's working folder (and all it holds) away
        raise OutputExistsError("is the current folder or holds it; choose a new output folder", path)
    if not (overwrite or (path.is_dir() and not any(path.iterdir()))) and path.exists():
        raise OutputExistsError("already exists (pass --overwrite to replace it)", path)
    remove_stale_temporaries(path)  # what a killed run of this output left behind


def check_writable(path: str | Path) -> None:
    """Refuse an output whose folder cannot be written, before any work is done; creates nothing.

    Outputs are written beside ``path`` (temporary name, then rename), so the
    nearest existing folder above it must accept a new file: it is tried with
    a probe file, which is removed at once (permission bits alone do not say
    it, e.g. on read-only mounts or for root).

    Raises
    ------
    InputError
        A file stands where a folder is needed, or the folder is not writable.
    """
    path = Path(path)
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"cannot be created: {parent} is not a folder", path)
    try:
        fd, probe = tempfile.mkstemp(prefix=".micrometry-write-test.", dir=parent)
    except OSError as exc:
        raise InputError(
            f"cannot be written: no write access to {parent} ({exc.strerror or exc})", path
        ) from None
    os.close(fd)
    os.unlink(probe)


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
    refuse_existing(path, overwrite, folder=True)  # also clears a killed run's temporaries of path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".partial", dir=path.parent))
    try:
        yield tmp
        # mkdtemp makes the folder private (0700); give it the permissions a plain mkdir would
        os.chmod(tmp, 0o777 & ~_umask())
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
