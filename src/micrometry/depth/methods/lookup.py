"""``lookup``: the 1st place's approach, real-style simulation bank + nearest-neighbour search.

1. Per case, a CycleGAN (WGAN-GP) between simulated SEM renders and real SEM
   images of that case's Depth_* folder learns to render simulation in the real
   style.
2. After training, every simulated render of a case is translated into the real
   style; the translated images and their depth maps form that case's bank.
   With ``bank="mean"`` (default) the two renders of a depth map are z-scored and
   averaged into one bank image: half the bank, half the search time, and a
   lower RMSE than keeping both (measured, docs/depth-gan.md).
3. At inference the case classifier picks the bank; the image's nearest
   neighbour by cosine similarity of z-scored pixels, over circular shifts of
   +-2 px (25 shifts), gives the depth map, shifted the same way
   (:mod:`micrometry.depth.nn_search`). ``top_k > 1`` averages the depth maps of
   the k best matches (its effect on the RMSE: docs/depth-gan.md).

Reduced for a 2-core CPU (see docs/depth-gan.md): the generator and critic
sizes of ``cyclegan``, one critic step per generator step (the 1st place used
5), batch 16, a small CNN classifier instead of EfficientNet-B0, and an
optional two-stage search (``candidates``) that scores only the bank images
whose Fourier magnitudes best match at all 25 shifts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from micrometry.config import param
from micrometry.depth.dataset import IMAGE_SHAPE
from micrometry.depth.gan import to_pixels, to_unit_range
from micrometry.depth.methods.base import DEPTH_METHODS, DepthData, DepthMethod
from micrometry.depth.methods.classifier import CaseClassifierTask
from micrometry.depth.methods.per_case_gan import (
    GanConfig,
    PerCaseGanTask,
    classify_cases,
    make_case_classifier,
    make_case_gans,
    task_settings,
    trainable_cases,
)
from micrometry.depth.nn_search import ShiftedNeighbourSearch, unit_zscore
from micrometry.errors import InputError
from micrometry.train import LoopConfig, TrainTask


class LookupTask(PerCaseGanTask):
    """Per case: CycleGAN simulation <-> real."""

    def __init__(self, method: LookupMethod, data: DepthData, device: torch.device, seed: int):
        gans = {k: m for k, m in method.modules.items() if k != "classifier"}
        super().__init__(
            gans, method.modules["classifier"], data.sim, data.real, device, **task_settings(method.cfg, seed)
        )

    def gan_losses(self, case, sim, depth, real, critic):
        gan = self.gans[f"sim_real_{case}"]
        if critic:
            return gan.critic_loss(sim, real, self.weights), {}
        loss, parts = gan.generator_loss(sim, real, self.weights)
        return loss, {"cycle": float(parts["cycle"]), "adv": float(parts["adv"])}

    def validate(self) -> dict[str, float]:
        return self.validate_classifier()


@torch.no_grad()
def translate(generator: torch.nn.Module, images: np.ndarray, batch: int = 512) -> torch.Tensor:
    """``(N, 72, 48)`` uint8 simulated renders -> ``(N, 72, 48)`` float32 real-style pixel values."""
    generator.eval()
    out = []
    for start in range(0, len(images), batch):
        x = to_unit_range(torch.from_numpy(images[start : start + batch]).float().unsqueeze(1))
        x = x.to(next(generator.parameters()).device)
        out.append(to_pixels(generator(x)).squeeze(1).cpu())
    return torch.cat(out) if out else torch.empty(0, *IMAGE_SHAPE)


@DEPTH_METHODS.register("lookup")
class LookupMethod(DepthMethod):
    """The 1st place's translate-then-look-up method (see the module docstring).

    Parameters
    ----------
    (GAN and classifier settings as for ``cyclegan``)
    top_k : int
        Depth maps of the k best matches are averaged (1 = the 1st place's single match).
    candidates : int
        First-stage candidates scored at every shift (0: exact search over the whole bank; banks
        smaller than 8x this are searched exactly anyway).
    max_shift : int
        Circular shifts tried in each axis (2: 25 shifts).
    bank : str
        ``"mean"``: one bank image per depth map, the mean of its two z-scored translated renders;
        ``"both"``: each translated render is its own bank image.
    translate : bool
        False: no GAN; the bank holds the simulated renders as they are and training fits only
        the case classifier (``classifier_epochs`` epochs of depth-core's classifier task). On
        bench data whose real geometry differs from the simulation's this measured better.
    """

    name = "lookup"
    uses = ("sim", "real")

    @dataclass
    class Config(GanConfig):
        top_k: int = param(10, ge=1)
        candidates: int = param(64, ge=0)  # 0: exact search
        max_shift: int = param(2, ge=0)
        bank: str = param("mean", choices=("mean", "both"))
        translate: bool = param(True)
        classifier_epochs: int = param(60, ge=1)

    def __init__(self, **cfg):
        super().__init__(**cfg)
        self.banks: dict[int, ShiftedNeighbourSearch] = {}

    def build_modules(self) -> dict[str, torch.nn.Module]:
        width, blocks = int(self.cfg.width), int(self.cfg.n_blocks)
        gans = make_case_gans(width, blocks, "sim_real_") if self.cfg.translate else {}
        return {**gans, "classifier": make_case_classifier(int(self.cfg.classifier_width))}

    def loop_config(self) -> LoopConfig:
        if not self.cfg.translate:  # only the classifier trains: keep its best epoch
            return LoopConfig(
                epochs=int(self.cfg.classifier_epochs),
                time_budget_s=self.cfg.time_budget_s,
                monitor="val_acc",
                mode="max",
                description=self.name,
            )
        # No validation metric measures translation quality: the last epoch is the model.
        return LoopConfig(
            epochs=int(self.cfg.epochs),
            time_budget_s=self.cfg.time_budget_s,
            monitor="last",
            mode="min",
            description=self.name,
        )

    def build_task(self, data: DepthData, device: torch.device, seed: int) -> TrainTask:
        data.require("sim", "real")
        if self.cfg.translate:
            return LookupTask(self, data, device, seed)
        task = CaseClassifierTask(
            self.modules["classifier"],
            data.real,
            device,
            seed,
            lr=self.cfg.classifier_lr,
            val_site_fraction=self.cfg.val_fraction,
            epochs=int(self.cfg.classifier_epochs),
        )
        task.cases = trainable_cases(data.sim.case, data.real.case)
        return task

    def after_training(self, task: TrainTask, data: DepthData) -> None:
        """The banks: each case's simulated renders, translated into the real style unless ``translate`` is off."""
        sim = data.sim
        for case in task.cases:
            rows = np.flatnonzero(sim.case == case)
            renders = sim.sem[rows].reshape(-1, *IMAGE_SHAPE)
            if self.cfg.translate:
                styled = translate(self.modules[f"sim_real_{case}"].ab, renders)
            else:
                styled = torch.from_numpy(renders).float()
            if self.cfg.bank == "mean":
                pairs = unit_zscore(styled).view(len(rows), 2, *IMAGE_SHAPE)
                self.banks[case] = self._search(pairs.mean(dim=1), sim.depth[rows])
            else:
                self.banks[case] = self._search(styled, np.repeat(sim.depth[rows], 2, axis=0))

    def _search(self, images, depth) -> ShiftedNeighbourSearch:
        return ShiftedNeighbourSearch(
            images,
            depth,
            max_shift=int(self.cfg.max_shift),
            candidates=int(self.cfg.candidates) or None,
        )

    def extra_state(self) -> dict[str, Any]:
        # Bank images are stored z-scored (the search's form) in float16: half the size, same ranking.
        return {
            "banks": {
                case: {"images": bank.bank.view(-1, *bank.shape).half(), "depth": bank.depth}
                for case, bank in self.banks.items()
            }
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.banks = {
            int(case): self._search(b["images"].float(), b["depth"]) for case, b in state["banks"].items()
        }

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            raise InputError(f"expected images of shape (N, 72, 48), got {images.shape}")
        cases = classify_cases(self.modules["classifier"], images, tuple(self.banks))
        out = np.empty(images.shape, dtype=np.float32)
        for case in np.unique(cases):
            rows = np.flatnonzero(cases == case)
            out[rows] = self.banks[int(case)].predict(images[rows], k=int(self.cfg.top_k))
        return out
