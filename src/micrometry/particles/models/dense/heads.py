"""The dense instance models: what each predicts, how it learns, how it decodes.

A method is the part of a model that is not the network: the target maps it
learns from a label image, its loss, how raw network outputs become maps, and
how the maps become instances. Both methods share :class:`~.unet.UNet`.

``unet-watershed``
    foreground, boundary and a per-particle normalised distance; instances by
    marker-controlled watershed (markers = distance cores).
``center-offset`` (the default)
    foreground, a centre heat map and, for every pixel, the offset vector to its
    particle's centroid (Panoptic-DeepLab / spatial embeddings, Neven et al.
    2019, without the learned margin); instances by letting every foreground
    pixel vote for a centre. Touching and overlapping particles separate as
    long as their centres do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from micrometry.particles.models.dense import decode, target_maps

# Offsets are regressed in units of this many (network) pixels: keeps outputs near 1.
OFFSET_UNIT = 16.0


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss on probabilities; robust to the fore/background imbalance."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + 1.0) / (prob.sum() + target.sum() + 1.0)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def centre_focal_loss(logits: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss: one positive pixel per particle centre."""
    prob = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = heat >= 1.0
    pos_loss = -((1 - prob) ** 2 * torch.log(prob))[positive].sum()
    neg_loss = -((1 - heat) ** 4 * prob**2 * torch.log(1 - prob))[~positive].sum()
    return (pos_loss + neg_loss) / positive.sum().clamp(min=1)


#: center-offset: instances scoring below this are not reported (``method_config`` ``min_score``).
MIN_SCORE = 0.5


class DenseMethod:
    """Interface shared by the dense models (see the module docstring)."""

    name: str
    channels: int
    #: channels holding (dy, dx) vectors: flipped images negate them, resizing scales them
    vector_channels: tuple[int, int] | None = None

    def __init__(self, **config: Any):
        self.config = config

    def init_head(self, head: torch.nn.Conv2d) -> None:
        """Initialise the network's last layer (e.g. a prior for rare positives)."""

    def targets(self, labels: np.ndarray) -> np.ndarray:
        """``(T, H, W)`` float32 targets for one label image."""
        raise NotImplementedError

    def loss(self, raw: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its parts for a batch of raw outputs ``(B, C, H, W)``."""
        raise NotImplementedError

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw outputs to maps: probabilities, and vectors in network pixels."""
        raise NotImplementedError

    def decode(
        self, maps: np.ndarray, shape: tuple[int, int], scale: float, stats: dict | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Maps at network resolution to (labels, scores) at the image's ``shape``.

        ``scale`` is network pixels per image pixel (for sizes given in image pixels);
        ``stats``, when given, receives the decoder's counts (``candidates``, ``below_score``).
        """
        raise NotImplementedError

    def min_area(self, scale: float) -> int:
        """Smallest instance kept, in image pixels (a few network pixels)."""
        return max(4, int(round(self.config.get("min_area_net", 6) / scale**2)))


class UNetWatershed(DenseMethod):
    name = "unet-watershed"
    channels = 3  # foreground, boundary, normalised distance

    def targets(self, labels: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                target_maps.foreground(labels),
                target_maps.boundaries(labels),
                target_maps.normalised_distance(labels),
            ]
        )

    def loss(self, raw, target):
        fg, boundary, distance = target[:, 0], target[:, 1], target[:, 2]
        fg_loss = F.binary_cross_entropy_with_logits(raw[:, 0], fg) + dice_loss(raw[:, 0], fg)
        boundary_loss = F.binary_cross_entropy_with_logits(raw[:, 1], boundary, pos_weight=torch.tensor(3.0))
        distance_loss = masked_mean((torch.sigmoid(raw[:, 2]) - distance) ** 2, fg) * 5.0
        total = fg_loss + boundary_loss + distance_loss
        return total, {
            "loss": total.item(),
            "fg": fg_loss.item(),
            "boundary": boundary_loss.item(),
            "distance": distance_loss.item(),
        }

    def activate(self, raw):
        return torch.sigmoid(raw)

    def decode(self, maps, shape, scale, stats=None):
        return decode.watershed_from_maps(
            maps[0],
            maps[1],
            maps[2],
            shape,
            fg_threshold=self.config.get("fg_threshold", 0.5),
            marker_threshold=self.config.get("marker_threshold", 0.5),
            min_area=self.min_area(scale),
        )


class CenterOffset(DenseMethod):
    name = "center-offset"
    channels = 4  # foreground, centre heat, dy, dx
    vector_channels = (2, 3)

    def init_head(self, head):
        # CenterNet's prior: centres are rare, start the heat map near 0.01 so
        # that the focal loss does not begin with a flood of false positives.
        with torch.no_grad():
            head.bias[1] = -4.6

    def targets(self, labels: np.ndarray) -> np.ndarray:
        offsets, heat = target_maps.centre_offsets_and_heat(labels)
        return np.concatenate([target_maps.foreground(labels)[None], heat[None], offsets / OFFSET_UNIT])

    def loss(self, raw, target):
        fg, heat, offsets = target[:, 0], target[:, 1], target[:, 2:4]
        fg_loss = F.binary_cross_entropy_with_logits(raw[:, 0], fg) + dice_loss(raw[:, 0], fg)
        heat_loss = centre_focal_loss(raw[:, 1], heat)
        offset_error = F.smooth_l1_loss(raw[:, 2:4], offsets, reduction="none", beta=0.1).sum(dim=1)
        offset_loss = masked_mean(offset_error, fg) * 2.0
        total = fg_loss + heat_loss + offset_loss
        return total, {
            "loss": total.item(),
            "fg": fg_loss.item(),
            "heat": heat_loss.item(),
            "offset": offset_loss.item(),
        }

    def activate(self, raw):
        return torch.cat([torch.sigmoid(raw[:, :2]), raw[:, 2:4] * OFFSET_UNIT], dim=1)

    def decode(self, maps, shape, scale, stats=None):
        return decode.instances_from_centres(
            maps[0],
            maps[1],
            maps[2:4],
            shape,
            peak_radius=self.config.get("peak_radius_net", 3),
            peak_threshold=self.config.get("peak_threshold", 0.1),
            fg_threshold=self.config.get("fg_threshold", 0.5),
            min_area=self.min_area(scale),
            # the score is built so that true particles stay above 0.5, where matching counts them;
            # below it are the faint pieces a real image's texture and debris leave behind
            min_score=self.config.get("min_score", MIN_SCORE),
            stats=stats,
        )
