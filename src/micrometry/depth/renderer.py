"""A renderer learned from the simulated pairs: height map -> the SEM image the simulator would draw.

Analysis by synthesis for real images. Site averages teach a real image's depth, never its
shape; but whatever shape the network predicts for a real image must *look* like that image
when rendered. The simulator itself is the user's (only its pairs are given), so micrometry
learns it: :class:`SemRenderer` (or :class:`LocalSemRenderer`, which sees each pixel's
neighbourhood only) maps a height map to the expected image of its renders (:func:`fit_renderer`,
a few minutes on the simulated pairs). :func:`render_loss` then compares
a real image with the rendering of the shape predicted for it, up to the tool's gain and offset
(fitted per image) and its sharper or blurrier probe (both low-passed alike): a dip the network
puts into a flat top renders as a mark the image does not have.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from micrometry.depth.augment import gaussian_blur_axis
from micrometry.depth.nets import SmallUNet
from micrometry.progress import track


class SemRenderer(SmallUNet):
    """Height maps ``(B, 1, H, W)`` in nm -> expected SEM brightness in [0, 1], a small U-Net.

    The heights are standardised by the training maps' ``mean`` and ``scale`` (buffers); the image
    comes back at full resolution through a pixel shuffle.
    """

    def __init__(self, width: int = 16, unshuffle: int = 2):
        super().__init__(width, unshuffle)
        self.out = nn.Conv2d(self.encoder.channels[0], unshuffle**2, 1)
        self.register_buffer("mean", torch.tensor(100.0))
        self.register_buffer("scale", torch.tensor(50.0))

    def forward(self, heights: torch.Tensor) -> torch.Tensor:
        d1, _, _ = self.encode_decode((heights - self.mean) / self.scale)
        return nn.functional.pixel_shuffle(self.out(d1), self.encoder.unshuffle)


class LocalSemRenderer(nn.Module):
    """Height maps ``(B, 1, H, W)`` in nm -> expected SEM brightness, from each pixel's
    neighbourhood only (three 3x3 convolutions at half resolution: about 14 px across).

    A secondary-electron image is mostly local: a pixel's brightness follows the slope and the
    depth around it. A renderer that sees no further cannot recognise a whole hole as one of the
    simulated shapes, so on a shape the simulation never drew it still renders each wall and floor
    like the simulated walls and floors of the same slope and depth, where a U-Net can answer
    anything. Same buffers and output as :class:`SemRenderer`.
    """

    def __init__(self, width: int = 32, unshuffle: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.PixelUnshuffle(unshuffle)]
        channels = unshuffle**2
        for _ in range(3):
            layers += [nn.Conv2d(channels, width, 3, padding=1, padding_mode="replicate"), nn.ReLU()]
            channels = width
        layers += [nn.Conv2d(channels, unshuffle**2, 1), nn.PixelShuffle(unshuffle)]
        self.net = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(100.0))
        self.register_buffer("scale", torch.tensor(50.0))

    def forward(self, heights: torch.Tensor) -> torch.Tensor:
        return self.net((heights - self.mean) / self.scale)


#: The renderers :func:`fit_renderer` can learn (``unet`` parameter ``renderer``).
RENDERERS = {"unet": SemRenderer, "local": LocalSemRenderer}


def fit_renderer(
    images: torch.Tensor,
    heights: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    batch_size: int = 64,
    lr: float = 3e-3,
    kind: str = "unet",
) -> nn.Module:
    """A renderer of :data:`RENDERERS` (``kind``) fitted to the simulated pairs ``images`` (renders
    in [0, 1]) and ``heights`` (nm), both ``(N, 1, H, W)``: mean squared error, so it learns each
    map's expected render (the renders' noise averages out), random left-right flips,
    cosine-decayed Adam. Returned frozen, in eval mode."""
    renderer = RENDERERS[kind]().to(images.device)
    renderer.mean.fill_(float(heights.mean()))
    renderer.scale.fill_(float(heights.std()) + 1e-6)
    optimizer = torch.optim.AdamW(renderer.parameters(), lr=lr, weight_decay=1e-4)
    renderer.train()
    for step in track(range(steps), "learning the simulator's renderer"):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / max(steps, 1)))
        idx = torch.randint(0, len(images), (batch_size,), generator=generator).to(images.device)
        x, y = images[idx], heights[idx]
        if bool(torch.rand(1, generator=generator) < 0.5):
            x, y = x.flip(3), y.flip(3)
        loss = nn.functional.mse_loss(renderer(y), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    renderer.eval()
    for p in renderer.parameters():
        p.requires_grad_(False)
    return renderer


def _low_pass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, 1, H, W)``, truncated at 2.5 sigma, with replicated edges."""
    radius = max(1, int(math.ceil(2.5 * sigma)))
    return gaussian_blur_axis(gaussian_blur_axis(x, sigma, 2, radius), sigma, 3, radius)


def render_loss(
    renderer: nn.Module, heights: torch.Tensor, images: torch.Tensor, sigma: float = 1.5
) -> torch.Tensor:
    """How unlike ``images`` (real, in [0, 1]) the renderings of ``heights`` (nm) are, ``(B, 1, H, W)`` each.

    Both are low-passed by a Gaussian of ``sigma`` px (a real probe is wider than the
    simulator's, and noise is not shape); each rendering is mapped to its image by the
    least-squares gain and offset (a tool's detector and the site's drift); the loss is the mean
    absolute difference in units of the image's standard deviation. Gradients flow to ``heights``.
    """
    rendered = _low_pass(renderer(heights), sigma).flatten(1)
    target = _low_pass(images, sigma).flatten(1)
    r = rendered - rendered.mean(1, keepdim=True)
    t = target - target.mean(1, keepdim=True)
    # a negative gain would fit an inverted rendering: never the tool's
    gain = ((r * t).sum(1, keepdim=True) / ((r * r).sum(1, keepdim=True) + 1e-8)).clamp(min=0.0)
    residual = gain * r - t
    return (residual.abs().mean(1) / (t.std(1) + 1e-3)).mean()
