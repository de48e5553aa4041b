"""Training Mask R-CNN through the shared particle training loop.

The same augmented crops as the dense models (:class:`CropBatches`) with
detection targets; AdamW with a short warm-up (the RPN and box losses are
unstable on random weights), then the shared cosine schedule.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import torch

from micrometry.particles.models.data import CropBatches, LabelledImage
from micrometry.particles.models.detection.detector_segmenter import DetectorSegmenter
from micrometry.particles.models.detection.instance_targets import detection_targets
from micrometry.particles.models.detection.maskrcnn import MaskRCNN, MaskRCNNConfig
from micrometry.particles.models.training import ParticleTrainTask, TrainSettings
from micrometry.train.loop import clipped_step, select_device

CHECKPOINT_KIND = "particles-detector"
#: steps of linear learning-rate warm-up
WARMUP_STEPS = 100


class MaskRCNNTask(ParticleTrainTask):
    """Mask R-CNN on augmented crops; validated by segm AP like every particle model."""

    def __init__(
        self,
        settings: TrainSettings,
        train: list[LabelledImage],
        val: list[LabelledImage],
        config: MaskRCNNConfig | None = None,
    ):
        super().__init__(settings, train, val)
        self.device = select_device(settings.device)  # --device, as the dense task
        self.config = config or MaskRCNNConfig()
        self.model = MaskRCNN(self.config).to(self.device)
        self.modules = {"maskrcnn": self.model}
        self.base_lr = min(settings.lr, 2e-3)
        self.optimizers = {
            "adamw": torch.optim.AdamW(
                self.model.parameters(), lr=self.base_lr, weight_decay=settings.weight_decay
            )
        }
        self.schedulers = {}

    def train_batches(self, epoch: int, generator: torch.Generator) -> CropBatches:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        s = self.settings
        return CropBatches(self.train_items, detection_targets, s.steps_per_epoch, s.batch_size, s.crop, seed)

    def wrap_ddp(self, wrap) -> None:
        self.model = wrap(self.model)

    def set_learning_rate(self) -> None:
        super().set_learning_rate()
        warm = min(1.0, (self.steps_done + 1) / WARMUP_STEPS)
        for group in self.optimizers["adamw"].param_groups:
            group["lr"] *= warm

    def train_step(self, batch) -> dict[str, float]:
        started = time.perf_counter()
        self.set_learning_rate()
        images, targets = batch
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
        losses = self.model(images.to(self.device), targets)
        loss = sum(losses.values())
        clipped_step(loss, self.optimizers["adamw"], self.modules["maskrcnn"].parameters(), 10.0)
        self.steps_done += 1
        self.train_seconds += time.perf_counter() - started
        return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in losses.items()}}

    def payload(self) -> dict[str, Any]:
        return {
            "kind": CHECKPOINT_KIND,
            "model": self.settings.model,
            "scale": self.settings.scale,
            "config": asdict(self.config),
        }

    def segmenter(self) -> DetectorSegmenter:
        return DetectorSegmenter(self.model, scale=self.settings.scale, device=self.device)
