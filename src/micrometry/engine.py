"""Where batch prediction runs: in this process, or on a Ray cluster.

A prediction command describes its work as a list of *items* (one per image:
path, output name, ...) and a *worker* class that holds the model; items and
outputs are dataclasses with JSON-able fields (a Ray actor gets and returns
them as JSON)::

    class Worker:
        item_type = SegmentItem                 # the dataclass of one item
        output_type = ImageSegmentation         # the dataclass of one output
        def __init__(self, **kwargs): ...       # load the model once
        def __call__(self, items: list[SegmentItem]) -> list[ImageSegmentation]: ...

An engine runs the worker over the items in batches and yields ``(index,
output)`` pairs; the command assembles the outputs. Both engines run the same
worker code, so they write the same files.

- :class:`LocalEngine` builds one worker in this process.
- :class:`RayEngine` uses Ray Data: ``ray.data.from_items(batches)
  .map_batches(Worker, compute=ActorPoolStrategy(size=N))``, a pool of N
  actors, each holding a model, each row one batch of B items (the batches
  the local engine would make); ``ray.init(address=...)`` joins an
  existing cluster, and without an address a local Ray instance is started.
  On a cluster the inputs and the output folder must be on storage every node
  sees under the same path (NFS, a mounted bucket). Ray is optional:
  ``pip install 'micrometry[scale]'``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import typer

from micrometry import errors
from micrometry.errors import InputError
from micrometry.options import number

ENGINES = ("local", "ray")

# The same three options on every prediction command (typer reads these markers as defaults).
ENGINE_OPTION = typer.Option(
    "local", "--engine", help="Where to run: local (this process) or ray (a Ray actor pool)."
)
RAY_WORKERS_OPTION = number(2, "--ray-workers", low=1, help="--engine ray: actors, each holding the model.")
RAY_ADDRESS_OPTION = typer.Option(
    None,
    "--ray-address",
    help="--engine ray: cluster to join (e.g. auto, HOST:6379, "
    "ray://HOST:10001); default: a local Ray instance.",
)


class LocalEngine:
    """Run the worker in this process, one batch after the other."""

    name = "local"

    def __init__(self, batch_size: int = 4):
        self.batch_size = batch_size

    def map(
        self, worker_cls: type, worker_kwargs: dict[str, Any], items: list[Any]
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(position in items, output)`` in input order."""
        worker = worker_cls(**worker_kwargs)
        for start in range(0, len(items), self.batch_size):
            outputs = worker(items[start : start + self.batch_size])
            yield from enumerate(outputs, start=start)


class RayEngine:
    """Run an actor pool of workers with Ray Data.

    Parameters
    ----------
    batch_size : int
        Items per worker call.
    workers : int
        Actors in the pool (each holds one copy of the model).
    address : str, optional
        A running cluster to join (``ray://host:10001``, ``host:6379`` or
        ``auto``); None starts a local Ray instance for the duration of the run.
        An already initialised Ray (``ray.init`` by the caller) is used as it is.
    cpus_per_worker, gpus_per_worker : float
        Resources each actor reserves (its torch thread count follows the CPUs).

    Raises
    ------
    InputError
        Ray is not installed.
    """

    name = "ray"

    def __init__(
        self,
        batch_size: int = 4,
        workers: int = 2,
        address: str | None = None,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
    ):
        require_ray()
        self.batch_size, self.workers, self.address = batch_size, workers, address
        self.cpus_per_worker, self.gpus_per_worker = cpus_per_worker, gpus_per_worker

    def map(
        self, worker_cls: type, worker_kwargs: dict[str, Any], items: list[Any]
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(position in items, output)`` as the actors finish them (any order)."""
        import ray

        # One row per batch, cut as LocalEngine cuts them: every model call sees the same
        # images as in a local run, so even batch-dependent numerics give the same files.
        starts = range(0, len(items), self.batch_size)
        rows = [
            {
                "start": start,
                "items": json.dumps([dataclasses.asdict(i) for i in items[start : start + self.batch_size]]),
            }
            for start in starts
        ]
        with self._connected():
            outputs = ray.data.from_items(rows).map_batches(
                _RayWorker,
                fn_constructor_kwargs={
                    "worker_cls": worker_cls,
                    "worker_kwargs": worker_kwargs,
                    "threads": max(1, int(self.cpus_per_worker)),
                },
                batch_size=1,
                batch_format="numpy",
                # no more actors than batches: an idle actor costs a model load (and Ray warns)
                compute=ray.data.ActorPoolStrategy(size=max(1, min(self.workers, len(rows)))),
                num_cpus=self.cpus_per_worker,
                num_gpus=self.gpus_per_worker or None,
            )
            for row in outputs.iter_rows():
                for offset, output in enumerate(json.loads(row["outputs"])):
                    _raise_worker_error(output)
                    for message in output.pop("__warnings__", []):
                        warnings.warn(message)
                    yield int(row["start"]) + offset, worker_cls.output_type(**output)

    @contextlib.contextmanager
    def _connected(self) -> Iterator[None]:
        import ray
        from ray.data import DataContext

        # our own progress bar and one-line errors; Ray's bars and logs would bury them
        DataContext.get_current().enable_progress_bars = False
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # Ray's C++ core logs straight to stderr (core_worker.cc lines); only fatal ones are for the user
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        # Ray's own warnings are about its tuning, not the user's data
        warnings.filterwarnings("ignore", category=UserWarning, module=r"ray(\.|$)")
        if ray.is_initialized():
            yield
            return
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,
            "configure_logging": False,
        }
        with _native_stderr_muted():  # the C++ core announces its log level on stderr as it starts
            if self.address:
                ray.init(address=self.address, **options)
            else:
                cpus = max(self.workers * self.cpus_per_worker, os.cpu_count() or 1)
                ray.init(num_cpus=int(cpus + 0.999), **options)
        try:
            yield
        finally:
            ray.shutdown()


@contextlib.contextmanager
def _native_stderr_muted() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for a moment (native libraries' lines; Python errors still raise)."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (some embedding hosts): nothing to mute
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _RayWorker:
    """The actor Ray Data creates: adapts a worker to Ray's column batches and keeps errors typed."""

    def __init__(self, worker_cls: type, worker_kwargs: dict[str, Any], threads: int):
        import torch

        torch.set_num_threads(threads)
        os.environ.setdefault("MICROMETRY_QUIET", "1")
        self.worker = worker_cls(**worker_kwargs)
        self.item_type = worker_cls.item_type

    def __call__(self, rows: dict[str, Any]) -> dict[str, Any]:
        """Ray's column batch of rows, each one batch of items -> the outputs of each."""
        return {
            "start": rows["start"],
            "outputs": [json.dumps(self._run(json.loads(r))) for r in rows["items"]],
        }

    def _run(self, items: list[dict]) -> list[dict]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                outputs = [dataclasses.asdict(o) for o in self.worker([self.item_type(**i) for i in items])]
            except InputError as exc:  # the user's fault: travels back as data, raised again by the driver
                error = {
                    "__error__": [
                        type(exc).__name__,
                        exc.message,
                        None if exc.path is None else str(exc.path),
                    ]
                }
                outputs = [error] * len(items)
        if outputs and caught:
            outputs[0] = {**outputs[0], "__warnings__": [str(w.message) for w in caught]}
        return outputs


def _raise_worker_error(output: dict) -> None:
    if "__error__" in output:
        kind, message, path = output["__error__"]
        error_cls = getattr(errors, kind, InputError)
        if not (isinstance(error_cls, type) and issubclass(error_cls, InputError)):
            error_cls = InputError
        raise error_cls(message, path)


def require_ray():
    """Import Ray, or raise a one-line :class:`InputError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError(
            "--engine ray needs Ray, which is not installed: pip install 'micrometry[scale]' (or 'ray[data]')"
        ) from None
    return ray


def make_engine(name: str, batch_size: int, workers: int = 2, address: str | None = None):
    """The engine a command's ``--engine`` option names."""
    if name == "local":
        if address is not None:
            raise InputError("--ray-address needs --engine ray")
        return LocalEngine(batch_size)
    if name == "ray":
        return RayEngine(batch_size, workers=workers, address=address)
    raise InputError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
