"""Supervised training on paired simulation data: the task ``ae`` and ``unet`` share.

The simulated pairs are small (3.5 kB an image), so they stay in memory as
tensors on the training device and batches are index slices: no DataLoader,
no worker processes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from micrometry.depth.dataset import SimArrays
from micrometry.train import TrainTask
from micrometry.train.task import shuffled_batches

# pred (B,1,H,W) nm, target (B,1,H,W) nm -> scalar loss
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sim_tensors(sim: SimArrays, rows: np.ndarray, mean_itr: bool, device: torch.device):
    """Inputs in [0, 1] and targets in nm for ``rows``.

    With ``mean_itr`` each pair's two renders are averaged into one input (less
    noise); otherwise every render is its own sample with the shared depth map.
    """
    sem = sim.sem[rows].astype(np.float32)
    if mean_itr:
        x = sem.mean(axis=1)
        y = sim.depth[rows]
    else:
        x = sem.reshape(-1, *sem.shape[2:])
        y = np.repeat(sim.depth[rows], 2, axis=0)
    x_t = torch.from_numpy(x / 255.0).unsqueeze(1).to(device)
    y_t = torch.from_numpy(y.astype(np.float32)).unsqueeze(1).to(device)
    return x_t, y_t


def flip_batch(
    x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal and vertical flips, the same for input and target (holes are symmetric)."""
    flips = torch.rand(2, generator=generator) < 0.5
    dims = [d for d, f in zip((3, 2), flips.tolist(), strict=False) if f]
    if dims:
        x, y = x.flip(dims), y.flip(dims)
    return x, y


class SimRegressionTask(TrainTask):
    """Train ``net`` to map simulated SEM to depth.

    Parameters
    ----------
    net : nn.Module
        ``(B, 1, 72, 48)`` input in [0, 1] -> heights in nm (same shape).
    sim : SimArrays
    device : torch.device
    loss_fn : callable
        ``loss_fn(pred_nm, target_nm)``.
    lr, batch_size : float, int
    val_fraction, seed : float, int
        Validation split by base structure.
    mean_itr : bool
        Train on the mean of the two renders (validation always uses both renders
        separately, like real images which have one render).
    flips : bool
        Random flip augmentation.
    weight_decay : float
    epochs_for_schedule : int or None
        When given, a cosine learning-rate schedule over that many epochs.
    """

    def __init__(
        self,
        net: nn.Module,
        sim: SimArrays,
        device: torch.device,
        loss_fn: LossFn,
        lr: float,
        batch_size: int,
        val_fraction: float = 0.1,
        seed: int = 0,
        mean_itr: bool = False,
        flips: bool = False,
        weight_decay: float = 0.0,
        epochs_for_schedule: int | None = None,
    ):
        self.net = net
        self.loss_fn = loss_fn
        self.batch_size = batch_size
        self.flips = flips
        train_rows, val_rows = sim.split(val_fraction, seed)
        self.x, self.y = sim_tensors(sim, train_rows, mean_itr, device)
        self.val_x, self.val_y = sim_tensors(sim, val_rows, False, device)
        self.modules = {"net": net}
        self.optimizers = {"opt": torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)}
        self.schedulers = {}
        if epochs_for_schedule:
            self.schedulers["lr"] = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizers["opt"], T_max=epochs_for_schedule
            )
        self._step_generator = torch.Generator().manual_seed(seed + 1)

    def train_batches(self, epoch: int, generator: torch.Generator):
        self._step_generator.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
        return shuffled_batches(len(self.x), self.batch_size, generator)

    def wrap_ddp(self, wrap) -> None:
        self.net = wrap(self.net)

    def train_step(self, idx: torch.Tensor) -> dict[str, float]:
        idx = idx.to(self.x.device)
        x, y = self.x[idx], self.y[idx]
        if self.flips:
            x, y = flip_batch(x, y, self._step_generator)
        loss = self.loss_fn(self.net(x), y)
        opt = self.optimizers["opt"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    def validate(self) -> dict[str, float]:
        if len(self.val_x) == 0:
            return {}
        sq = 0.0
        for start in range(0, len(self.val_x), 1024):
            pred = self.net(self.val_x[start : start + 1024])
            sq += float(((pred - self.val_y[start : start + 1024]) ** 2).sum())
        return {"val_rmse": (sq / self.val_y.numel()) ** 0.5}
