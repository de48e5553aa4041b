"""The dense models ``center-offset`` (the default) and ``unet-watershed``: their registry entries.

Both are a :class:`~.unet.UNet` with a :class:`~.heads.DenseMethod` head,
trained on augmented random crops (:class:`~.dense_task.DenseTrainTask`) and
predicted in tiles (:class:`~.dense_segmenter.DenseSegmenter`).
"""

from __future__ import annotations

from typing import Any

from micrometry.modelfile import ExportedModel
from micrometry.particles.models.base import PARTICLE_MODELS, ParticleModel
from micrometry.particles.models.data import LabelledImage
from micrometry.particles.models.dense.dense_segmenter import DenseSegmenter, dense_segmenter
from micrometry.particles.models.dense.dense_task import DenseTrainTask
from micrometry.particles.models.dense.heads import CenterOffset, DenseMethod, UNetWatershed
from micrometry.particles.models.training import TrainSettings


class DenseModel(ParticleModel):
    """A dense model: exports the U-Net's weights, its widths, scale and decoder settings."""

    settings_keys = ("widths", "scale", "method_config")
    modules = ("net",)
    #: trained with each image resized so that its particles meet the network at one diameter
    auto_size = True
    #: what the U-Net's maps mean and how they decode (set by each dense model)
    method: type[DenseMethod]

    def build_task(self, settings: TrainSettings, train: list[LabelledImage], val: list[LabelledImage]):
        return DenseTrainTask(settings, train, val)

    def export_checkpoint(self, payload: dict[str, Any], path) -> tuple[dict[str, Any], dict[str, Any]]:
        settings, state = super().export_checkpoint(payload, path)
        if payload.get("net_diameter"):  # automatic size (runs before it have a fixed scale)
            settings["net_diameter"] = float(payload["net_diameter"])
        return settings, state

    def preprocessing(self, settings: dict[str, Any]) -> dict[str, Any]:
        description = super().preprocessing(settings)
        if settings.get("net_diameter"):
            description["scale"] = (
                f"automatic: each image resized so that its median particle (area-equivalent "
                f"diameter) measures {settings['net_diameter']:g} network pixels"
            )
        return description

    def segmenter(
        self,
        exported: ExportedModel | None,
        scale: float | None = None,
        tile: int | None = None,
        diameter: float | None = None,
    ) -> DenseSegmenter:
        # Flip TTA: load_particle_model(tta=True) wraps this segmenter, which then averages its maps.
        return dense_segmenter(exported, scale=scale, tile=tile, diameter=diameter)


@PARTICLE_MODELS.register("center-offset")
class CenterOffsetModel(DenseModel):
    name = "center-offset"
    method = CenterOffset


@PARTICLE_MODELS.register("unet-watershed")
class UNetWatershedModel(DenseModel):
    name = "unet-watershed"
    method = UNetWatershed
