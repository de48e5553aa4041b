"""A small CycleGAN with WGAN-GP critics, sized for 72x48 SEM images on a CPU.

What the seed and the 1st place used, scaled down: the generator is the
CycleGAN ResNet generator (7x7 stem, two stride-2 downsamplings, residual
blocks, two upsamplings, 7x7 head, tanh) with 16 base channels and 2 residual
blocks instead of 64 and 9; the critic is a 3-layer PatchGAN without
normalisation (WGAN-GP penalises per-sample gradients, which batch statistics
would mix). Images and depth maps enter as ``pixel / 127.5 - 1`` in [-1, 1].

Losses (Gulrajani et al. 2017; Zhu et al. 2017)::

    critic    D(fake) - D(real) + gp_weight * (|grad D(mix)| - 1)^2
    generator -D(G(a)) + lambda_cycle * |F(G(a)) - a| + lambda_cycle * lambda_idt * |F(a) - a|
              (and the same in the other direction)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """Pixel values 0..255 -> [-1, 1] (the generators end in tanh)."""
    return pixels / 127.5 - 1.0


def to_pixels(unit: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> pixel values 0..255."""
    return (unit + 1.0) * 127.5


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TinyGenerator(nn.Module):
    """CycleGAN's ResNet generator, 2 down / 2 up; (N, 1, 72, 48) in [-1, 1] -> same shape.

    Parameters
    ----------
    width : int
        Channels after the stem (doubled by each downsampling).
    n_blocks : int
        Residual blocks at 1/4 resolution (18x12 for a 72x48 image).
    """

    def __init__(self, width: int = 16, n_blocks: int = 2):
        super().__init__()
        w = width
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(1, w, 7),
            nn.InstanceNorm2d(w),
            nn.ReLU(True),
        ]
        for c_in, c_out in ((w, 2 * w), (2 * w, 4 * w)):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                nn.InstanceNorm2d(c_out),
                nn.ReLU(True),
            ]
        layers += [ResidualBlock(4 * w) for _ in range(n_blocks)]
        for c_in, c_out in ((4 * w, 2 * w), (2 * w, w)):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1),
                nn.InstanceNorm2d(c_out),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(w, 1, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchCritic(nn.Module):
    """WGAN critic: a 3-layer PatchGAN whose patch scores are averaged to one score per image."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * width, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(1, 2, 3))


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: mean of (|grad critic(x)| - 1)^2 on random mixes of real and fake samples."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


@dataclass
class GanWeights:
    """Loss weights of the seed and the 1st place (WGAN-GP, CycleGAN)."""

    gp: float = 10.0
    cycle: float = 10.0
    identity: float = 0.5  # relative to ``cycle``, as in CycleGAN's lambda_idt


class CycleGan(nn.Module):
    """Two generators ``ab: A -> B``, ``ba: B -> A`` and a critic per domain."""

    def __init__(self, width: int = 16, n_blocks: int = 2, critic_width: int = 16):
        super().__init__()
        self.ab = TinyGenerator(width, n_blocks)
        self.ba = TinyGenerator(width, n_blocks)
        self.critic_a = PatchCritic(critic_width)
        self.critic_b = PatchCritic(critic_width)

    def generator_parameters(self):
        return [*self.ab.parameters(), *self.ba.parameters()]

    def critic_parameters(self):
        return [*self.critic_a.parameters(), *self.critic_b.parameters()]

    def critic_loss(self, a: torch.Tensor, b: torch.Tensor, weights: GanWeights) -> torch.Tensor:
        """Wasserstein loss of both critics with gradient penalty (generators frozen)."""
        with torch.no_grad():
            fake_b, fake_a = self.ab(a), self.ba(b)
        loss = self.critic_b(fake_b).mean() - self.critic_b(b).mean()
        loss = loss + self.critic_a(fake_a).mean() - self.critic_a(a).mean()
        return loss + weights.gp * (
            gradient_penalty(self.critic_b, b, fake_b) + gradient_penalty(self.critic_a, a, fake_a)
        )

    def generator_loss(
        self, a: torch.Tensor, b: torch.Tensor, weights: GanWeights
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Adversarial + cycle + identity loss of both generators.

        Returns
        -------
        loss : Tensor
        parts : dict
            ``adv``, ``cycle``, ``idt`` (detached) and ``fake_b`` (``ab(a)``, with graph) so that a
            caller can add a supervised loss on it without a second forward pass.
        """
        fake_b, fake_a = self.ab(a), self.ba(b)
        adv = -self.critic_b(fake_b).mean() - self.critic_a(fake_a).mean()
        cycle = F.l1_loss(self.ba(fake_b), a) + F.l1_loss(self.ab(fake_a), b)
        loss = adv + weights.cycle * cycle
        idt = torch.zeros((), device=a.device)
        if weights.identity > 0:
            idt = F.l1_loss(self.ab(b), b) + F.l1_loss(self.ba(a), a)
            loss = loss + weights.cycle * weights.identity * idt
        return loss, {"adv": adv.detach(), "cycle": cycle.detach(), "idt": idt.detach(), "fake_b": fake_b}


def requires_grad(modules: list[nn.Module], flag: bool) -> None:
    """Freeze or unfreeze parameters (critics are frozen while generators step)."""
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(flag)
