"""Particle models: one :class:`~micrometry.particles.models.base.ParticleModel` entry each.

``center-offset`` (the default, shipped trained: ``--model shipped``),
``unet-watershed``, ``watershed`` (classical, no training), ``maskrcnn`` and
``cascade-maskrcnn`` (plain PyTorch detectors, :mod:`.detection`), registered in
:data:`~micrometry.particles.models.base.PARTICLE_MODELS` by the modules listed
in :data:`~micrometry.particles.models.base.BUILTIN_MODULES`.
"""
