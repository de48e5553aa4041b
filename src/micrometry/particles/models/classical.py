"""``watershed``: the classical baseline as a particle model (no training, no weights)."""

from __future__ import annotations

from micrometry.modelfile import ExportedModel
from micrometry.particles.models.base import PARTICLE_MODELS, ParticleModel


@PARTICLE_MODELS.register("watershed")
class WatershedModel(ParticleModel):
    """Flatten, threshold and split by distance-transform watershed (:mod:`micrometry.particles.watershed`)."""

    name = "watershed"
    learned = False
    trainable = False

    def segmenter(self, exported: ExportedModel | None = None, **params):
        from micrometry.particles.watershed import make_watershed

        return make_watershed(**params)
