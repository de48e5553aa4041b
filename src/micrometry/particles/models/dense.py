"""A trained dense model as a segmenter: image in, instance labels out.

The image is normalised, resized by ``scale`` (the network works at reduced
resolution for speed) and predicted in overlapping tiles (optionally with flip
test-time augmentation); the method's decoder finds the instances on the maps
and draws them at the image's own resolution, with smooth outlines.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from micrometry.errors import CheckpointError, InputError
from micrometry.particles.models.base import particle_model
from micrometry.particles.models.methods import DenseMethod
from micrometry.particles.models.preprocess import normalise_image, resize
from micrometry.particles.models.tiling import flip_tta, predict_tiled
from micrometry.particles.models.unet import UNet
from micrometry.modelfile import ExportedModel

CHECKPOINT_KIND = "particles-dense"


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

    #: flip TTA averages the maps (:mod:`micrometry.particles.tta` sets ``tta``)
    supports_map_flips = True

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
    method_class = getattr(particle_model(model), "method", None)  # the registry entry names its head
    if method_class is None:
        raise InputError(f"particle model {model!r} is not a dense model")
    method = method_class()
    net = UNet(method.channels, tuple(widths))
    method.init_head(net.head)
    return method, net


def model_payload(model: str, widths: tuple[int, ...], scale: float, method_config: dict[str, Any]) -> dict:
    """What every checkpoint stores so that it alone rebuilds the segmenter."""
    return {"kind": CHECKPOINT_KIND, "model": model, "widths": list(widths), "scale": scale,
            "method_config": method_config}


def dense_segmenter(exported: ExportedModel, scale: float | None = None, tile: int | None = None,
                    tta: bool = False, device: str | torch.device = "cpu") -> DenseSegmenter:
    """Rebuild a :class:`DenseSegmenter` from an exported model (a folder, or a run exported in memory).

    Raises
    ------
    CheckpointError
        Settings or weights that do not fit the model.
    """
    if scale is not None and not 0.05 <= scale <= 2.0:
        raise InputError(f"--scale must be between 0.05 and 2, not {scale}")
    settings, where = exported.settings, exported.source
    try:
        method, net = build_network(exported.model, tuple(int(w) for w in settings["widths"]))
        method.config.update(settings.get("method_config", {}))
        net.load_state_dict(exported.state["modules"]["net"])
        trained_scale = float(settings["scale"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"weights do not fit model {exported.model!r} ({type(exc).__name__})",
                              where) from None
    kwargs = {} if tile is None else {"tile": tile}
    return DenseSegmenter(method, net, scale=scale or trained_scale, tta=tta, device=device, **kwargs)
