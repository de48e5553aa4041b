"""``micrometry particles quantize``: give a trained dense model its int8 network.

The calibration images should look like what the model will predict: a run's own training
images by default. Each is segmented once by the float model (sizing passes included) and
the network inputs that pass produces set the int8 activation ranges
(:mod:`micrometry.particles.models.dense.quantized`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from micrometry.errors import InputError
from micrometry.modelfile import is_model_folder
from micrometry.particles.models.dense.dense_segmenter import DenseSegmenter, dense_segmenter
from micrometry.particles.models.dense.quantized import (
    FILE,
    capture_inputs,
    evenly,
    fingerprint,
    quantize_network,
)


def calibration_paths(model: str | Path, images: str | Path | None = None) -> list[Path]:
    """Up to 8 calibration images, spread over ``images`` or, by default, a run's training images.

    ``images``: a folder of images, an image list (``.txt``), one image, or training data of
    any layout ``particles train`` reads.

    Raises
    ------
    InputError
        No ``images`` for an exported model folder (it does not keep its training data), or none found.
    """
    from micrometry.io.image import list_images
    from micrometry.particles.training_data import load_training_set
    from micrometry.train.run import RunDir

    if images is None:
        if is_model_folder(model):
            raise InputError(f"{model}: an exported model keeps no training images: give --images")
        images = RunDir.existing(model).read_config().get("data")
        if not isinstance(images, str) or not Path(images).exists():
            raise InputError(f"{model}: the run's training data is gone ({images}): give --images")
    images = Path(images)
    found = list_images(images)
    if not found and images.is_dir():  # training data: images/ beside annotations, masks or ROI sets
        dataset = load_training_set(images)
        found = [dataset.image_path(im.id) for im in dataset.images]
    if not found:
        raise InputError(f"{images}: no images to calibrate on")
    return evenly(found)


def quantize_model(model: str | Path, images: Sequence[np.ndarray]) -> Path:
    """Write ``MODEL/network.int8.onnx``, calibrated on ``images``; returns its path.

    Parameters
    ----------
    model : path
        A dense particle model: an exported model folder or a run folder.
    images : sequence of ndarray
        2-D gray images like those the model will predict (up to
        :data:`~micrometry.particles.models.dense.quantized.CALIBRATION_IMAGES` are used).

    Raises
    ------
    InputError
        Not a dense model (the watershed and Mask R-CNN models have no int8 network), or no images.
    CheckpointError
        Not a usable model or run folder.
    """
    from micrometry.particles.models.base import export_run, read_particle_model

    model = Path(model)
    exported = read_particle_model(model) if is_model_folder(model) else export_run(model)
    if "net" not in exported.state.get("modules", {}):
        raise InputError(f"{model}: model {exported.model!r} is not a dense model; only those are quantized")
    if not images:
        raise InputError(f"{model}: quantizing needs at least one calibration image")
    segmenter: DenseSegmenter = dense_segmenter(exported, int8=False)
    inputs = capture_inputs(segmenter.net, lambda: [segmenter.segment(image) for image in evenly(images)])
    return quantize_network(
        segmenter.net, fingerprint(exported.state["modules"]["net"]), inputs, model / FILE
    )
