"""What every particle model is: one :class:`ParticleModel` entry per model, in :data:`PARTICLE_MODELS`.

An entry says how the model trains (:meth:`ParticleModel.build_task`), what of a
training checkpoint is the model (:meth:`ParticleModel.export_checkpoint`) and
how an exported model becomes a segmenter (:meth:`ParticleModel.segmenter`);
the same contract the depth job has in
:class:`~micrometry.depth.methods.base.DepthMethod`. ``particles train``,
``particles predict`` and ``micrometry export`` dispatch through it, so a new
model is one new module in this package (or a sub-package) that registers one
entry; the registry imports every module of the package on its first look-up::

    @PARTICLE_MODELS.register("my-model")
    class MyModel(ParticleModel):
        name = "my-model"
        settings_keys = ("scale",)
        modules = ("net",)
        def build_task(self, settings, train, val): ...
        def segmenter(self, exported, scale=None): ...

:func:`load_particle_model` is the one loader: ``--model`` accepts a registered
name, ``shipped`` (the exported model in the package's
``assets/models/particles-default``), a training run folder or an exported
model folder (``micrometry export``).
"""

from __future__ import annotations

import inspect
import json
from importlib import resources
from pathlib import Path
from typing import Any

from micrometry.errors import CheckpointError, InputError
from micrometry.modelfile import ExportedModel, is_model_folder, provenance, read_model, refuse_other_job
from micrometry.registry import Registry

PARTICLE_MODELS = Registry("particle model", package="micrometry.particles.models")

#: The model ``particles train`` trains when none is named (the shipped model is one of these).
DEFAULT_MODEL = "center-offset"
#: What ``--model shipped`` (and no ``--model``) means: this exported folder in the package.
SHIPPED = "shipped"
SHIPPED_DIR = ("assets", "models", "particles-default")
#: An exported model's setting: predict with the four flips unless told otherwise (see
#: :func:`few_image_finetune`); a prediction default, not something the weights need.
DEFAULT_TTA = "default_tta"


class ParticleModel:
    """One particle model: training task, export and segmenter.

    Attributes
    ----------
    name : str
    learned : bool
        Needs trained weights (False: a classical method, ``segmenter(None)`` works).
    trainable : bool
        ``particles train --model NAME`` trains it.
    settings_keys : tuple of str
        Checkpoint payload entries (see the task's ``payload()``) that inference needs.
    modules : tuple of str
        The task's networks that make up the model (their weights are exported).
    """

    name = "particle-model"
    learned = True
    trainable = True
    settings_keys: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()

    def check_available(self) -> None:
        """Raise a one-line :class:`InputError` when this installation cannot run the model."""

    def build_task(self, settings, train, val):
        """A :class:`~micrometry.particles.models.training.ParticleTrainTask` for these data."""
        raise InputError(f"particle model {self.name!r} is not trainable")

    def export_checkpoint(self, payload: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """(settings, state) of the model in a training checkpoint's ``payload`` (read from ``path``)."""
        if payload.get("model") != self.name:
            raise CheckpointError(f"checkpoint holds model {payload.get('model')!r}, not {self.name!r}", path)
        try:
            settings = {k: payload[k] for k in self.settings_keys}
            state = {"modules": {k: payload["state"]["modules"][k] for k in self.modules}}
        except (KeyError, TypeError):
            raise CheckpointError("not a particle model checkpoint", path) from None
        return settings, state

    def preprocessing(self, settings: dict[str, Any]) -> dict[str, Any]:
        from micrometry.particles.models.preprocess import DESCRIPTION

        return {**DESCRIPTION, "scale": settings.get("scale")}

    def segmenter(self, exported: ExportedModel | None, **options):
        """A ready segmenter from an exported model (None: only for models that are not ``learned``)."""
        raise NotImplementedError


def trainable_names() -> list[str]:
    """The registered models ``particles train`` can train."""
    return [name for name in PARTICLE_MODELS.list() if PARTICLE_MODELS.create(name).trainable]


def shipped_model_dir() -> Path:
    """The exported model that ships with the package (``--model shipped``)."""
    path = Path(str(resources.files("micrometry").joinpath(*SHIPPED_DIR)))
    if not is_model_folder(path):
        raise CheckpointError("the shipped particle model is missing from this installation", path)
    return path


def shipped_model_name() -> str:
    """The registered name of the shipped model (read from its ``model.json``)."""
    return json.loads((shipped_model_dir() / "model.json").read_text(encoding="utf-8"))["model"]


def export_run(run_dir: str | Path) -> ExportedModel:
    """A particle training run's best checkpoint as an exported model (in memory).

    Raises
    ------
    CheckpointError
        Not a particle run, an unknown model, a missing, corrupt or hostile checkpoint.
    """
    from micrometry.train.run import RunDir, load_checkpoint

    run = RunDir.existing(run_dir)
    config = run.read_config()
    entry = _run_entry(run, config)
    if not entry.learned:
        raise CheckpointError(f"model {entry.name!r} has no weights to export", run.path)
    path = run.best_checkpoint()
    settings, state = entry.export_checkpoint(load_checkpoint(path, map_location="cpu"), path)
    if few_image_finetune(config):
        settings = {**settings, DEFAULT_TTA: True}
    return ExportedModel(
        job="particles",
        model=entry.name,
        settings=settings,
        state=state,
        preprocessing=entry.preprocessing(settings),
        provenance=provenance(run.path, run.read_metrics()),
        source=run.path,
    )


def few_image_finetune(config: dict) -> int | None:
    """The number of training images of a run fine-tuned (``--init``) on too few to hold any out; else None.

    Such a model predicts with flip TTA by default: trained on so few images, its counts depend
    on the training seed, and averaging the four flips steadies them (docs/your-own-images.md).
    """
    from micrometry.particles.models.data import MIN_IMAGES_TO_HOLD_OUT

    n_train = config.get("n_train")
    settings = config.get("settings")
    init = settings.get("init") if isinstance(settings, dict) else None
    few = init and isinstance(n_train, int) and n_train < MIN_IMAGES_TO_HOLD_OUT
    return n_train if few else None


def _run_entry(run, config: dict) -> ParticleModel:
    """The registered model a run's ``config`` names."""
    model = config.get("model")
    if not isinstance(model, str):
        refuse_other_job(run.path, "particles")
        raise CheckpointError("config.json names no 'model'", run.config_path)
    if model not in PARTICLE_MODELS:
        raise CheckpointError(f"run was trained with unknown model {model!r}", run.config_path)
    return PARTICLE_MODELS.create(model)


def read_particle_model(path: str | Path) -> ExportedModel:
    """An exported particle model folder, checked against the registry."""
    exported = read_model(path, job="particles")
    if exported.model not in PARTICLE_MODELS:
        raise CheckpointError(f"unknown particle model {exported.model!r}", Path(path) / "model.json")
    return exported


def _segmenter(entry: ParticleModel, exported: ExportedModel | None, options: dict[str, Any]):
    """``entry.segmenter`` that refuses inference options it does not name (a user error)."""
    params = inspect.signature(entry.segmenter).parameters
    unknown = [k for k in options if k not in params or params[k].kind is inspect.Parameter.VAR_KEYWORD]
    if unknown:
        raise InputError(f"model {entry.name!r} does not take option(s): {', '.join(unknown)}")
    entry.check_available()
    if exported is not None:
        check_exported_settings(exported)
    return entry.segmenter(exported, **options)


def check_exported_settings(exported: ExportedModel) -> None:
    """Refuse a model whose stored settings no model could use (a damaged or edited model.json).

    Raises
    ------
    CheckpointError
        ``scale`` not a number in the allowed range, or ``settings`` not a mapping.
    """
    from micrometry.particles.models.sizing import MAX_SCALE, MIN_SCALE

    where = exported.source
    settings = exported.settings
    if not isinstance(settings, dict):
        raise CheckpointError("model settings must be a JSON object", where)
    scale = settings.get("scale")
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, (int, float)) or not MIN_SCALE <= scale <= MAX_SCALE
    ):
        raise CheckpointError(
            f"model settings: scale must be a number in {MIN_SCALE}..{MAX_SCALE:g}, got {json.dumps(scale)[:40]}",
            where,
        )


def load_particle_model(
    name_or_path: str | Path | None = None,
    tta: bool | None = None,
    tta_scales: str | list[float] | None = None,
    ensemble: str | list[str] | None = None,
    **options,
):
    """A ready segmenter from a name, ``shipped``, a run folder, an exported model folder, or None.

    Parameters
    ----------
    name_or_path : str, Path or None
        ``None`` or ``"shipped"``: the shipped model; a registered name
        (``"watershed"``; a learned model's name means its shipped weights,
        if it has some); a run folder written by ``micrometry particles
        train`` (exported in memory); a folder written by ``micrometry
        export``. One model: a comma is part of the name.
    ensemble : str or list of str, optional
        Instead of ``name_or_path``: several models fused by weighted mask
        fusion (:mod:`micrometry.particles.ensemble`), each one of the
        above, optionally with ``:WEIGHT``; as a list or as
        ``--ensemble``'s comma-separated text (``"RUN_A:2,RUN_B"``).
    tta, tta_scales : bool, str or list of float
        Test-time augmentation for any model (:mod:`micrometry.particles.tta`):
        the four flips, and/or the image rescaled by each factor (``"0.8,1,1.25"``).
        ``tta=None``: the model's own default (flips for a model fine-tuned on
        1-4 images, :func:`few_image_finetune`; none otherwise).
    **options
        Inference options the model's segmenter takes (``scale``, ``tile``).

    Raises
    ------
    InputError
        An unknown name (the message lists the known ones) or option.
    CheckpointError
        A folder that is not a usable run or particle model.
    """
    from micrometry.particles.tta import TTASegmenter, tta_plan

    def augmented(segmenter, exported: ExportedModel | None):
        flips = tta if tta is not None else bool(exported and exported.settings.get(DEFAULT_TTA) is True)
        plan = tta_plan(flips, tta_scales)
        return segmenter if plan is None else TTASegmenter(segmenter, plan)

    if ensemble is not None:
        from micrometry.particles.ensemble import EnsembleSegmenter, parse_members

        if name_or_path is not None:
            raise InputError("give either a model or an ensemble of models, not both")
        members = parse_members(ensemble)
        segmenters = [augmented(*_load_one(member, options)) for member, _ in members]
        return EnsembleSegmenter(segmenters, [w for _, w in members], [m for m, _ in members])
    return augmented(*_load_one(name_or_path, options))


def _load_one(name_or_path: str | Path | None, options: dict[str, Any]):
    """One model's segmenter and its exported model (None for a model without weights)."""
    name = SHIPPED if name_or_path is None else str(name_or_path)
    if name == SHIPPED:
        exported = read_particle_model(shipped_model_dir())
        return _segmenter(PARTICLE_MODELS.create(exported.model), exported, options), exported
    if name in PARTICLE_MODELS:
        entry = PARTICLE_MODELS.create(name)
        if not entry.learned:
            return _segmenter(entry, None, options), None
        entry.check_available()
        if name != shipped_model_name():
            raise CheckpointError(
                f"model {name!r} has no shipped weights: train a run with "
                f"'micrometry particles train COCO_DIR --model {name} --out RUN' "
                f"and pass --model RUN"
            )
        exported = read_particle_model(shipped_model_dir())
        return _segmenter(entry, exported, options), exported
    path = Path(name_or_path)
    if not path.exists():
        raise InputError(
            f"unknown particle model {name!r}; choose one of: "
            f"{', '.join([SHIPPED, *PARTICLE_MODELS.list()])}, a run folder or an exported model folder"
        )
    if is_model_folder(path):
        exported = read_particle_model(path)
        return _segmenter(PARTICLE_MODELS.create(exported.model), exported, options), exported
    from micrometry.train.run import RunDir

    run = RunDir.existing(path)
    entry = _run_entry(run, run.read_config())
    if not entry.learned:
        return _segmenter(entry, None, options), None
    entry.check_available()
    exported = export_run(path)
    return _segmenter(entry, exported, options), exported
