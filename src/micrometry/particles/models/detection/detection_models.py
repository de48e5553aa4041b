"""``maskrcnn`` and ``cascade-maskrcnn``: the seed's detector family in plain PyTorch (registry entries).

No torchvision: the detector is :mod:`micrometry.particles.models.detection`
(own FPN backbone, anchors and RPN, tensor-only NMS, RoIAlign via
``grid_sample``, box and mask heads, mask pasting at full resolution). Both
train through the shared loop on the dense models' augmented crops
(:class:`~.detection_task.MaskRCNNTask`) and predict through the shared
tiling (:class:`~.detector_segmenter.DetectorSegmenter`).
``cascade-maskrcnn`` adds two box stages trained at IoU 0.6 and 0.7.
"""

from __future__ import annotations

from micrometry.errors import CheckpointError, InputError
from micrometry.modelfile import ExportedModel
from micrometry.particles.models.base import PARTICLE_MODELS, ParticleModel
from micrometry.particles.models.data import LabelledImage
from micrometry.particles.models.detection.detection_task import MaskRCNNTask
from micrometry.particles.models.detection.detector_segmenter import DetectorSegmenter
from micrometry.particles.models.detection.maskrcnn import MaskRCNN, MaskRCNNConfig
from micrometry.particles.models.training import TrainSettings


class DetectorModel(ParticleModel):
    """A Mask R-CNN family member: exports the detector's weights, its configuration and the scale."""

    settings_keys = ("scale", "config")
    modules = ("maskrcnn",)
    #: IoU for positives of each box stage (one stage: Mask R-CNN)
    stage_ious: tuple[float, ...] = (0.5,)

    def build_task(self, settings: TrainSettings, train: list[LabelledImage], val: list[LabelledImage]):
        return MaskRCNNTask(settings, train, val, MaskRCNNConfig(stage_ious=list(self.stage_ious)))

    def segmenter(
        self, exported: ExportedModel | None, scale: float | None = None, tile: int | None = None
    ) -> DetectorSegmenter:
        if exported is None:
            raise CheckpointError(
                f"model {self.name!r} needs trained weights: train a run with "
                f"'micrometry particles train COCO_DIR --model {self.name} --out RUN'"
            )
        if scale is not None and not 0.05 <= scale <= 2.0:
            raise InputError(f"--scale must be between 0.05 and 2, not {scale}")
        try:
            model = MaskRCNN(MaskRCNNConfig(**exported.settings["config"]))
            model.load_state_dict(exported.state["modules"]["maskrcnn"])
            trained_scale = float(exported.settings["scale"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"weights do not fit model {self.name!r} ({type(exc).__name__})", exported.source
            ) from None
        kwargs = {} if tile is None else {"tile": tile}
        segmenter = DetectorSegmenter(model, scale=scale or trained_scale, **kwargs)
        segmenter.name = self.name
        return segmenter


@PARTICLE_MODELS.register("maskrcnn")
class MaskRCNNModel(DetectorModel):
    name = "maskrcnn"


@PARTICLE_MODELS.register("cascade-maskrcnn")
class CascadeMaskRCNNModel(DetectorModel):
    name = "cascade-maskrcnn"
    stage_ious = (0.5, 0.6, 0.7)
