"""A trained dense model as a segmenter: image in, instance labels out.

The image is normalised, resized by ``scale`` (the network works at reduced
resolution for speed) and predicted in overlapping tiles (optionally with flip
test-time augmentation); the method's decoder finds the instances on the maps
and draws them at the image's own resolution, with smooth outlines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from micrometry.errors import CheckpointError, InputError
from micrometry.particles.models.methods import METHODS, DenseMethod
from micrometry.particles.models.tiling import flip_tta, predict_tiled
from micrometry.particles.models.unet import UNet
from micrometry.train.run import load_checkpoint

CHECKPOINT_KIND = "particles-dense"


def normalise_image(image: np.ndarray) -> np.ndarray:
    """Gray image to float32 with its 0.5th/99.5th percentiles at 0 and 1.

    Done on the whole image (never per tile) so that tiles agree; robust to
    8/16-bit data and to exposure differences between instruments.
    """
    x = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(x[:: max(1, x.shape[0] // 256), :: max(1, x.shape[1] // 256)], [0.5, 99.5])
    return ((x - np.float32(lo)) / np.float32(max(float(hi - lo), 1e-6))).astype(np.float32)


def resize(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize a float image by ``scale`` (area averaging when shrinking)."""
    if scale == 1.0:
        return image
    h, w = image.shape
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def resize_labels(labels: np.ndarray, scale: float) -> np.ndarray:
    """Resize a label image by ``scale`` (nearest neighbour keeps ids intact)."""
    if scale == 1.0:
        return labels
    h, w = labels.shape
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return cv2.resize(labels.astype(np.float32), size, interpolation=cv2.INTER_NEAREST).astype(np.int32)


class DenseSegmenter:
    """Segment particles with a U-Net and a :class:`DenseMethod`.

    Parameters
    ----------
    method : DenseMethod
        What the maps mean and how to decode them.
    net : UNet
        The trained network (put in eval mode here).
    scale : float
        Network resolution relative to the image (0.5 = half size).
    tile, overlap : int
        Tile side and overlap in network pixels.
    tta : bool
        Average the maps over the four flips (about 4x slower).
    """

    def __init__(self, method: DenseMethod, net: UNet, scale: float = 0.5, tile: int = 768,
                 overlap: int = 64, tta: bool = False, device: str | torch.device = "cpu"):
        self.method = method
        self.name = method.name
        self.net = net.to(device).eval()
        self.scale = float(scale)
        self.tile = int(tile)
        # Small tiles keep at least half their area as their own contribution.
        self.overlap = min(int(overlap), self.tile // 2)
        self.tta = tta
        self.device = torch.device(device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.activate(self.net(x.to(self.device))).cpu()

    @torch.inference_mode()
    def predict_maps(self, image: np.ndarray) -> np.ndarray:
        """``(C, h, w)`` float32 maps at network resolution (vectors in network pixels)."""
        small = torch.from_numpy(resize(normalise_image(image), self.scale))[None]
        forward = flip_tta(self._forward, self.method.vector_channels) if self.tta else self._forward
        return predict_tiled(forward, small, self.tile, self.overlap, self.net.multiple).numpy()

    def segment_labels(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels ``(H, W)`` int32, scores ``(N,)`` float32) for one gray image."""
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"expected a 2-D gray image, got shape {image.shape}")
        return self.method.decode(self.predict_maps(image), image.shape, self.scale)

    def segment(self, image: np.ndarray):
        from micrometry.particles.segmenter import Instances

        labels, scores = self.segment_labels(image)
        return Instances(labels=labels, scores=scores)

    def segment_batch(self, images: list[np.ndarray]) -> list:
        return [self.segment(image) for image in images]


def build_network(model: str, widths: tuple[int, ...]) -> tuple[DenseMethod, UNet]:
    """A fresh (method, network) pair for a model name."""
    method = METHODS[model]()
    net = UNet(method.channels, tuple(widths))
    method.init_head(net.head)
    return method, net


def model_payload(model: str, widths: tuple[int, ...], scale: float, method_config: dict[str, Any]) -> dict:
    """What every checkpoint stores so that it alone rebuilds the segmenter."""
    return {"kind": CHECKPOINT_KIND, "model": model, "widths": list(widths), "scale": scale,
            "method_config": method_config}


def load_dense_segmenter(checkpoint: str | Path, expected_model: str | None = None,
                         scale: float | None = None, tile: int | None = None, tta: bool = False,
                         device: str | torch.device = "cpu") -> DenseSegmenter:
    """Rebuild a :class:`DenseSegmenter` from a checkpoint written by ``particles train``.

    Raises
    ------
    CheckpointError
        Corrupt or foreign file, or a checkpoint of another model than ``expected_model``.
    """
    if scale is not None and not 0.05 <= scale <= 2.0:
        raise InputError(f"--scale must be between 0.05 and 2, not {scale}")
    payload = load_checkpoint(checkpoint, map_location="cpu")
    if payload.get("kind") != CHECKPOINT_KIND or payload.get("model") not in METHODS:
        raise CheckpointError("not a particle model checkpoint", checkpoint)
    if expected_model is not None and payload["model"] != expected_model:
        raise CheckpointError(f"checkpoint holds model {payload['model']!r}, not {expected_model!r}", checkpoint)
    method, net = build_network(payload["model"], tuple(payload["widths"]))
    method.config.update(payload.get("method_config", {}))
    try:
        net.load_state_dict(payload["state"]["modules"]["net"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"weights do not fit model {payload['model']!r} ({type(exc).__name__})",
                              checkpoint) from None
    kwargs = {} if tile is None else {"tile": tile}
    return DenseSegmenter(method, net, scale=scale or payload["scale"], tta=tta, device=device, **kwargs)
