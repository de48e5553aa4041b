"""The dense models ``center-offset`` (the default) and ``unet-watershed``: training task and registry entries.

Both are a :class:`~.unet.UNet` with a :class:`~.methods.DenseMethod` head,
trained on augmented random crops and predicted in tiles
(:class:`~.dense.DenseSegmenter`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from micrometry.errors import CheckpointError
from micrometry.modelfile import ExportedModel
from micrometry.particles.models.base import PARTICLE_MODELS, ParticleModel
from micrometry.particles.models.data import CropBatches, LabelledImage, ParallelCropBatches
from micrometry.particles.models.dense import DenseSegmenter, build_network, dense_segmenter, model_payload
from micrometry.particles.models.methods import CenterOffset, DenseMethod, UNetWatershed
from micrometry.particles.models.training import ParticleTrainTask, TrainSettings
from micrometry.train.loop import clipped_step, select_device


class DenseTrainTask(ParticleTrainTask):
    """Train a U-Net for one dense method on augmented random crops."""

    def __init__(self, settings: TrainSettings, train: list[LabelledImage], val: list[LabelledImage]):
        super().__init__(settings, train, val)
        self.device = select_device(getattr(settings, "device", "auto"))
        self.method, self.net = build_network(settings.model, tuple(settings.widths))
        self.net.to(self.device)
        self.modules = {"net": self.net}
        self.optimizers = {
            "adamw": torch.optim.AdamW(
                self.net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
            )
        }
        self.schedulers = {}  # the learning rate follows training progress, see set_learning_rate

    def train_batches(self, epoch: int, generator: torch.Generator) -> CropBatches:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        s = self.settings
        augment = {"invert_p": s.invert_p, "gamma_range": tuple(s.gamma_range)}
        if getattr(s, "workers", 0) > 0:
            return ParallelCropBatches(
                self.train_items,
                self.method.targets,
                s.steps_per_epoch,
                s.batch_size,
                s.crop,
                seed,
                s.workers,
                **augment,
            )
        return CropBatches(
            self.train_items, self.method.targets, s.steps_per_epoch, s.batch_size, s.crop, seed, **augment
        )

    def load_initial_weights(self, state: dict[str, Any]) -> None:
        try:
            self.net.load_state_dict(state["modules"]["net"])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointError(
                f"--init weights do not fit model {self.settings.model!r} ({type(exc).__name__})"
            ) from None

    def wrap_ddp(self, wrap) -> None:
        self.net = wrap(self.net)

    def train_step(self, batch: tuple[torch.Tensor, list[np.ndarray]]) -> dict[str, float]:
        started = time.perf_counter()
        self.set_learning_rate()
        images = batch[0].to(self.device, non_blocking=True)
        target = batch[1] if isinstance(batch[1], torch.Tensor) else torch.from_numpy(np.stack(batch[1]))
        target = target.to(self.device, non_blocking=True)
        loss, parts = self.method.loss(self.net(images), target)
        clipped_step(loss, self.optimizers["adamw"], self.net.parameters(), 5.0)
        self.steps_done += 1
        self.train_seconds += time.perf_counter() - started
        return parts

    def payload(self) -> dict[str, Any]:
        s = self.settings
        return model_payload(
            s.model,
            tuple(s.widths),
            s.scale,
            self.method.config,
            net_diameter=s.net_diameter if s.scale is None else None,
        )

    def segmenter(self) -> DenseSegmenter:
        s = self.settings
        return DenseSegmenter(
            self.method,
            self.net,
            scale=s.scale,
            net_diameter=s.net_diameter if s.scale is None else None,
            device=self.device,
        )


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
