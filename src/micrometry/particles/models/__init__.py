"""Learned particle models, registered in :data:`~micrometry.particles.segmenter.SEGMENTERS`.

``center-offset`` (the default, shipped trained), ``unet-watershed`` and the
optional ``maskrcnn`` (torchvision). A factory gets ``checkpoint=`` a run's
best checkpoint (see :func:`~micrometry.particles.segmenter.load_segmenter`)
and optional inference settings (``scale``, ``tile``, ``tta``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from micrometry.errors import CheckpointError
from micrometry.particles.segmenter import SEGMENTERS

SHIPPED_CHECKPOINT = "particles_default.pt"
#: the model the shipped checkpoint holds (``segmenter.DEFAULT_MODEL`` names it too)
SHIPPED_MODEL = "center-offset"


def shipped_checkpoint() -> Path:
    """The checkpoint that ships with the package (trained by ``particles train``; see docs)."""
    path = Path(str(resources.files("micrometry") / "assets" / SHIPPED_CHECKPOINT))
    if not path.is_file():
        raise CheckpointError("the shipped default checkpoint is missing from this installation", path)
    return path


def _dense_factory(model: str):
    def make(checkpoint: str | Path | None = None, scale: float | None = None, tile: int | None = None,
             tta: bool = False):
        from micrometry.particles.models.dense import load_dense_segmenter

        if checkpoint is None:
            if model != SHIPPED_MODEL:
                raise CheckpointError(f"model {model!r} has no shipped weights: train a run with "
                                      f"'micrometry particles train COCO_DIR --model {model} --out RUN' "
                                      f"and pass --model RUN")
            checkpoint = shipped_checkpoint()
        return load_dense_segmenter(checkpoint, expected_model=model, scale=scale, tile=tile, tta=tta)

    make.__name__ = f"make_{model.replace('-', '_')}"
    make.__doc__ = f"The {model} segmenter from a checkpoint."
    return make


SEGMENTERS.register("center-offset")(_dense_factory("center-offset"))
SEGMENTERS.register("unet-watershed")(_dense_factory("unet-watershed"))


@SEGMENTERS.register("maskrcnn")
def make_maskrcnn(checkpoint: str | Path | None = None, scale: float | None = None):
    """torchvision's Mask R-CNN from a training run (optional extra ``micrometry[maskrcnn]``)."""
    from micrometry.particles.models.maskrcnn import load_maskrcnn_segmenter, require_torchvision

    require_torchvision()
    if checkpoint is None:
        raise CheckpointError("model 'maskrcnn' has no shipped weights: train a run with "
                              "'micrometry particles train COCO_DIR --model maskrcnn --out RUN' and pass --model RUN")
    return load_maskrcnn_segmenter(checkpoint, scale=scale)
