"""Outputs appear whole or not at all: write to a temporary name, then rename.

A crash, Ctrl-C or bad input half-way through never leaves a half-written file
or folder where the user expects a result. Temporary names carry the host and
process id of their writer (``.NAME.<host>.<pid>.<random>.partial``), so that
the next write of the same output removes what a killed writer left behind,
and never what a running one is still building.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import stat
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
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=_temp_suffix(path, ".tmp"), dir=path.parent)
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
    return (socket.gethostname().replace(".", "_") or "host")[:32]


# Most bytes in a file name (ext4, xfs, btrfs, tmpfs); a temporary name must stay within it.
NAME_MAX = 255
# What follows the prefix: mkstemp's random part (8), a dot and the longest kind tag (".partial",
# ".tmp" plus a suffix of at most 16 bytes).
_TAIL_BYTES = 8 + 1 + 4 + 16


def _temp_suffix(path: Path, tag: str) -> str:
    """``tag`` plus the output's suffix when it is short (image writers pick the format by suffix)."""
    return tag + path.suffix if len(os.fsencode(path.suffix)) <= 16 else tag


def _temp_stem(path: Path) -> str:
    """The output's name, cut (in bytes, as the file system counts) so that a temporary name fits NAME_MAX."""
    room = NAME_MAX - _TAIL_BYTES - len(f"..{_host()}.{os.getpid()}.")
    raw = os.fsencode(path.name)
    return path.name if len(raw) <= room else os.fsdecode(raw[:room])


def _temp_prefix(path: Path) -> str:
    """``.NAME.<host>.<pid>.``: whose temporary this is (see :func:`remove_stale_temporaries`)."""
    return f".{_temp_stem(path)}.{_host()}.{os.getpid()}."


def _kind(path: Path) -> str | None:
    """``"dir"``, ``"other"`` or None (absent), from one ``stat`` (links followed)."""
    try:
        return "dir" if stat.S_ISDIR(path.stat().st_mode) else "other"
    except (FileNotFoundError, NotADirectoryError):
        return None


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
    prefix = f".{_temp_stem(path)}.{_host()}."
    removed = []
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for candidate in candidates:
        pid_text = candidate.name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _pid_alive(int(pid_text)):
            continue
        if not (candidate.name.endswith((".partial", ".old")) or ".tmp" in candidate.name):
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
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def json_default(obj: Any) -> Any:
    """JSON for the usual suspects in metrics dictionaries: numpy scalars and arrays, Paths."""
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
    if len(os.fsencode(path.name)) > NAME_MAX:  # the rename at the end would fail, after the work
        raise InputError(f"file name is longer than the {NAME_MAX} bytes file systems allow", path)
    if path.is_symlink() and not path.exists():
        raise OutputExistsError(
            f"is a broken symbolic link (to {os.readlink(path)}); remove it or choose another output", path
        )
    # one stat: between exists() and is_dir() another run replacing the same output may move it away
    if folder is True and _kind(path) not in (None, "dir"):
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
        _move_into_place(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, path: Path, tries: int = 20) -> None:
    """Rename the finished folder ``tmp`` to ``path``, moving an existing ``path`` aside first.

    The old folder goes to a name of this process's own (several runs may
    replace the same output at once), and is removed after the rename. Between
    moving the old one aside and renaming, another run may put its own there:
    then the old one is moved aside again.
    """
    for _ in range(tries):
        try:
            os.replace(tmp, path)  # succeeds when path is absent (or an empty folder)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
        old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".old", dir=path.parent))
        try:
            os.replace(path, old)
        except FileNotFoundError:  # another run moved it first
            pass
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.EISDIR):
                raise
            os.rmdir(old)
            os.replace(path, old)  # a file (or link) where the folder goes
        finally:
            shutil.rmtree(old, ignore_errors=True)
            if old.is_symlink() or old.is_file():
                old.unlink(missing_ok=True)
    raise OutputExistsError("kept changing while being replaced (other runs write it too)", path)


def refuse_overlap(outputs: dict[str, str | Path], inputs: dict[str, str | Path]) -> None:
    """Refuse, before any work, an output that is, holds or lies inside an input (or another output).

    ``--overwrite`` replaces a whole output: were it the input folder, or a
    folder holding it, the input would be lost; an output inside an input
    folder mixes results into the data. Paths are compared after resolving
    symbolic links, so a link to the input is the input.

    Parameters
    ----------
    outputs, inputs : dict
        Option name (``--out``) -> path.

    Raises
    ------
    InputError
        Naming the output, the input and how they overlap.
    """
    outs = [(name, Path(p)) for name, p in outputs.items() if p is not None]
    ins = [(name, Path(p)) for name, p in inputs.items() if p is not None]
    for k, (out_name, out) in enumerate(outs):
        target = out.resolve()
        for in_name, other in ins + outs[k + 1 :]:
            source = other.resolve()
            if target == source:
                how = "is"
            elif source.is_relative_to(target):
                how = "holds"
            elif target.is_relative_to(source):
                how = "lies inside"
            else:
                continue
            if (in_name, other) in outs:
                advice = "keep the outputs separate from each other"
                kind = "the output"
            else:
                advice = "write outputs apart from the inputs (--overwrite would replace them)"
                kind = "the input"
            raise InputError(f"{out_name} {how} {kind} {other} ({in_name}); {advice}", out)
