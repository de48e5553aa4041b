"""What every particle segmenter is: image in, labelled instances with confidences out.

Built-in methods register a factory in :data:`SEGMENTERS` under a name
(``watershed``, and the learned models); trained models live in run folders
written by ``micrometry particles train``, whose ``config.json`` names the model.
:func:`load_segmenter` turns a name, a run folder or nothing (the default) into
a ready :class:`Segmenter`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from micrometry.errors import CheckpointError
from micrometry.registry import Registry

SEGMENTERS = Registry("particle model")

# Modules whose import registers built-in segmenters (the models engineer adds theirs here).
BUILTIN_MODULES = ["micrometry.particles.watershed", "micrometry.particles.models"]

# What ``--model`` means when it is not given: the learned model whose trained
# checkpoint ships with the package (micrometry/assets/particles_default.pt).
DEFAULT_MODEL = "center-offset"


@dataclass
class Instances:
    """Instance segmentation of one image.

    Attributes
    ----------
    labels : ndarray
        ``(H, W)`` int32; 0 is background, 1..N one id per particle (its
        visible part; particles do not overlap in a label image).
    scores : ndarray
        ``(N,)`` float32; ``scores[i]`` is the confidence of label id ``i + 1``.
    """

    labels: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int32)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        n = int(self.labels.max(initial=0))
        if self.scores.shape[0] != n:
            raise ValueError(f"{n} label ids but {self.scores.shape[0]} scores")

    @property
    def count(self) -> int:
        return int(self.scores.shape[0])


@runtime_checkable
class Segmenter(Protocol):
    """A particle segmenter: ``segment(gray image) -> Instances``."""

    name: str

    def segment(self, image: np.ndarray) -> Instances:
        """Segment one 2-D gray image (uint8 or uint16, as :func:`read_image` returns)."""
        ...

    def segment_batch(self, images: list[np.ndarray]) -> list[Instances]:
        """Segment several images (a model may batch them; classical methods loop)."""
        ...


class SegmenterBase:
    """Convenience base class: ``segment_batch`` loops over ``segment``."""

    name = "segmenter"

    def segment(self, image: np.ndarray) -> Instances:  # pragma: no cover - abstract
        raise NotImplementedError

    def segment_batch(self, images: list[np.ndarray]) -> list[Instances]:
        return [self.segment(image) for image in images]


def _create(model: str, options: dict, **fixed):
    """``SEGMENTERS.create`` that refuses inference options the factory does not name (a user error)."""
    import inspect

    params = inspect.signature(SEGMENTERS.get(model)).parameters
    unknown = [k for k in options if k not in params]
    if unknown:
        from micrometry.errors import InputError

        raise InputError(f"model {model!r} does not take option(s): {', '.join(unknown)}")
    return SEGMENTERS.create(model, **fixed, **options)


def _import_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def load_segmenter(name_or_run: str | Path | None = None, **options) -> Segmenter:
    """A ready segmenter from a built-in name, a training run folder, or the default.

    Parameters
    ----------
    name_or_run : str, Path or None
        A registered name (``"watershed"``, ...); or a run folder written by
        ``micrometry particles train`` (its ``config.json`` has ``"model":
        NAME`` and the factory is called with ``checkpoint=`` the run's best
        checkpoint); or None for :data:`DEFAULT_MODEL`.

    Raises
    ------
    InputError
        An unknown name (the message lists the known ones).
    CheckpointError
        A run folder without a usable config or checkpoint.
    """
    _import_builtins()
    if name_or_run is None:
        name_or_run = DEFAULT_MODEL
    if str(name_or_run) in SEGMENTERS:
        return _create(str(name_or_run), options)
    path = Path(name_or_run)
    if not path.exists():
        SEGMENTERS.get(str(name_or_run))  # raises the "unknown model; choose one of" error
    from micrometry.train.run import RunDir

    run = RunDir.existing(path)
    model = run.read_config().get("model")
    if not isinstance(model, str):
        raise CheckpointError("config.json names no 'model'", run.config_path)
    if model not in SEGMENTERS:
        raise CheckpointError(f"run was trained with unknown model {model!r}", run.config_path)
    return _create(model, options, checkpoint=run.best_checkpoint())
