"""Typed errors for problems with the user's input.

Anything derived from :class:`InputError` is the user's to fix (a corrupt image,
a malformed dataset, a missing checkpoint). The CLI prints it as one line and
exits with code 2; it never shows a traceback for these. Every other exception
is a bug in micrometry and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """A problem with user input, optionally tied to one file.

    Parameters
    ----------
    message : str
        What is wrong, phrased for the user.
    path : str or Path, optional
        The file or folder at fault; it leads the one-line message.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.message = message
        self.path = None if path is None else Path(path)
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path is not None else self.message


class ImageReadError(InputError):
    """An image file that cannot be read (missing, corrupt, truncated, unsupported)."""


class DatasetError(InputError):
    """A dataset folder or annotation file that breaks its layout."""


class CheckpointError(InputError):
    """A model checkpoint or run folder that cannot be used."""


class OutputExistsError(InputError):
    """An output path that already exists and would be overwritten."""


def show_warning(message, category=UserWarning, filename=None, lineno=None, file=None, line=None) -> None:
    """Print a warning as one line ``warning: ...`` on stderr, the format of errors (no source line).

    Matches :func:`warnings.showwarning`, which the CLI replaces with it.
    """
    import typer

    text = " ".join(str(message).split())
    typer.secho(f"warning: {text}", fg=typer.colors.YELLOW, err=True)
