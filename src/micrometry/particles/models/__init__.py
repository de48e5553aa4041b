"""Particle models: one :class:`~micrometry.particles.models.base.ParticleModel` entry each.

``center-offset`` (the default, shipped trained: ``--model shipped``),
``unet-watershed``, ``watershed`` (classical, no training), ``maskrcnn`` and
``cascade-maskrcnn`` (plain PyTorch detectors, :mod:`.detection`), registered in
:data:`PARTICLE_MODELS` by the modules of this package (imported on the
registry's first look-up). :func:`load_particle_model` is the one loader.
"""

from micrometry.particles.models.base import (
    DEFAULT_MODEL,
    PARTICLE_MODELS,
    SHIPPED,
    ParticleModel,
    load_particle_model,
)

__all__ = ["DEFAULT_MODEL", "PARTICLE_MODELS", "SHIPPED", "ParticleModel", "load_particle_model"]
