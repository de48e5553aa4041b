"""Exported models: one folder format for both jobs, read without unpickling anything.

::

    MODEL/
      model.json          format, job, model name, preprocessing, inference settings,
                          fitted non-tensor extras and a short provenance
      weights.safetensors the model's tensors as one flat dict (no pickle)

``micrometry export RUN --out MODEL`` writes one from a training run; every
``--model`` option accepts it (or a run folder, which is exported in memory by
the same code). Each job says what goes in (:class:`ExportedModel`); this
module only writes and reads the files, so a hostile file can never run code:
safetensors holds raw tensors and ``model.json`` is plain JSON.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from micrometry.errors import CheckpointError, InputError
from micrometry.io.atomic import atomic_dir

FORMAT = "micrometry-model"
FORMAT_VERSION = 1
JOBS = ("depth", "particles")
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"
# Nesting levels of a state dict join with "/" in a safetensors key ("modules/net/enc.0.weight").
SEP = "/"
NOT_A_MODEL = "not a micrometry model"


@dataclass
class ExportedModel:
    """What a job puts into (and gets back from) an exported model.

    Attributes
    ----------
    job : str
        ``"depth"`` or ``"particles"``.
    model : str
        The registered model or method name.
    settings : dict
        JSON-able settings inference needs (hyper-parameters, scale...).
    state : dict
        Nested dict: tensors (weights, banks) and JSON-able fitted extras.
    preprocessing : dict
        What is done to an image before the network sees it (for people and other tools).
    provenance : dict
        Run path, metrics summary, date.
    source : Path or None
        Where it was read from (a model folder or a run folder).
    """

    job: str
    model: str
    settings: dict[str, Any]
    state: dict[str, Any]
    preprocessing: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None


def split_state(
    state: dict[str, Any], prefix: str = "", arrays: list[str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Nested state -> (flat tensors keyed by path, the same tree with only its non-tensor leaves).

    numpy arrays are stored as tensors too; their paths are appended to ``arrays``
    (so that :func:`join_state` gives them back as numpy arrays).
    """
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {}
    for key, value in state.items():
        key = str(key)
        if SEP in key:
            raise ValueError(f"state key {key!r} contains {SEP!r}")
        path = f"{prefix}{key}"
        if isinstance(value, np.ndarray):
            if arrays is None:
                raise ValueError(f"numpy array at {path!r}: pass arrays= to record it")
            arrays.append(path)
            value = torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, torch.Tensor):
            # own, contiguous storage: safetensors refuses shared or strided tensors
            tensors[path] = value.detach().cpu().contiguous().clone()
        elif isinstance(value, dict):
            sub_tensors, sub_rest = split_state(value, path + SEP, arrays)
            tensors.update(sub_tensors)
            if sub_rest or not sub_tensors:
                rest[key] = sub_rest
        else:
            json.dumps(value)  # fails loudly on a non-JSON leaf (a bug in the exporting job)
            rest[key] = value
    return tensors, rest


def join_state(
    tensors: dict[str, torch.Tensor], rest: dict[str, Any], arrays: list[str] = ()
) -> dict[str, Any]:
    """Inverse of :func:`split_state`."""
    state: dict[str, Any] = json.loads(json.dumps(rest))
    numpy_paths = set(arrays)
    for path, tensor in tensors.items():
        node = state
        *parents, leaf = path.split(SEP)
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = tensor.numpy() if path in numpy_paths else tensor
    return state


def is_model_folder(path: str | Path) -> bool:
    return (Path(path) / MODEL_JSON).is_file()


def micrometry_version() -> str:
    from micrometry import __version__

    return __version__


def provenance(run_path: str | Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """A short provenance: where the weights were trained and how well."""
    best = metrics.get("best", {}) if isinstance(metrics, dict) else {}
    summary = {k: v for k, v in best.items() if isinstance(v, (int, float, str))}
    return {
        "run": str(Path(run_path).resolve()),
        "best": summary,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_model(
    out: str | Path, model: ExportedModel, overwrite: bool = False, extra_files: tuple[Path, ...] = ()
) -> Path:
    """Write ``model`` as the folder ``out`` (whole or not at all); returns ``out``.

    ``extra_files`` are copied in beside the weights (a particle model's int8 network).
    """
    from safetensors.torch import save_file

    if model.job not in JOBS:
        raise ValueError(f"unknown job {model.job!r}")
    arrays: list[str] = []
    tensors, extras = split_state(model.state, arrays=arrays)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "job": model.job,
        "model": model.model,
        "micrometry_version": micrometry_version(),
        "preprocessing": model.preprocessing,
        "settings": model.settings,
        "extras": extras,
        "numpy_arrays": arrays,
        "provenance": model.provenance,
    }
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / MODEL_JSON).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        save_file(
            tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT, "job": model.job, "model": model.model}
        )
        for extra in extra_files:
            shutil.copyfile(extra, tmp / Path(extra).name)
        _honour_umask(tmp)
    return Path(out)


def _honour_umask(folder: Path) -> None:
    """Readable as the umask allows (the temporary folder and safetensors' file start private)."""
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~mask)


def read_model(path: str | Path, job: str | None = None) -> ExportedModel:
    """Read an exported model folder.

    Parameters
    ----------
    path : str or Path
        The folder (holding ``model.json`` and ``weights.safetensors``).
    job : str, optional
        Refuse a model of the other job.

    Raises
    ------
    CheckpointError
        Not a micrometry model (bad JSON, wrong format, unreadable weights), or a model of another job.
    """
    path = Path(path)
    try:
        document = json.loads((path / MODEL_JSON).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{NOT_A_MODEL} (no {MODEL_JSON})", path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(NOT_A_MODEL, path / MODEL_JSON) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(NOT_A_MODEL, path / MODEL_JSON)
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(
            f"{NOT_A_MODEL}: format_version must be a whole number >= 1, got {json.dumps(version)[:40]}",
            path / MODEL_JSON,
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"model format version {version} is newer than this "
            f"micrometry reads ({FORMAT_VERSION}); update micrometry",
            path / MODEL_JSON,
        )
    found_job, name = document.get("job"), document.get("model")
    if (
        found_job not in JOBS
        or not isinstance(name, str)
        or not isinstance(document.get("settings", {}), dict)
    ):
        raise CheckpointError(NOT_A_MODEL, path / MODEL_JSON)
    if job is not None and found_job != job:
        raise CheckpointError(f"is a {found_job} model, not a {job} model", path)
    tensors = read_weights(path / WEIGHTS)
    extras, arrays = document.get("extras", {}), document.get("numpy_arrays", [])
    try:
        if not isinstance(extras, dict) or not isinstance(arrays, list):
            raise TypeError
        state = join_state(tensors, extras, [str(a) for a in arrays])
    except (TypeError, AttributeError):  # a tensor path through a JSON leaf: the two files disagree
        raise CheckpointError(NOT_A_MODEL, path) from None
    return ExportedModel(
        job=found_job,
        model=name,
        settings=document.get("settings", {}),
        state=state,
        preprocessing=document.get("preprocessing", {}),
        provenance=document.get("provenance", {}),
        source=path,
    )


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; anything else (a pickle, garbage, truncation) is refused."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{NOT_A_MODEL} (no {WEIGHTS})", path.parent)
    try:
        return load_file(str(path), device="cpu")
    except Exception:  # SafetensorError, header/JSON errors: never a micrometry model
        raise CheckpointError(NOT_A_MODEL, path) from None


def run_job(path: str | Path) -> str:
    """Which job a run or exported model folder belongs to (``config.json``'s keys, or ``model.json``).

    Raises
    ------
    InputError
        Neither a run folder nor an exported model.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError("no such run or model folder", path)
    if is_model_folder(path):
        return read_model(path).job
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            "not a run folder (no config.json) nor an exported model (no model.json)", path
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError("config.json is not valid JSON", path / "config.json") from None
    if isinstance(config, dict) and isinstance(config.get("method"), str):
        return "depth"
    if isinstance(config, dict) and isinstance(config.get("model"), str):
        return "particles"
    raise InputError(
        "config.json names neither a depth 'method' nor a particle 'model'", path / "config.json"
    )


def refuse_other_job(path: str | Path, job: str) -> None:
    """One clear line when a run or model of the other job is passed as ``--model``."""
    found = run_job(path)
    if found != job:
        raise CheckpointError(f"is a {found} model, not a {job} model", path)
