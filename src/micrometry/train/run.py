"""Run folders: everything needed to reproduce, resume and reuse a training run.

::

    RUN/
      config.json          what was asked for (method, data, hyper-parameters, seed)
      metrics.json         per-epoch history and the final/best metrics
      log.txt              human-readable log
      checkpoints/last.pt  latest state (weights, optimisers, RNG, epoch): --resume starts here
      checkpoints/best.pt  the state with the best validation metric: predict uses it

In data-parallel training (``torchrun ... --ddp``) every process opens the run
folder but only rank 0 writes it: the other ranks' writes and log lines are
dropped, and they leave the checks against clobbering an earlier run to rank 0.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from micrometry.errors import CheckpointError, OutputExistsError
from micrometry.io.atomic import atomic_path, refuse_existing, write_json
from micrometry.train.distributed import is_main_process

CHECKPOINT_FORMAT = "micrometry-checkpoint"


class RunDir:
    """A training run's folder.

    Parameters
    ----------
    path : str or Path
        The folder; created if missing.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "checkpoints").mkdir(exist_ok=True)
        self._logger: logging.Logger | None = None
        self.writes = is_main_process()

    # -- creation rules -------------------------------------------------
    @staticmethod
    def check_training(path: str | Path, resume: bool = False, overwrite: bool = False) -> None:
        """The rules of ``--resume`` and ``--overwrite``, for every training command; creates nothing.

        A training command calls this before any work (so that a refusal costs
        nothing and leaves nothing behind), then :meth:`for_training` once its
        data has loaded.

        - ``resume``: continue ``path``'s run; it must have ``checkpoints/last.pt``
          (``overwrite`` is then ignored);
        - ``overwrite``: start afresh, deleting an earlier run's files;
        - neither: ``path`` must not hold a run (``config.json`` or ``last.pt``).

        Raises
        ------
        CheckpointError
            ``resume`` without a checkpoint to resume from.
        OutputExistsError
            An earlier run, and neither ``resume`` nor ``overwrite``.
        """
        path = Path(path)
        refuse_existing(path, overwrite=True, folder=True)  # a file in the way, or an unwritable place
        if resume and not (path / "checkpoints" / "last.pt").exists():
            raise CheckpointError("nothing to resume: no checkpoints/last.pt", path)
        if not is_main_process():  # rank 0 checks and clears the folder; racing it would break its run
            return
        has_run = (path / "config.json").exists() or (path / "checkpoints" / "last.pt").exists()
        if has_run and not (resume or overwrite):
            raise OutputExistsError(
                "holds an earlier run (pass --resume to continue it or --overwrite)", path
            )

    @classmethod
    def for_training(cls, path: str | Path, resume: bool = False, overwrite: bool = False) -> RunDir:
        """Open a run folder for training by the rules of :meth:`check_training`, clearing it for ``overwrite``."""
        path = Path(path)
        cls.check_training(path, resume, overwrite)
        if not is_main_process():
            return cls(path)
        if overwrite and not resume:
            for name in ("config.json", "metrics.json", "log.txt"):
                (path / name).unlink(missing_ok=True)
            for ckpt in (path / "checkpoints").glob("*.pt"):
                ckpt.unlink()
        return cls(path)

    def check_same_data(self, data: str | Path) -> None:
        """Refuse to resume this run on other data than it was trained on (``config.json``'s ``data``).

        Training on, it would mix two datasets while ``config.json`` and the
        metrics name the first. A config without ``data`` (written by hand) is
        not checked.

        Raises
        ------
        CheckpointError
            ``data`` is not the run's dataset.
        """
        recorded = self.read_config().get("data")
        if isinstance(recorded, str) and Path(recorded).resolve() != Path(data).resolve():
            raise CheckpointError(
                f"run was trained on {recorded}, not {Path(data).resolve()}; resume with its own data, "
                "or start a new run",
                self.path,
            )

    @classmethod
    def existing(cls, path: str | Path) -> RunDir:
        """Open a finished run folder for prediction."""
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError("no such run folder", path)
        if not (path / "config.json").is_file():
            raise CheckpointError("not a run folder (no config.json)", path)
        return cls(path)

    # -- files ------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def log_path(self) -> Path:
        return self.path / "log.txt"

    def checkpoint_path(self, name: str = "last") -> Path:
        return self.path / "checkpoints" / f"{name}.pt"

    def best_checkpoint(self) -> Path:
        """The checkpoint prediction should use: best, else last."""
        for name in ("best", "last"):
            path = self.checkpoint_path(name)
            if path.is_file():
                return path
        raise CheckpointError("run folder has no checkpoint (checkpoints/best.pt or last.pt)", self.path)

    def write_config(self, config: dict[str, Any]) -> None:
        if self.writes:
            write_json(self.config_path, config)

    def read_config(self) -> dict[str, Any]:
        try:
            config = json.loads(self.config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError("not a run folder (no config.json)", self.path) from None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise CheckpointError(f"config.json is not valid JSON ({exc})", self.config_path) from None
        if not isinstance(config, dict):
            raise CheckpointError("config.json does not hold an object", self.config_path)
        return config

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        if self.writes:
            write_json(self.metrics_path, metrics)

    def read_metrics(self) -> dict[str, Any]:
        if not self.metrics_path.is_file():
            return {}
        try:
            metrics = json.loads(self.metrics_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise CheckpointError(
                f"metrics.json is not valid JSON ({exc}); resuming with more --epochs rewrites "
                "it from checkpoints/last.pt",
                self.metrics_path,
            ) from None
        if not isinstance(metrics, dict):
            raise CheckpointError("metrics.json does not hold an object", self.metrics_path)
        return metrics

    def finished(self, epochs: int | None, time_budget_s: float | None) -> str | None:
        """Why a run being resumed has nothing left to do (all epochs, or its time budget), else None."""
        try:
            final = self.read_metrics().get("final") or {}
        except (OSError, ValueError):
            return None  # an unreadable metrics.json is for --resume itself to report
        done = final.get("epoch")
        if done is None:
            return None
        if epochs is not None and done >= epochs:
            return f"the run already finished all {epochs} epochs"
        if time_budget_s is not None and final.get("elapsed_s", 0) >= time_budget_s:
            return f"the run already used its time budget ({time_budget_s / 60:g} min) after {done} epochs"
        return None

    # -- logging ----------------------------------------------------------
    @property
    def logger(self) -> logging.Logger:
        if self._logger is None:
            logger = logging.getLogger(f"micrometry.run.{self.path.resolve()}")
            logger.setLevel(logging.INFO)
            logger.propagate = False
            handler = logging.FileHandler(self.log_path, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            logger.addHandler(handler)
            self._logger = logger
        return self._logger

    def log(self, message: str) -> None:
        if self.writes:
            self.logger.info(message)

    def close(self) -> None:
        if self._logger is not None:
            for handler in list(self._logger.handlers):
                handler.close()
                self._logger.removeHandler(handler)
            self._logger = None


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Save a checkpoint atomically (a killed run never leaves a truncated file).

    In data-parallel training only rank 0 writes (the other ranks hold the same state).
    """
    if not is_main_process():
        return
    payload = {"format": CHECKPOINT_FORMAT, "saved_at": time.time(), **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _checkpoint_globals() -> list:
    """The only non-tensor types a checkpoint may hold: numeric numpy arrays.

    (The RNG state of ``np.random.get_state``, and fitted extras such as a lookup
    bank's depth maps.) Object arrays stay refused: their dtype class is not listed.
    """
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    numeric = [
        np.bool_,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
        np.complex64,
        np.complex128,
    ]
    return [_reconstruct, np.ndarray, np.dtype, *{type(np.dtype(t)) for t in numeric}]


def _is_bare_pickle(path: Path) -> bool:
    """A pickle stream outside torch's zip container (PROTO opcode first): never what save_checkpoint writes."""
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", require: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, never running code from it.

    ``torch.load(weights_only=True)`` with an allow-list of the few numpy types
    the RNG state needs: a pickle that would import or call anything else is
    refused before it does.

    ``require`` names the entries the caller reads (``--resume`` needs the
    training state): a checkpoint without them is refused here, not met as a
    ``KeyError`` later.

    Raises
    ------
    CheckpointError
        Missing, truncated or corrupt file, a pickle asking for anything beyond
        tensors and plain data ("not a micrometry model"), or a file that is not
        a micrometry checkpoint.
    """
    import pickle
    import warnings

    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no such checkpoint", path)
    if _is_bare_pickle(path):  # never what save_checkpoint writes: refused without unpickling a byte
        raise CheckpointError("not a micrometry model", path)
    try:
        with torch.serialization.safe_globals(_checkpoint_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on odd pickles: the error below says it all
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses every global outside the allow-list (e.g. os.system): a hostile or
        # foreign pickle. Other garbage is an UnpicklingError too, worded otherwise by torch.
        if "GLOBAL" in str(exc):
            raise CheckpointError("not a micrometry model", path) from None
        raise CheckpointError(f"corrupt or unreadable checkpoint ({type(exc).__name__})", path) from None
    except Exception as exc:  # zip and torch errors all mean "unusable file"
        raise CheckpointError(f"corrupt or unreadable checkpoint ({type(exc).__name__})", path) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError("not a micrometry checkpoint", path)
    missing = [key for key in require if key not in payload]
    if missing:
        raise CheckpointError(
            f"checkpoint lacks {', '.join(missing)} (not written by this kind of training)", path
        )
    return payload
