"""``micrometry particles train``: a dense model as a :class:`~micrometry.train.TrainTask`.

The shared :func:`~micrometry.train.fit` loop does the epochs, progress bar,
checkpoints, metrics, resume and time budget; this module supplies the data,
the optimisation step and the validation (segm AP of the held-out images,
measured by the project's evaluator).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from micrometry.errors import CheckpointError, InputError
from micrometry.particles.models.base import DEFAULT_MODEL, particle_model, trainable_names
from micrometry.particles.models.data import LabelledImage, load_labelled_images, split_train_val
from micrometry.particles.models.validation import evaluate_label_images, truth_dataset
from micrometry.train import LoopConfig, RunDir, TrainTask, fit, seed_everything
from micrometry.train.loop import configure_threads


@dataclass
class TrainSettings:
    """Everything that defines a training run (stored as the run's ``config.json``).

    The defaults train the shipped model in about a quarter of an hour on two
    CPU cores for 30 images of 1024x1280.
    """

    model: str = DEFAULT_MODEL
    epochs: int = 30
    steps_per_epoch: int = 40
    batch_size: int = 4
    crop: int = 192
    scale: float = 0.5
    lr: float = 3e-3
    weight_decay: float = 1e-4
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    val_fraction: float = 0.1
    seed: int = 0
    time_budget_s: float | None = 15 * 60


class ParticleTrainTask(TrainTask):
    """What every particle model's training shares: settings, data and validation.

    Subclasses (one per model family, returned by its registered
    :class:`~micrometry.particles.models.base.ParticleModel`'s ``make_task``)
    build ``modules``/``optimizers``/``schedulers``, implement
    :meth:`train_batches`, :meth:`train_step` and :meth:`segmenter`.
    """

    def __init__(self, settings: TrainSettings, train: list[LabelledImage], val: list[LabelledImage]):
        seed_everything(settings.seed)
        self.settings = settings
        self.train_items, self.val_items = train, val
        self.val_truth = truth_dataset([item.truth for item in val])
        self.steps_done = 0
        self.train_seconds = 0.0
        self.base_lr = settings.lr

    def progress(self) -> float:
        """Fraction of training done: of the steps, or of the time budget if that runs out first.

        The budget counts the loop's time, validation included; steps take about
        85 % of it, so the schedule aims at 85 % of the budget and ends annealed
        rather than cut off at a high learning rate.
        """
        s = self.settings
        by_steps = self.steps_done / max(s.epochs * s.steps_per_epoch, 1)
        by_time = self.train_seconds / (0.85 * s.time_budget_s) if s.time_budget_s else 0.0
        return min(1.0, max(by_steps, by_time))

    def set_learning_rate(self) -> None:
        """Cosine decay from ``base_lr`` to 2 % of it over :meth:`progress`."""
        lr = self.base_lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * self.progress())))
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr

    def extra_state(self) -> dict[str, Any]:
        return {"steps_done": self.steps_done, "train_seconds": self.train_seconds}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.steps_done = state.get("steps_done", 0)
        self.train_seconds = state.get("train_seconds", 0.0)

    def payload(self) -> dict[str, Any]:
        """Stored in every checkpoint: enough to rebuild the segmenter."""
        raise NotImplementedError

    def segmenter(self):
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """segm AP, AP50 and F1@0.5 of the validation images at full resolution."""
        segmenter = self.segmenter()
        predicted = [segmenter.segment_labels(item.full_image) for item in self.val_items]
        metrics = evaluate_label_images(predicted, self.val_truth)
        return {"val_ap": metrics["AP"], "val_ap50": metrics["AP50"], "val_f1": metrics["F1@0.5"]}


def make_task(settings: TrainSettings, train: list[LabelledImage], val: list[LabelledImage]) -> ParticleTrainTask:
    """The registered model's training task."""
    return particle_model(settings.model).make_task(settings, train, val)


def train_model(coco_dir: str | Path, out: str | Path, settings: TrainSettings, resume: bool = False,
                overwrite: bool = False, threads: int | None = None, model_given: bool = True,
                given: set[str] | None = None) -> dict[str, Any]:
    """Train ``settings.model`` on a COCO folder into the run folder ``out``.

    Returns
    -------
    dict
        The run's metrics (``history``, ``best``, ``final``).

    Raises
    ------
    InputError
        Unknown model or bad settings; ``DatasetError`` for a bad dataset;
        ``CheckpointError`` when resuming a run of another model.

    With ``resume`` the run's own settings are used, except ``epochs`` and
    ``time_budget_s`` when they are in ``given`` (the fields the user set; None:
    both); ``model_given`` says whether ``settings.model`` was asked for
    explicitly (then it must match the run's).
    """
    trainable = trainable_names()
    if settings.model not in trainable:
        raise InputError(f"unknown trainable particle model {settings.model!r}; "
                         f"choose one of: {', '.join(trainable)}")
    particle_model(settings.model).check_available()
    if not 0.05 <= settings.scale <= 2.0:
        raise InputError(f"--scale must be between 0.05 and 2, not {settings.scale}")
    RunDir.check_training(out, resume, overwrite)  # the rules both jobs share, before any work
    if resume:
        run = RunDir.for_training(out, resume=True)
        previous = run.read_config()
        if model_given and previous.get("model") != settings.model:
            raise CheckpointError(f"run was trained with model {previous.get('model')!r}, "
                                  f"not {settings.model!r}", run.config_path)
        extendable = {"epochs", "time_budget_s"} & (given if given is not None else {"epochs", "time_budget_s"})
        settings = TrainSettings(**{**previous["settings"], **{k: getattr(settings, k) for k in extendable}})
    configure_threads(threads)
    # Read the whole dataset before creating the run folder: a bad dataset leaves nothing behind.
    items = load_labelled_images(coco_dir, settings.scale)
    train, val = split_train_val(items, settings.val_fraction, settings.seed)
    if not resume:
        run = RunDir.for_training(out, overwrite=overwrite)
    task = make_task(settings, train, val)
    run.write_config({"model": settings.model, "data": str(Path(coco_dir).resolve()),
                      "n_train": len(train), "n_val": len(val), "settings": asdict(settings)})
    run.log(validation_split_note(train, val))
    if train is val:  # the console must say it too: these validation figures flatter the model
        warnings.warn(validation_split_note(train, val), UserWarning, stacklevel=2)
    payload = task.payload()
    loop = LoopConfig(epochs=settings.epochs, seed=settings.seed, time_budget_s=settings.time_budget_s,
                      monitor="val_ap", mode="max", description=f"train {settings.model}")
    try:
        return fit(task, run, loop, resume=resume, extra_payload=payload)
    finally:
        run.close()


def validation_split_note(train: list[LabelledImage], val: list[LabelledImage]) -> str:
    """One log line saying what the validation metrics measure."""
    if train is val:
        return "validation on the training images (fewer than 5 images: none can be held out)"
    return f"{len(train)} training / {len(val)} validation images"
