"""What ``cyclegan`` and ``lookup`` share: per-case CycleGAN training and the case classifier.

Both methods train one small CycleGAN per case (Case_1..4 = Depth_110..140)
between simulated SEM renders of that case and real SEM images of the matching
Depth_* folder, and a CNN case classifier on the real images (labelled by their
folder) that picks the per-case model at inference.

Every training step takes one case: a batch of that case's simulated renders
(with their depth maps) and an equally large random batch of its real images;
then the classifier (depth-core's :class:`CaseClassifierTask`, reused as a
part) takes a few steps on batches of real images of all cases, until it has
had its own cosine learning-rate schedule of ``classifier_total_steps`` steps
(a GAN step costs ~50 classifier steps, so it converges early and then stays
fixed, whatever the time budget). The cases take
turns in a seeded random order, so an interrupted run resumes exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from micrometry.config import Config, param
from micrometry.depth.dataset import RealArrays, SimArrays, site_split
from micrometry.depth.gan import CycleGan, GanWeights, requires_grad, to_unit_range
from micrometry.depth.methods.classifier import CaseClassifier, CaseClassifierTask
from micrometry.depth.nets import CaseNet
from micrometry.errors import DatasetError
from micrometry.train import TrainTask

CASES = (1, 2, 3, 4)


@dataclass
class GanConfig(Config):
    """Settings both per-case GAN methods (``cyclegan``, ``lookup``) share."""

    width: int = param(16, ge=1)
    n_blocks: int = param(2, ge=1)
    lr: float = param(2e-4, ge=0)
    beta1: float = param(0.5, ge=0, lt=1)
    beta2: float = param(0.999, ge=0, lt=1)
    batch_size: int = param(16, ge=1)
    n_critic: int = param(1, ge=1)
    gp: float = param(10.0, ge=0)
    lambda_cycle: float = param(10.0, ge=0)
    lambda_idt: float = param(0.5, ge=0)
    classifier_width: int = param(8, ge=1)
    classifier_lr: float = param(3e-3, ge=0)
    classifier_steps: int = param(8, ge=1)
    classifier_total_steps: int = param(800, ge=1)
    epochs: int = param(4, ge=1)
    time_budget_s: float = param(600.0, ge=0)
    val_fraction: float = param(0.1, ge=0, lt=1)


def gan_weights(cfg: GanConfig) -> GanWeights:
    return GanWeights(gp=cfg.gp, cycle=cfg.lambda_cycle, identity=cfg.lambda_idt)


def task_settings(cfg: GanConfig, seed: int) -> dict[str, Any]:
    """The :class:`PerCaseGanTask` keyword arguments both GAN methods take from their configuration."""
    return {
        "lr": cfg.lr,
        "betas": (cfg.beta1, cfg.beta2),
        "batch_size": int(cfg.batch_size),
        "n_critic": int(cfg.n_critic),
        "weights": gan_weights(cfg),
        "classifier_lr": cfg.classifier_lr,
        "classifier_steps": int(cfg.classifier_steps),
        "classifier_total_steps": int(cfg.classifier_total_steps),
        "val_fraction": cfg.val_fraction,
        "seed": seed,
    }


def case_batches(
    sim_case: np.ndarray, batch_size: int, generator: torch.Generator, skip: int | None = None
) -> list[tuple[int, torch.Tensor]]:
    """One epoch of single-case batches of simulated samples, cases interleaved in a random order.

    Parameters
    ----------
    sim_case : ndarray (N,)
        Case 1..4 of each simulated training sample.
    batch_size : int
    generator : torch.Generator
        The epoch's seeded generator.
    skip : int, optional
        A case value whose samples are left out (cases without a model).

    Returns
    -------
    list of (case, rows)
    """
    batches = []
    for case in np.unique(sim_case):
        if case == skip:
            continue
        rows = torch.from_numpy(np.flatnonzero(sim_case == case))
        rows = rows[torch.randperm(len(rows), generator=generator)]
        batches += [(int(case), rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


def trainable_cases(sim_case: np.ndarray, real_case: np.ndarray) -> tuple[int, ...]:
    """The cases with both simulated renders and real training images (each gets its own models).

    Raises
    ------
    DatasetError
        No case has both.
    """
    cases = tuple(int(c) for c in CASES if (sim_case == c).any() and (real_case == c).any())
    if not cases:
        raise DatasetError(
            "no case has both simulation_data/Case_<n> pairs and train/SEM/Depth_<nm> images "
            "(each per-case model needs both)"
        )
    return cases


def make_case_gans(width: int, n_blocks: int, prefix: str) -> dict[str, CycleGan]:
    return {f"{prefix}{case}": CycleGan(width, n_blocks, width) for case in CASES}


def make_case_classifier(width: int) -> nn.Module:
    """The shared case classifier network: images in [0, 1] -> logits of Case_1..4."""
    return CaseNet(width)


def classify_cases(net: nn.Module, images: np.ndarray, cases: tuple[int, ...] = CASES) -> np.ndarray:
    """The most probable of ``cases`` (those with a trained model) for ``(N, 72, 48)`` uint8 images."""
    proba = CaseClassifier(net).predict_proba(images)
    allowed = np.isin(np.arange(1, 5), cases)
    return np.where(allowed, proba, -1.0).argmax(axis=1) + 1


class PerCaseGanTask(TrainTask):
    """Shared training task: per-case CycleGANs plus the case classifier.

    Subclasses implement :meth:`gan_losses` (critic and generator losses of one
    case's batch) and :meth:`validate`.

    Parameters
    ----------
    gans : dict
        ``name -> CycleGan``; all of them get the generator and critic optimisers.
    classifier : nn.Module
    sim, real : SimArrays, RealArrays
    device : torch.device
    lr, betas : float, (float, float)
        Adam settings of the seed (2e-4, (0.5, 0.999)).
    batch_size : int
    n_critic : int
        Critic updates per generator update (1st place: 5).
    weights : GanWeights
    classifier_lr : float
    classifier_steps : int
        Classifier steps per GAN step.
    classifier_total_steps : int
        Length of the classifier's training (cosine schedule to zero); no steps after it.
    val_fraction, seed : float, int
        Held-out simulated structures and real sites, split by the seed.
    epochs : int
        The classifier's cosine learning-rate schedule length.
    """

    def __init__(
        self,
        gans: dict[str, CycleGan],
        classifier: nn.Module,
        sim: SimArrays,
        real: RealArrays,
        device: torch.device,
        lr: float,
        betas: tuple[float, float],
        batch_size: int,
        n_critic: int,
        weights: GanWeights,
        classifier_lr: float,
        classifier_steps: int,
        classifier_total_steps: int,
        val_fraction: float,
        seed: int,
    ):
        self.gans, self.classifier, self.device = gans, classifier, device
        self.batch_size, self.n_critic, self.weights = batch_size, n_critic, weights
        self.classifier_steps, self.classifier_total_steps = classifier_steps, classifier_total_steps
        sim_train, sim_val = sim.split(val_fraction, seed)
        real_train, _ = site_split(real, val_fraction, seed)
        self.sim_x, self.sim_d, self.sim_case = self._sim_tensors(sim, sim_train)
        self.val_x, self.val_d, self.val_case = self._sim_tensors(sim, sim_val)
        self.real_x = self._unit_tensor(real.images[real_train])
        self.real_case = real.case[real_train]
        self.cases = trainable_cases(self.sim_case, self.real_case)
        self.real_rows_of = {c: torch.from_numpy(np.flatnonzero(self.real_case == c)) for c in CASES}
        # Same seed and fraction: the classifier holds out the same sites.
        self.classifier_task = CaseClassifierTask(
            classifier, real, device, seed, lr=classifier_lr, val_site_fraction=val_fraction
        )

        self.modules = {**gans, **self.classifier_task.modules}
        generator_params = [p for g in gans.values() for p in g.generator_parameters()]
        critic_params = [p for g in gans.values() for p in g.critic_parameters()]
        self.optimizers = {
            "generators": torch.optim.Adam(generator_params, lr=lr, betas=betas),
            "critics": torch.optim.Adam(critic_params, lr=lr, betas=betas),
            **self.classifier_task.optimizers,
        }
        # Stepped per classifier step (see end_epoch), replacing the classifier task's per-epoch schedule.
        total = max(classifier_total_steps, 1)
        self.schedulers = {
            "classifier_lr": torch.optim.lr_scheduler.LambdaLR(
                self.optimizers["classifier_opt"],
                lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / total)),
            )
        }
        self._step_generator = torch.Generator().manual_seed(seed + 7)

    def _sim_tensors(self, sim: SimArrays, rows: np.ndarray):
        """Each render its own sample, with its depth map; both in [-1, 1]."""
        x = sim.sem[rows].reshape(-1, *sim.sem.shape[2:])
        d = np.repeat(sim.depth[rows], 2, axis=0)
        return self._unit_tensor(x), self._unit_tensor(d), np.repeat(sim.case[rows], 2)

    def _unit_tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """``(N, 72, 48)`` pixel values -> ``(N, 1, 72, 48)`` in [-1, 1] on the training device."""
        return to_unit_range(torch.from_numpy(pixels).float().unsqueeze(1)).to(self.device)

    # -- the loop's interface ---------------------------------------------
    def train_batches(self, epoch: int, generator: torch.Generator):
        self._step_generator.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
        self.classifier_task.train_batches(epoch, generator)  # seeds its augmentation
        return case_batches(
            np.where(np.isin(self.sim_case, self.cases), self.sim_case, 0), self.batch_size, generator, skip=0
        )

    def wrap_ddp(self, wrap) -> None:
        # the GANs stay plain (their gradients are averaged at the optimiser step); the classifier's task wraps
        self.classifier_task.wrap_ddp(wrap)

    def train_step(self, batch: tuple[int, torch.Tensor]) -> dict[str, float]:
        case, rows = batch
        g = self._step_generator
        real_rows = self.real_rows_of[case]
        real = self.real_x[real_rows[torch.randint(len(real_rows), (len(rows),), generator=g)]]
        sim, depth = self.sim_x[rows], self.sim_d[rows]

        critics = [m for gan in self.gans.values() for m in (gan.critic_a, gan.critic_b)]
        for _ in range(self.n_critic):
            critic_loss = self.gan_losses(case, sim, depth, real, critic=True)[0]
            self.optimizers["critics"].zero_grad(set_to_none=True)
            critic_loss.backward()
            self.optimizers["critics"].step()
        requires_grad(critics, False)
        gen_loss, parts = self.gan_losses(case, sim, depth, real, critic=False)
        self.optimizers["generators"].zero_grad(set_to_none=True)
        gen_loss.backward()
        self.optimizers["generators"].step()
        requires_grad(critics, True)

        losses = {"critic": critic_loss.item(), "gen": gen_loss.item(), **parts}
        cls, schedule = self.classifier_task, self.schedulers["classifier_lr"]
        for _ in range(self.classifier_steps):
            if schedule.last_epoch >= self.classifier_total_steps:
                break
            losses["cls"] = cls.train_step(torch.randint(len(cls.x), (cls.batch_size,), generator=g))["ce"]
            schedule.step()
        return losses

    def end_epoch(self, epoch: int) -> None:
        """Nothing to do: the only schedule is the classifier's, stepped per classifier step."""

    def gan_losses(
        self, case: int, sim: torch.Tensor, depth: torch.Tensor, real: torch.Tensor, critic: bool
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The critic loss (``critic=True``) or the generator loss of one case's batch, with loss parts."""
        raise NotImplementedError

    def validate_classifier(self) -> dict[str, float]:
        """Case accuracy on the held-out real sites."""
        metrics = self.classifier_task.validate()
        return {"val_case_acc": metrics["val_acc"]} if metrics else {}
