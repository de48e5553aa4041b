"""``micrometry particles train``: a dense model as a :class:`~micrometry.train.TrainTask`.

The shared :func:`~micrometry.train.fit` loop does the epochs, progress bar,
checkpoints, metrics, resume and time budget; this module supplies the data,
the optimisation step and the validation (segm AP of the held-out images,
measured by the project's evaluator).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from micrometry.config import Config, param
from micrometry.errors import CheckpointError, InputError
from micrometry.particles.models.base import DEFAULT_MODEL, PARTICLE_MODELS, trainable_names
from micrometry.particles.models.conventions import border_convention, drop_border_instances, one_polarity
from micrometry.particles.models.data import (
    MIN_IMAGES_TO_HOLD_OUT,
    LabelledImage,
    load_labelled_images,
    split_train_val,
)
from micrometry.particles.models.sizing import MAX_SCALE, MIN_SCALE, NET_DIAMETER, check_scale
from micrometry.particles.models.validation import evaluate_label_images, truth_dataset
from micrometry.train import LoopConfig, RunDir, TrainTask, fit, seed_everything
from micrometry.train.loop import configure_threads
from micrometry.train.precision import PRECISIONS


@dataclass
class TrainSettings(Config):
    """Everything that defines a training run (stored as the run's ``config.json``).

    Every field is checked against its type and range on construction (a
    one-line :class:`~micrometry.errors.InputError`). The defaults train the
    shipped model in about a quarter of an hour on two CPU cores for 30 images
    of 1024x1280.
    """

    model: str = param(DEFAULT_MODEL)
    #: an upper bound: on a CPU the default 15-minute budget ends training first (docs/particles-models.md)
    epochs: int = param(100, ge=1)
    steps_per_epoch: int = param(40, ge=1)
    batch_size: int = param(4, ge=1)
    crop: int = param(192, ge=32)
    #: network pixels per image pixel; None: automatic (each image resized so that its
    #: median particle measures ``net_diameter`` network pixels, see ``sizing``)
    scale: float | None = param(None, ge=MIN_SCALE, le=MAX_SCALE)
    net_diameter: float = param(NET_DIAMETER, gt=0)
    lr: float = param(3e-3, ge=0)
    weight_decay: float = param(1e-4, ge=0)
    widths: list[int] = param([16, 32, 64, 128])
    val_fraction: float = param(0.1, ge=0, lt=1)
    seed: int = param(0, ge=0)
    time_budget_s: float | None = param(15 * 60.0, ge=0)
    #: intensity augmentation: probability of inverting a crop, range of its random gamma
    invert_p: float = param(0.5, ge=0, le=1)
    gamma_range: list[float] = param([0.6, 1.6])
    #: fine-tuning: the model the weights start from (``shipped``, a run or a model folder)
    init: str | None = param(None)
    #: fraction of training spent warming the learning rate up (fine-tuning uses 5 %)
    warmup: float = param(0.0, ge=0, lt=1)
    device: str = param("auto")
    #: the convolutions' arithmetic: auto (bfloat16 on a CPU with AMX, else float32), fp32, bf16
    precision: str = param("auto", choices=PRECISIONS)
    #: processes drawing training crops (0: in the training process; a GPU needs several)
    workers: int = param(0, ge=0, le=256)
    #: leave out particles touching the image border, as the annotations do; None: read from
    #: the annotations when training starts (:func:`~.conventions.border_convention`)
    exclude_border: bool | None = param(None)


class ParticleTrainTask(TrainTask):
    """What every particle model's training shares: settings, data and validation.

    Subclasses (one per model family, returned by its registered
    :class:`~micrometry.particles.models.base.ParticleModel`'s ``build_task``)
    build ``modules``/``optimizers``/``schedulers``, implement
    :meth:`train_batches`, :meth:`train_step` and :meth:`segmenter`.
    """

    def __init__(self, settings: TrainSettings, train: list[LabelledImage], val: list[LabelledImage]):
        seed_everything(settings.seed)
        self.settings = settings
        self.train_items, self.val_items = train, val
        truths = [item.truth for item in val]
        if getattr(settings, "exclude_border", None):  # scored as predicted: without border particles
            truths = [drop_border_instances(truth)[0] for truth in truths]
        self.val_truth = truth_dataset(truths)
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
        """Linear warm-up over ``settings.warmup``, then cosine decay from ``base_lr`` to 2 % of it.

        A warm-up keeps the first steps of a fine-tuning run from knocking the
        pretrained weights off (Adam's first moments are still noise).
        """
        progress, warmup = self.progress(), getattr(self.settings, "warmup", 0.0)
        lr = self.base_lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress)))
        if warmup > 0 and progress < warmup:
            lr *= max(progress / warmup, 0.02)
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr

    def extra_state(self) -> dict[str, Any]:
        return {"steps_done": self.steps_done, "train_seconds": self.train_seconds}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.steps_done = state.get("steps_done", 0)
        self.train_seconds = state.get("train_seconds", 0.0)

    def load_initial_weights(self, state: dict[str, Any]) -> None:
        """Start from an exported model's ``state`` (``--init``)."""
        raise InputError(f"particle model {self.settings.model!r} cannot be fine-tuned (--init)")

    def payload(self) -> dict[str, Any]:
        """Stored in every checkpoint: enough to rebuild the segmenter."""
        raise NotImplementedError

    def segmenter(self):
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """segm AP, AP50 and F1@0.5 of the validation images at full resolution."""
        segmenter = self.segmenter()
        # each image at its own training scale: validation measures the network, not the size estimate
        predicted = [
            segmenter.segment_labels(item.full_image, scale=item.scale)
            if self.settings.scale is None
            else segmenter.segment_labels(item.full_image)
            for item in self.val_items
        ]
        metrics = evaluate_label_images(predicted, self.val_truth)
        return {"val_ap": metrics["AP"], "val_ap50": metrics["AP50"], "val_f1": metrics["F1@0.5"]}


def train_model(
    coco_dir: str | Path,
    out: str | Path,
    settings: TrainSettings,
    resume: bool = False,
    overwrite: bool = False,
    threads: int | None = None,
    model_given: bool = True,
    given: set[str] | None = None,
    images: str | Path | None = None,
    quantize: bool = True,
) -> dict[str, Any]:
    """Train ``settings.model`` on a training folder (any layout of
    :mod:`~micrometry.particles.training_data`; ``images``: its images folder
    where the layout does not say) into the run folder ``out``.

    With ``quantize`` (and ONNX Runtime installed) a dense model's run also gets
    its int8 network, calibrated on the training images
    (:mod:`~micrometry.particles.models.dense.quantized`): CPU prediction about 2x faster.

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
        raise InputError(
            f"unknown trainable particle model {settings.model!r}; choose one of: {', '.join(trainable)}"
        )
    entry = PARTICLE_MODELS.create(settings.model)
    entry.check_available()
    if settings.scale is not None:
        check_scale(settings.scale)
    RunDir.check_training(out, resume, overwrite)  # the rules both jobs share, before any work
    init_state = None
    if resume:
        run = RunDir.for_training(out, resume=True)
        run.check_same_data(coco_dir)
        previous = run.read_config()
        if model_given and previous.get("model") != settings.model:
            raise CheckpointError(
                f"run was trained with model {previous.get('model')!r}, not {settings.model!r}",
                run.config_path,
            )
        extendable = {"epochs", "time_budget_s"} & (
            given if given is not None else {"epochs", "time_budget_s"}
        )
        try:  # a run folder of another kind, or a config edited by hand
            settings = TrainSettings(
                **{**previous["settings"], **{k: getattr(settings, k) for k in extendable}}
            )
        except (KeyError, TypeError, InputError) as exc:
            raise CheckpointError(
                f"config.json holds no usable 'settings' ({type(exc).__name__}: {exc})", run.config_path
            ) from None
    elif settings.init is not None:
        from micrometry.particles.models.finetune import init_settings

        settings, init_state = init_settings(settings, model_given)
        entry = PARTICLE_MODELS.create(settings.model)
    configure_threads(threads)
    # Read the whole dataset before creating the run folder: a bad dataset leaves nothing behind.
    items = load_labelled_images(
        coco_dir,
        settings.scale,
        settings.net_diameter,
        per_image=getattr(entry, "auto_size", False),
        images=images,
    )
    if settings.scale is None and not getattr(entry, "auto_size", False):
        settings.scale = items[0].scale  # the dataset's median particle size set one scale
    # fine-tuning for one polarity need not teach the other (a mixed set, like the generalist's, keeps it)
    one_sided = (
        init_state is not None
        and settings.invert_p > 0
        and one_polarity([(item.image, item.labels) for item in items])
    )
    if one_sided:
        settings.invert_p = 0.0
    border = None
    if settings.exclude_border is None and getattr(entry, "method", None) is not None:  # a dense decoder
        border = border_convention([item.truth for item in items])
        settings.exclude_border = border.exclude
    train, val = split_train_val(items, settings.val_fraction, settings.seed)
    note = validation_split_note(items, train, val)
    if len(items) < MIN_IMAGES_TO_HOLD_OUT:
        warnings.warn(note)  # the console says how validation is done, not only log.txt
    if border is not None and border.exclude:
        warnings.warn(border.note())  # it changes what predict reports: say so
    if not resume:
        run = RunDir.for_training(out, overwrite=overwrite)
    task = entry.build_task(settings, train, val)
    if init_state is not None:
        task.load_initial_weights(init_state)
    scales = sorted(item.scale for item in items)
    run.write_config(
        {
            "model": settings.model,
            "data": str(Path(coco_dir).resolve()),
            "n_train": len(train),
            "n_val": len(val),
            "validation": note,
            "scales": {"min": scales[0], "median": scales[len(scales) // 2], "max": scales[-1]},
            "settings": settings.to_dict(),
            # what ``precision: auto`` became on this machine (detectors have no such setting)
            "precision": getattr(task, "precision", None),
        }
    )
    run.log(note)
    if border is not None:
        run.log(border.note())
    if one_sided:
        run.log("every image has its particles on the same side of the background: no inverted crops")
    if settings.init is not None:
        run.log(f"fine-tuning from {settings.init}")
    payload = task.payload()
    loop = LoopConfig(
        epochs=settings.epochs,
        seed=settings.seed,
        time_budget_s=settings.time_budget_s,
        monitor="val_ap",
        mode="max",
        description=f"train {settings.model}",
    )
    try:
        metrics = fit(task, run, loop, resume=resume, extra_payload=payload)
        if quantize and run.writes and getattr(entry, "method", None) is not None:
            quantize_run(run, [item.full_image for item in items])
        return metrics
    finally:
        run.close()


def quantize_run(run: RunDir, images: list) -> None:
    """Give a finished run its int8 network; a failure costs only the speed-up (said, not raised)."""
    from micrometry.particles.models.dense.quantize_model import quantize_model
    from micrometry.particles.models.dense.quantized import runtime_available

    if not runtime_available():
        run.log("no int8 network: ONNX Runtime is not installed")
        return
    try:
        path = quantize_model(run.path, images)
    except Exception as exc:  # noqa: BLE001 (ONNX export or quantization: the float model stands)
        warnings.warn(
            f"{run.path}: int8 network not made ({type(exc).__name__}: {exc}); predicting in float32"
        )
        return
    run.log(f"int8 network for CPU prediction -> {path.name}")


def validation_split_note(
    items: list[LabelledImage], train: list[LabelledImage], val: list[LabelledImage]
) -> str:
    """One line saying what the validation metrics measure."""
    if train is val and len(items) < MIN_IMAGES_TO_HOLD_OUT:
        return (
            f"only {len(items)} image(s), fewer than {MIN_IMAGES_TO_HOLD_OUT}: every annotated pixel is "
            "trained on, and validation measures the fit on those same images (not how the model "
            "does on others)"
        )
    if train is val:
        return "validation on the training images (none held out)"
    return f"{len(train)} training / {len(val)} validation images"
