"""The ``--ddp`` flag of training commands, without importing torch when the CLI starts."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def supports_ddp(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run a training command inside :func:`micrometry.train.distributed.session` (its ``ddp`` parameter).

    The command keeps its signature (typer reads the options from it)::

        @depth_app.command("train")
        @supports_ddp
        def depth_train(..., ddp: bool = typer.Option(False, "--ddp", help=...)): ...
    """

    @functools.wraps(command)
    def run_in_session(*args: Any, **kwargs: Any) -> Any:
        from micrometry.train.distributed import session

        with session(bool(kwargs.get("ddp", False))):
            return command(*args, **kwargs)

    return run_in_session
