"""Fine-tuning: a training run that starts from another model's weights (``--init``).

``--init shipped|RUN|MODEL`` names the model whose weights the network starts
from. The run keeps that model's architecture and size convention (its network
diameter, or its fixed scale), trains at a third of the from-scratch learning
rate after a 5 % warm-up. When every training image has its particles on the
same side of the background (all brighter, or all darker), no crop is inverted:
the model is tuned for the user's images and spends every step on their
polarity (gamma and contrast still vary); mixed polarities keep the inversion.
What the annotations say counts as a particle (:mod:`.conventions`) is read as
for any training run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from micrometry.errors import InputError
from micrometry.modelfile import ExportedModel, is_model_folder

#: Fine-tuning's learning rate, relative to training from scratch.
LR_FACTOR = 1.0 / 3.0
#: Fraction of a fine-tuning run spent warming the learning rate up.
WARMUP = 0.05


def resolve_init(init: str) -> ExportedModel:
    """The model ``--init`` names: ``shipped``, an exported model folder or a run folder.

    Raises
    ------
    InputError
        Neither of these.
    CheckpointError
        A folder that is not a usable particle model or run.
    """
    from micrometry.particles.models.base import (
        SHIPPED,
        export_run,
        read_particle_model,
        shipped_model_dir,
    )

    if init == SHIPPED:
        return read_particle_model(shipped_model_dir())
    path = Path(init)
    if not path.exists():
        raise InputError(f"--init {init!r}: not 'shipped', a run folder or an exported model folder")
    return read_particle_model(path) if is_model_folder(path) else export_run(path)


def init_settings(settings, model_given: bool) -> tuple[Any, dict[str, Any]]:
    """``settings`` adapted to fine-tune from ``settings.init``, and the initial weights.

    The architecture (model name, widths) and the size convention come from the
    initial model; an explicit ``--model`` must agree with it, an explicit
    ``--scale`` is kept.
    """
    exported = resolve_init(settings.init)
    if model_given and settings.model != exported.model:
        raise InputError(f"--init {settings.init!r} is a {exported.model!r} model, not {settings.model!r}")
    init_settings_ = exported.settings
    changes: dict[str, Any] = {
        "model": exported.model,
        "lr": settings.lr * LR_FACTOR,
        "warmup": WARMUP,
    }
    if "widths" in init_settings_:
        changes["widths"] = [int(w) for w in init_settings_["widths"]]
    if init_settings_.get("net_diameter"):
        changes["net_diameter"] = float(init_settings_["net_diameter"])
    elif settings.scale is None and init_settings_.get("scale"):
        changes["scale"] = float(init_settings_["scale"])  # a fixed-scale model keeps its scale
    return replace(settings, **changes), exported.state
