"""A trained dense model as a segmenter: image in, instance labels out.

The image is normalised, resized by ``scale`` (the network works at reduced
resolution for speed) and predicted in overlapping tiles (optionally with flip
test-time augmentation); the method's decoder finds the instances on the maps
and draws them at the image's own resolution, with smooth outlines.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from micrometry.errors import CheckpointError, InputError
from micrometry.modelfile import ExportedModel
from micrometry.particles.models.base import PARTICLE_MODELS
from micrometry.particles.models.conventions import drop_border_instances
from micrometry.particles.models.dense.heads import DenseMethod
from micrometry.particles.models.dense.quantized import QuantizedNetwork, int8_file
from micrometry.particles.models.dense.unet import UNet
from micrometry.particles.models.plausibility import plausibility_warnings
from micrometry.particles.models.preprocess import normalise_image, resize
from micrometry.particles.models.sizing import (
    REFINE_RATIO,
    TILED_GROUP_AGREEMENT,
    check_scale,
    clear_border,
    estimate_diameter,
    fits,
    median_diameter,
    min_area_net,
    probe_window,
    scale_for_diameter,
    tiled_group_diameter,
)
from micrometry.particles.models.tiling import flip_tta, predict_tiled
from micrometry.train.precision import autocast, inference_precision, resolve_precision

CHECKPOINT_KIND = "particles-dense"

# The decoder's counts of the last pass, per thread (segmenters are shared by the web app's threads
# and pickled to Ray actors: the instance holds no such state).
_LAST_DECODE = threading.local()


#: Tile side in network pixels: a 1024 x 1280 image at a scale up to 1 is one pass.
DEFAULT_TILE = 1280


class DenseSegmenter:
    """Segment particles with a U-Net and a :class:`DenseMethod`.

    Parameters
    ----------
    method : DenseMethod
        What the maps mean and how to decode them.
    net : UNet
        The trained network (put in eval mode here).
    scale : float or None
        Network resolution relative to the image (0.5 = half size); None:
        automatic, from each image's particle diameter (needs ``net_diameter``).
    net_diameter : float or None
        The particle diameter (network pixels) the model was trained for, when
        it was trained with automatic size.
    diameter : float or None
        The particles' diameter in image pixels (``--diameter``): fixes the
        scale at ``net_diameter / diameter`` instead of estimating it per image.
    tile, overlap : int
        Tile side and overlap in network pixels. A 1024 x 1280 image at a scale
        up to 1 is one tile: in tiles of 768 (the default until 2026-12-08) the
        overlaps were computed twice, for no less memory
        (:data:`~micrometry.particles.models.tiling.BATCH_PIXELS`).
    tta : bool
        Average the maps over the four flips (about 4x slower).
    precision : str
        The convolutions' arithmetic: ``fp32``, ``bf16`` or ``auto`` (bfloat16 on a CPU
        with AMX; :mod:`micrometry.train.precision`), or ``int8``: the network's quantized
        copy ``quantized`` runs instead (:mod:`.quantized`).
    quantized : Path or None
        The int8 network file (needed for ``precision="int8"``).
    """

    #: flip TTA averages the maps (:mod:`micrometry.particles.tta` sets ``tta``)
    supports_map_flips = True

    def __init__(
        self,
        method: DenseMethod,
        net: UNet,
        scale: float | None = 0.5,
        tile: int = DEFAULT_TILE,
        overlap: int = 64,
        tta: bool = False,
        device: str | torch.device = "cpu",
        net_diameter: float | None = None,
        diameter: float | None = None,
        precision: str = "fp32",
        quantized: Path | None = None,
    ):
        self.method = method
        self.name = method.name
        self.net = net.to(device).eval()
        self.net_diameter = None if net_diameter is None else float(net_diameter)
        if self.net_diameter is not None:  # automatic size: fragments are judged against the trained diameter
            method.config.setdefault("min_area_net", min_area_net(self.net_diameter))
        if diameter is not None:
            if self.net_diameter is None:
                raise InputError(
                    "--diameter needs a model trained with automatic size; "
                    "this one has a fixed scale (use --scale)"
                )
            scale = scale_for_diameter(diameter, self.net_diameter)
        if scale is None and self.net_diameter is None:
            raise InputError("a model without a trained particle diameter needs a scale")
        self.scale = None if scale is None else float(scale)
        self.diameter = diameter
        self.tile = int(tile)
        # Small tiles keep at least half their area as their own contribution.
        self.overlap = min(int(overlap), self.tile // 2)
        self.tta = tta
        self.device = torch.device(device)
        if precision == "int8" and quantized is None:
            raise ValueError("int8 precision needs the quantized network's file")
        self.int8_net = QuantizedNetwork(quantized, self.net.multiple) if precision == "int8" else None
        self.precision = "int8" if self.int8_net is not None else resolve_precision(precision, self.device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.int8_net is not None:
            maps = self.int8_net(x)
        else:
            with autocast(self.precision, self.device):
                maps = self.net(x.to(self.device))
        return self.method.activate(maps.float()).cpu()

    @torch.inference_mode()
    def predict_maps(self, image: np.ndarray, scale: float | None = None) -> np.ndarray:
        """``(C, h, w)`` float32 maps at network resolution (vectors in network pixels)."""
        scale = self.scale if scale is None else scale
        small = torch.from_numpy(resize(normalise_image(image), scale))[None]
        forward = flip_tta(self._forward, self.method.vector_channels) if self.tta else self._forward
        return predict_tiled(forward, small, self.tile, self.overlap, self.net.multiple).numpy()

    def segment_labels(self, image: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(labels ``(H, W)`` int32, scores ``(N,)`` float32) for one gray image.

        ``scale`` overrides the segmenter's; with neither, the scale is estimated
        (:meth:`segment_sized`).
        """
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"expected a 2-D gray image, got shape {image.shape}")
        scale = self.scale if scale is None else scale
        if scale is None:
            return self.segment_sized(image)[:2]
        stats: dict = {}
        found = self.method.decode(self.predict_maps(image, scale), image.shape, scale, stats=stats)
        _LAST_DECODE.stats = stats  # for segment(): how many candidates the last pass dropped as doubtful
        if self.method.config.get("exclude_border"):  # the convention of the annotations it was tuned on
            found = drop_border_instances(*found)
        return found

    def segment_sized(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        """(labels, scores, info): segmented at the scale its own particles ask for.

        ``info`` holds ``diameter_px`` (the median particle diameter found, in image
        pixels; None when nothing was found), ``scale`` and ``diameter_source``.
        """
        image = np.asarray(image)
        if self.scale is not None:
            labels, scores = self.segment_labels(image, self.scale)
            source = "given (--diameter)" if self.diameter is not None else "fixed scale"
            diameter = self.diameter if self.diameter is not None else median_diameter(labels)
            return labels, scores, {"diameter_px": diameter, "scale": self.scale, "diameter_source": source}

        def windowed(scale: float) -> bool:
            return probe_window(image.shape, scale) is not None

        # A refinement in a window would be followed by the whole image at the same scale anyway:
        # the whole pass is the refinement (checked below), one network pass less.
        diameter, scale, result = estimate_diameter(
            lambda s: self._probe(image, s), image.shape, self.net_diameter, refine=lambda s: not windowed(s)
        )
        refined = result is None
        if refined or windowed(scale):  # the last pass saw a window, or none ran: now the whole image
            labels, scores = self.segment_labels(image, scale)
            whole = median_diameter(labels)  # all particles, none cut: the better figure when there is one
            best = scale if whole is None else scale_for_diameter(whole, self.net_diameter)
            if refined and max(best / scale, scale / best) > REFINE_RATIO:  # the window's estimate was off
                scale = best
                labels, scores = self.segment_labels(image, scale)
                whole = median_diameter(labels)
            diameter = whole if whole is not None else diameter
        else:
            labels, scores = result
        source = "estimated"
        larger = self._tiled_particles(image, labels)
        if larger is not None:
            labels, scores, diameter, scale = larger
            source = "estimated (the first estimate's objects tiled larger particles)"
        return labels, scores, {"diameter_px": diameter, "scale": scale, "diameter_source": source}

    def _tiled_particles(self, image: np.ndarray, labels: np.ndarray):
        """``(labels, scores, diameter, scale)`` at the size of the particles ``labels`` tile, or None.

        Texture inside large particles (chromatin in 150-400 px nuclei) is segmented
        at its own size when the size estimate starts from it: the pieces then tile
        touching groups of dozens (:func:`tiled_group_diameter`). One pass at the
        groups' size is kept when it finds particles of about that size that tile
        nothing themselves.
        """
        group = tiled_group_diameter(labels)
        if group is None or not fits(group, image.shape):
            return None
        scale = scale_for_diameter(group, self.net_diameter)
        coarse, scores = self.segment_labels(image, scale)
        diameter = median_diameter(coarse)
        if diameter is None or max(diameter / group, group / diameter) > TILED_GROUP_AGREEMENT:
            return None
        if tiled_group_diameter(coarse) is not None:
            return None
        return coarse, scores, diameter, scale

    def _probe(self, image: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """A sizing pass: the whole image, or on a large one its central window (cut particles left out)."""
        window = probe_window(image.shape, scale)
        if window is None:
            return self.segment_labels(image, scale)
        labels, scores = self.segment_labels(image[window], scale)
        return clear_border(labels), scores

    def segment(self, image: np.ndarray):
        from micrometry.particles.segmenter import Instances

        _LAST_DECODE.stats = {}
        labels, scores, info = self.segment_sized(image)
        info = {k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in info.items()}
        info["precision"] = self.precision
        # the final pass's candidates and those dropped below the minimum score: the reliability
        # verdict's "objects the model doubts" (micrometry.particles.reliability)
        info.update(getattr(_LAST_DECODE, "stats", {}))
        info["warnings"] = plausibility_warnings(
            labels, info.get("diameter_px"), self.net_diameter, info.get("scale")
        )
        return Instances(labels=labels, scores=scores, info=info)

    def segment_batch(self, images: list[np.ndarray]) -> list:
        return [self.segment(image) for image in images]


def build_network(model: str, widths: tuple[int, ...]) -> tuple[DenseMethod, UNet]:
    """A fresh (method, network) pair for a model name."""
    method_class = getattr(PARTICLE_MODELS.create(model), "method", None)  # the registry entry names its head
    if method_class is None:
        raise InputError(f"particle model {model!r} is not a dense model")
    method = method_class()
    net = UNet(method.channels, tuple(widths))
    method.init_head(net.head)
    return method, net


def model_payload(
    model: str,
    widths: tuple[int, ...],
    scale: float | None,
    method_config: dict[str, Any],
    net_diameter: float | None = None,
) -> dict:
    """What every checkpoint stores so that it alone rebuilds the segmenter."""
    return {
        "kind": CHECKPOINT_KIND,
        "model": model,
        "widths": list(widths),
        "scale": scale,
        "method_config": method_config,
        "net_diameter": net_diameter,
    }


def dense_segmenter(
    exported: ExportedModel,
    scale: float | None = None,
    tile: int | None = None,
    tta: bool = False,
    device: str | torch.device = "cpu",
    diameter: float | None = None,
    int8: bool = True,
) -> DenseSegmenter:
    """Rebuild a :class:`DenseSegmenter` from an exported model (a folder, or a run exported in memory).

    ``int8``: predict with the model's int8 network where it has a current one, on a CPU
    (:mod:`.quantized`; ``MICROMETRY_PRECISION`` may still say otherwise); False: the float network.

    Raises
    ------
    CheckpointError
        Settings or weights that do not fit the model.
    """
    if scale is not None:
        check_scale(scale)
    if diameter is not None and not diameter > 0:
        raise InputError(f"--diameter must be a positive number of pixels, not {diameter}")
    if scale is not None and diameter is not None:
        raise InputError("give --scale or --diameter, not both")
    settings, where = exported.settings, exported.source
    try:
        method, net = build_network(exported.model, tuple(int(w) for w in settings["widths"]))
        net.load_state_dict(exported.state["modules"]["net"])
        net_diameter = settings.get("net_diameter")
        net_diameter = None if net_diameter is None else float(net_diameter)
        method.config.update(settings.get("method_config", {}))
        trained_scale = None if net_diameter is not None else float(settings["scale"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"weights do not fit model {exported.model!r} ({type(exc).__name__})", where
        ) from None
    kwargs = {} if tile is None else {"tile": tile}
    # a stale or damaged int8 file is warned about; GPUs keep the PyTorch network
    quantized = int8_file(exported) if int8 and torch.device(device).type == "cpu" else None
    return DenseSegmenter(
        method,
        net.fused(),  # batch norms folded: predicting only
        scale=scale or trained_scale,
        tta=tta,
        device=device,
        net_diameter=net_diameter,
        diameter=diameter,
        precision=inference_precision(device, int8_ready=quantized is not None),
        quantized=quantized,
        **kwargs,
    )
