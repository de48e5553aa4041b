"""``ae``: the competition's official baseline, an MLP autoencoder on simulation pairs.

Exactly as published: the 72x48 image flattened to 3456 values / 255, dense
layers 3456-1024-512-256-128-256-512-1024-3456 with BatchNorm1d and ReLU after
every hidden layer, a linear output (depth / 255), L1 loss, Adam 1e-3, batch
128, 10 epochs, simulated data only (each noisy render is its own sample). It
is the reference every other method is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from micrometry.config import Config, param
from micrometry.depth.dataset import IMAGE_SHAPE
from micrometry.depth.methods.base import DEPTH_METHODS, DepthData, DepthMethod
from micrometry.depth.sim_task import SimRegressionTask
from micrometry.train import LoopConfig

N_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]


class MLPAutoencoder(nn.Module):
    """The baseline network; maps images in [0, 1] to heights in nm."""

    def __init__(self, widths: tuple[int, ...] = (1024, 512, 256, 128, 256, 512, 1024)):
        super().__init__()
        layers: list[nn.Module] = []
        previous = N_PIXELS
        for width in widths:
            layers += [nn.Linear(previous, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            previous = width
        layers.append(nn.Linear(previous, N_PIXELS))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The network works in depth/255 units, as the baseline does; callers see nm.
        return self.layers(x.flatten(1)).view(-1, 1, *IMAGE_SHAPE) * 255.0


def l1_in_255_units(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The baseline's loss: L1 between depth/255 maps."""
    return nn.functional.l1_loss(pred / 255.0, target / 255.0)


@DEPTH_METHODS.register("ae")
class AutoencoderMethod(DepthMethod):
    """Official MLP autoencoder baseline (simulation only).

    Parameters
    ----------
    lr : float
        Adam learning rate (1e-3).
    batch_size : int
        128.
    epochs : int
        10.
    val_fraction : float
        Simulated base structures held out for ``val_rmse``.
    """

    name = "ae"
    uses = ("sim",)

    @dataclass
    class Config(Config):
        lr: float = param(1e-3, ge=0)
        batch_size: int = param(128, ge=1)
        epochs: int = param(10, ge=1)
        val_fraction: float = param(0.1, ge=0, lt=1)

    def build_modules(self) -> dict[str, nn.Module]:
        return {"net": MLPAutoencoder()}

    def loop_config(self) -> LoopConfig:
        return LoopConfig(epochs=int(self.cfg.epochs), monitor="val_rmse", mode="min", description="ae")

    def build_task(self, data: DepthData, device: torch.device, seed: int) -> SimRegressionTask:
        data.require("sim")
        return SimRegressionTask(
            self.modules["net"],
            data.sim,
            device,
            l1_in_255_units,
            lr=self.cfg.lr,
            batch_size=int(self.cfg.batch_size),
            val_fraction=self.cfg.val_fraction,
            seed=seed,
        )

    def predict_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.modules["net"](x)
