"""Training a dense model: a U-Net with one :class:`~.heads.DenseMethod` head on augmented random crops."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from micrometry.errors import CheckpointError
from micrometry.particles.models.data import CropBatches, LabelledImage, ParallelCropBatches
from micrometry.particles.models.dense.dense_segmenter import DenseSegmenter, build_network, model_payload
from micrometry.particles.models.training import ParticleTrainTask, TrainSettings
from micrometry.train.loop import clipped_step, select_device
from micrometry.train.precision import autocast, inference_precision, resolve_precision


class DenseTrainTask(ParticleTrainTask):
    """Train a U-Net for one dense method on augmented random crops."""

    def __init__(self, settings: TrainSettings, train: list[LabelledImage], val: list[LabelledImage]):
        super().__init__(settings, train, val)
        self.device = select_device(settings.device)
        self.precision = resolve_precision(settings.precision, self.device)
        self.method, self.net = build_network(settings.model, tuple(settings.widths))
        if getattr(settings, "exclude_border", None):  # the annotations' convention, kept in every checkpoint
            self.method.config["exclude_border"] = True
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
        with autocast(self.precision, self.device):  # the convolutions; the loss stays float32
            maps = self.net(images)
        loss, parts = self.method.loss(maps.float(), target)
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
            precision=inference_precision(self.device),  # validation measures what predict will do
        )
