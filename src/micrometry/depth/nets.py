"""Small plain-PyTorch networks for 72x48 SEM images (no torchvision here).

:class:`HoleUNet` predicts a height map the way the structures are made: a
*shape* ``s`` in [0, 1] per pixel (1 = top surface, 0 = hole bottom) from a
U-Net decoder, and one *etch depth* ``D`` per image from pooled encoder
features plus the image's brightness statistics (brightness carries depth:
deeper holes image darker). The height map is ``bottom + D * s``. Splitting the
two lets weak labels (a site's average depth) supervise ``D`` directly, and the
flat top is exactly flat.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions with BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Encoder(nn.Module):
    """Three resolutions, each half the previous one.

    With ``unshuffle=2`` the image is first folded into 4 channels at 36x24
    (pixel unshuffle): a quarter of the work at full resolution, which is what
    makes CPU inference fast, with no pixel thrown away.
    """

    def __init__(self, width: int = 12, unshuffle: int = 2):
        super().__init__()
        w = width
        self.unshuffle = unshuffle
        self.enc1 = conv_block(unshuffle**2, w)
        self.enc2 = conv_block(w, 2 * w)
        self.enc3 = conv_block(2 * w, 4 * w)
        self.pool = nn.MaxPool2d(2)
        self.channels = (w, 2 * w, 4 * w)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.unshuffle > 1:
            x = nn.functional.pixel_unshuffle(x, self.unshuffle)
        f1 = self.enc1(x)
        f2 = self.enc2(self.pool(f1))
        f3 = self.enc3(self.pool(f2))
        return f1, f2, f3


def image_statistics(x: torch.Tensor) -> torch.Tensor:
    """Per-image brightness statistics, ``(B, 5)``: mean, standard deviation, and the darkest,
    brightest and median 4x4 block means (the hole floor, the rim glow, the top; block means
    are robust to noise and much cheaper than pixel quantiles)."""
    flat = x.flatten(1)
    blocks = nn.functional.avg_pool2d(x, 4).flatten(1)
    return torch.stack(
        [flat.mean(1), flat.std(1), blocks.amin(1), blocks.amax(1), blocks.median(1).values], dim=1
    )


def top_level(x: torch.Tensor) -> torch.Tensor:
    """Where the flat top surface's brightness lies in each image, ``(B,)``: the median 4x4 block
    (the top, see :class:`HoleUNet`'s ``centre``) minus the mean, over the standard deviation.

    It is a brightness statistic that reads geometry: the more of the crop a hole's bright walls take
    (a smaller, more tapered hole), the further the top sinks below the image's mean.
    """
    stats = image_statistics(x)
    return (stats[:, 4] - stats[:, 0]) / (stats[:, 1] + 1e-3)


class SmallUNet(nn.Module):
    """The :class:`Encoder` and a two-level decoder with skip connections, shared by the depth
    networks; subclasses add their heads on :meth:`encode_decode`'s features."""

    def __init__(self, width: int, unshuffle: int):
        super().__init__()
        self.encoder = Encoder(width, unshuffle)
        w1, w2, w3 = self.encoder.channels
        self.up3 = nn.ConvTranspose2d(w3, w2, 2, stride=2)
        self.dec2 = conv_block(2 * w2, w2)
        self.up2 = nn.ConvTranspose2d(w2, w1, 2, stride=2)
        self.dec1 = conv_block(2 * w1, w1)

    def encode_decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder's full-resolution features ``(B, width, ...)`` and the encoder's two lower levels."""
        f1, f2, f3 = self.encoder(x)
        d2 = self.dec2(torch.cat([self.up3(f3), f2], dim=1))
        return self.dec1(torch.cat([self.up2(d2), f1], dim=1)), f2, f3


class HoleUNet(SmallUNet):
    """U-Net shape head and pooled depth head; maps images in [0, 1] to heights in nm.

    Parameters
    ----------
    width : int
        Channels at the first level (doubled at each of the two lower levels).
    unshuffle : int
        Fold the image into ``unshuffle**2`` channels first (see :class:`Encoder`).
    bottom : float
        Height of the hole bottom (30 in the competition's depth maps).
    depth_prior : float
        Centre of the depth head's output (nm), so training starts near typical depths.
    normalize : bool
        Standardise each image (zero mean, unit variance) before the encoder. The
        shape is geometry and should not depend on a tool's gain and offset; the
        depth head still gets the raw brightness statistics, where the depth is.
    centre : str
        What the standardisation subtracts: ``"mean"``, the image mean, or ``"median"``, the median
        4x4 block mean, which lies on the flat top surface whenever it is the image's middle
        brightness, however large or bright the hole (the mean moves with both).
    """

    def __init__(
        self,
        width: int = 12,
        unshuffle: int = 2,
        bottom: float = 30.0,
        depth_prior: float = 125.0,
        normalize: bool = True,
        centre: str = "mean",
    ):
        if centre not in ("mean", "median"):
            raise ValueError(f"centre must be 'mean' or 'median', got {centre!r}")
        super().__init__(width, unshuffle)
        self.bottom = bottom
        self.normalize = normalize
        self._centre = 0 if centre == "mean" else 4  # its column in image_statistics
        self.depth_prior = depth_prior
        w1, w2, w3 = self.encoder.channels
        self.shape_out = nn.Conv2d(w1, unshuffle**2, 1)  # pixel shuffle back to full resolution
        # BatchNorm first: the depth signal is in small brightness differences between images.
        self.depth_head = nn.Sequential(
            nn.BatchNorm1d(w3 + w2 + 5), nn.Linear(w3 + w2 + 5, 64), nn.ReLU(inplace=True), nn.Linear(64, 1)
        )

    def forward_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``shape`` (B, 1, H, W) in [0, 1] and ``depth`` (B,) in nm."""
        shape, depth, _ = self.forward_features(x)
        return shape, depth

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``shape``, ``depth`` and the depth head's input ``(B, 3 * width + 5)``: pooled encoder
        features and brightness statistics, which describe how an image looks (used to tell
        images unlike the training data)."""
        stats = image_statistics(x)
        if self.normalize:
            x = (x - stats[:, self._centre, None, None, None]) / (stats[:, 1, None, None, None] + 1e-3)
        d1, f2, f3 = self.encode_decode(x)
        shape = torch.sigmoid(nn.functional.pixel_shuffle(self.shape_out(d1), self.encoder.unshuffle))
        pooled = torch.cat([f3.mean((2, 3)), f2.mean((2, 3)), stats], dim=1)
        depth = self.depth_prior + 20.0 * self.depth_head(pooled).squeeze(1)
        return shape, depth, pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, depth = self.forward_parts(x)
        return self.bottom + depth.view(-1, 1, 1, 1) * shape


class CaseNet(nn.Module):
    """A small CNN classifier of the four cases (etch depths) from one SEM image."""

    def __init__(self, width: int = 12, n_classes: int = 4, unshuffle: int = 2):
        super().__init__()
        self.encoder = Encoder(width, unshuffle)
        w1, w2, w3 = self.encoder.channels
        self.head = nn.Sequential(
            nn.BatchNorm1d(w3 + w2 + 5),
            nn.Linear(w3 + w2 + 5, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, f2, f3 = self.encoder(x)
        return self.head(torch.cat([f3.mean((2, 3)), f2.mean((2, 3)), image_statistics(x)], dim=1))


def fused_for_inference(module: nn.Module) -> nn.Module:
    """An eval-mode copy of ``module`` with every Conv2d+BatchNorm2d pair folded into one Conv2d,
    its weights in channels-last memory order.

    Same outputs (up to float rounding), fewer passes over memory: CPU inference is faster
    (docs/benchmarks.md).
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(module).eval()

    def fold(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.Sequential):
                layers = list(child)
                for i in range(len(layers) - 1):
                    if isinstance(layers[i], nn.Conv2d) and isinstance(layers[i + 1], nn.BatchNorm2d):
                        layers[i], layers[i + 1] = fuse_conv_bn_eval(layers[i], layers[i + 1]), nn.Identity()
                setattr(parent, name, nn.Sequential(*layers))
            else:
                fold(child)

    fold(fused)
    return fused.to(memory_format=torch.channels_last)
