"""``cyclegan``: the seed's approach, per-case CycleGANs real -> simulation style -> depth.

For each case (chosen at inference by the case classifier):

1. a CycleGAN between real SEM images and simulated SEM renders translates a
   real image into the simulation's style;
2. a CycleGAN between simulated SEM renders and depth maps, trained with an
   extra guided L1 loss (weight 1) on the paired simulation data, turns that
   into a depth map;
3. post-processing snaps pixels within 1 of the case's top-surface level
   (cleaned by a 3x3 closing) to that level (:mod:`micrometry.depth.background`).

Both CycleGANs use WGAN-GP critics (gradient penalty 10), lambda_cycle 10,
lambda_idt 0.5, Adam 2e-4 with betas (0.5, 0.999), as the seed did.

Reduced for a 2-core CPU (see docs/depth-gan.md): 16-channel generators with 2
down/2 up and 2 residual blocks (CycleGAN's default is 64 channels and 9
blocks), 3-layer 16-channel critics, one critic step per generator step, batch
16, and the small shared :class:`~micrometry.depth.nets.CaseNet` classifier
instead of MobileNetV3-small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from micrometry.config import param
from micrometry.depth.background import background_levels, snap_background
from micrometry.depth.gan import to_pixels, to_unit_range
from micrometry.depth.methods.base import DEPTH_METHODS, DepthData, DepthMethod
from micrometry.depth.methods.per_case_gan import (
    CASES,
    GanConfig,
    PerCaseGanTask,
    classify_cases,
    make_case_classifier,
    make_case_gans,
    task_settings,
)
from micrometry.train import LoopConfig


class CycleGanTask(PerCaseGanTask):
    """Per case: CycleGAN real <-> sim and CycleGAN sim <-> depth with guided L1."""

    def __init__(self, method: CycleGanMethod, data: DepthData, device: torch.device, seed: int):
        self.method = method
        gans = {k: m for k, m in method.modules.items() if k != "classifier"}
        super().__init__(
            gans, method.modules["classifier"], data.sim, data.real, device, **task_settings(method.cfg, seed)
        )
        self.guided_weight = method.cfg.guided_l1

    def gan_losses(self, case, sim, depth, real, critic):
        real_sim, sim_depth = self.gans[f"real_sim_{case}"], self.gans[f"sim_depth_{case}"]
        if critic:
            return real_sim.critic_loss(real, sim, self.weights) + sim_depth.critic_loss(
                sim, depth, self.weights
            ), {}
        style_loss, style = real_sim.generator_loss(real, sim, self.weights)
        depth_loss, parts = sim_depth.generator_loss(sim, depth, self.weights)
        guided = F.l1_loss(parts["fake_b"], depth)
        total = style_loss + depth_loss + self.guided_weight * guided
        return total, {"guided": float(guided.detach()), "cycle": float(style["cycle"] + parts["cycle"])}

    def validate(self) -> dict[str, float]:
        """RMSE (nm) of sim -> depth on held-out simulated structures (true case), after the background snap."""
        metrics = self.validate_classifier()
        if len(self.val_x) == 0:
            return metrics
        sq, n = 0.0, 0
        for case in self.cases:
            rows = torch.from_numpy(np.flatnonzero(self.val_case == case))
            if len(rows) == 0:
                continue
            gan = self.gans[f"sim_depth_{case}"]
            pred = torch.cat(
                [to_pixels(gan.ab(self.val_x[rows[i : i + 512]])) for i in range(0, len(rows), 512)]
            )
            pred = snap_background(pred.squeeze(1).cpu().numpy(), self.method.background[case])
            truth = to_pixels(self.val_d[rows]).squeeze(1).cpu().numpy()
            sq, n = sq + float(((pred - truth) ** 2).sum()), n + truth.size
        return {"val_rmse": (sq / n) ** 0.5, **metrics} if n else metrics


@DEPTH_METHODS.register("cyclegan")
class CycleGanMethod(DepthMethod):
    """The seed's per-case CycleGAN method (see the module docstring).

    Parameters
    ----------
    width, n_blocks : int
        Generator channels and residual blocks (16, 2).
    lr, beta1, beta2 : float
        Adam (2e-4, 0.5, 0.999).
    batch_size, n_critic : int
        Batch size and critic steps per generator step.
    gp, lambda_cycle, lambda_idt, guided_l1 : float
        Gradient penalty (10), cycle (10), identity (0.5 x cycle) and guided L1 (1) weights.
    classifier_width, classifier_lr, classifier_steps, classifier_total_steps : int, float, int, int
        The case classifier, trained alongside on the real images: ``classifier_steps`` per GAN step
        until it has had ``classifier_total_steps`` (cosine learning rate to zero).
    epochs, time_budget_s : int, float
        Default schedule (``--epochs`` / ``--time-budget`` override).
    val_fraction : float
        Simulated structures and real sites held out for validation.
    """

    name = "cyclegan"
    uses = ("sim", "real")

    @dataclass
    class Config(GanConfig):
        guided_l1: float = param(1.0, ge=0)

    def __init__(self, **cfg):
        super().__init__(**cfg)
        # The top-surface level of each case, fitted from the simulated depth maps, and the cases trained.
        self.background: dict[int, float] = {}
        self.cases: tuple[int, ...] = CASES

    def build_modules(self) -> dict[str, torch.nn.Module]:
        width, blocks = int(self.cfg.width), int(self.cfg.n_blocks)
        return {
            **make_case_gans(width, blocks, "real_sim_"),
            **make_case_gans(width, blocks, "sim_depth_"),
            "classifier": make_case_classifier(int(self.cfg.classifier_width)),
        }

    def loop_config(self) -> LoopConfig:
        return LoopConfig(
            epochs=int(self.cfg.epochs),
            time_budget_s=self.cfg.time_budget_s,
            monitor="val_rmse",
            mode="min",
            description=self.name,
        )

    def build_task(self, data: DepthData, device: torch.device, seed: int) -> CycleGanTask:
        data.require("sim", "real")
        self.background = background_levels(data.sim.depth, data.sim.case)
        task = CycleGanTask(self, data, device, seed)
        self.cases = task.cases
        return task

    def extra_state(self) -> dict[str, Any]:
        return {
            "background": {int(k): float(v) for k, v in self.background.items()},
            "cases": list(self.cases),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.background = {int(k): float(v) for k, v in state["background"].items()}
        self.cases = tuple(int(c) for c in state["cases"])

    def predict_tensor(self, x: torch.Tensor) -> torch.Tensor:
        # x is uint8 / 255 (see DepthMethod.predict): the classifier takes the uint8 images back.
        images = (x * 255).round().byte().squeeze(1).cpu().numpy()
        cases = torch.from_numpy(classify_cases(self.modules["classifier"], images, self.cases)).to(x.device)
        out = torch.empty_like(x)
        unit = to_unit_range(x * 255.0)
        for case in cases.unique().tolist():
            rows = cases == case
            real_sim, sim_depth = self.modules[f"real_sim_{case}"], self.modules[f"sim_depth_{case}"]
            height = to_pixels(sim_depth.ab(real_sim.ab(unit[rows]))).squeeze(1).cpu().numpy()
            snapped = snap_background(height, self.background[case])
            out[rows] = torch.from_numpy(snapped).unsqueeze(1).to(x.device)
        return out
