"""``maskrcnn``: torchvision's Mask R-CNN (MobileNetV3-FPN, from scratch), an optional backend.

The seed's model family, kept for comparison. It needs a torchvision build that
matches the installed torch (``pip install 'micrometry[maskrcnn]'`` on a GPU
machine, or a CPU install from the PyTorch index). Where torchvision is missing
or unusable (this project's CPU torch wheel: ``operator torchvision::nms does
not exist``), every entry point fails with one clear line instead.

Training reuses the shared crops, augmentation and validation; prediction
runs on the whole (rescaled) image, without tiling or flip TTA.
"""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np
import torch

from micrometry.errors import CheckpointError, InputError
from micrometry.modelfile import ExportedModel
from micrometry.particles.models.base import PARTICLE_MODELS, ParticleModel
from micrometry.particles.models.data import CropBatches, LabelledImage
from micrometry.particles.models.preprocess import normalise_image, resize
from micrometry.particles.models.training import ParticleTrainTask, TrainSettings
from micrometry.train.loop import clipped_step

CHECKPOINT_KIND = "particles-maskrcnn"


def torchvision_problem() -> str | None:
    """None when torchvision imports and its compiled ops run; else the reason, in one line."""
    try:
        import torchvision  # noqa: F401
        from torchvision.ops import nms

        nms(torch.zeros((1, 4)), torch.zeros(1), 0.5)
    except Exception as exc:  # ImportError, RuntimeError (missing operators), OSError (libraries)
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None


def require_torchvision() -> None:
    """Raise a one-line :class:`InputError` (exit code 2) when torchvision is unusable."""
    problem = torchvision_problem()
    if problem is not None:
        raise InputError(f"model 'maskrcnn' needs torchvision built for torch {torch.__version__} "
                         f"(pip install 'micrometry[maskrcnn]'); here it is unusable: {problem}")


def build_maskrcnn(detections: int = 300) -> torch.nn.Module:
    """Mask R-CNN with a MobileNetV3-large FPN backbone, no pretrained weights, two classes."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import mobilenet_backbone

    # From scratch: trainable batch norm (torchvision's default freezes it for pretrained
    # weights), and FPN levels at strides 4-32 (stages 1-4) for particles of 8-100 px.
    backbone = mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True,
                                  norm_layer=torch.nn.BatchNorm2d, trainable_layers=6, returned_layers=[1, 2, 3, 4])
    anchors = AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 5)
    return MaskRCNN(backbone, num_classes=2, rpn_anchor_generator=anchors, box_detections_per_img=detections,
                    box_nms_thresh=0.3, box_score_thresh=0.05, image_mean=[0.5] * 3, image_std=[0.25] * 3)


def _keep_size(model: torch.nn.Module, h: int, w: int) -> None:
    """Make torchvision's transform leave the image at its size (we rescale ourselves)."""
    model.transform.min_size = (min(h, w),)
    model.transform.max_size = max(h, w)


def detection_targets(labels: np.ndarray) -> dict[str, torch.Tensor]:
    """Boxes, classes and masks of a crop's label image, in torchvision's format."""
    ids = [i for i in np.unique(labels) if i > 0]
    masks = np.stack([labels == i for i in ids]) if ids else np.zeros((0, *labels.shape), bool)
    masks = masks[masks.sum(axis=(1, 2)) >= 4]
    boxes = np.zeros((len(masks), 4), np.float32)
    for k, m in enumerate(masks):
        rows, cols = np.nonzero(m)
        boxes[k] = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    return {"boxes": torch.from_numpy(boxes), "labels": torch.ones(len(masks), dtype=torch.int64),
            "masks": torch.from_numpy(masks.astype(np.uint8))}


class MaskRCNNSegmenter:
    """Segment with a trained Mask R-CNN; higher-scoring masks are painted on top."""

    name = "maskrcnn"

    def __init__(self, model: torch.nn.Module, scale: float = 0.5, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.scale = float(scale)
        self.device = torch.device(device)

    @torch.inference_mode()
    def segment_labels(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        small = resize(normalise_image(image), self.scale)
        _keep_size(self.model, *small.shape)
        x = torch.from_numpy(small)[None].expand(3, -1, -1).to(self.device)
        out = self.model([x])[0]
        order = torch.argsort(out["scores"]).cpu().numpy()  # ascending: the best is painted last
        masks = (out["masks"][:, 0] > 0.5).cpu().numpy()
        scores = out["scores"].cpu().numpy()
        labels = np.zeros(small.shape, np.int32)
        for rank, k in enumerate(order, start=1):
            labels[masks[k]] = rank
        ranked = scores[order]
        present = np.zeros(len(order) + 1, bool)
        present[np.unique(labels)] = True
        present[0] = False
        new_id = np.zeros(len(order) + 1, np.int32)
        new_id[present] = np.arange(1, int(present.sum()) + 1)
        labels = new_id[labels]
        full = cv2.resize(labels.astype(np.float32), image.shape[::-1], interpolation=cv2.INTER_NEAREST)
        return full.astype(np.int32), ranked[present[1:]].astype(np.float32)

    def segment(self, image: np.ndarray):
        from micrometry.particles.segmenter import Instances

        labels, scores = self.segment_labels(image)
        return Instances(labels=labels, scores=scores)

    def segment_batch(self, images: list[np.ndarray]) -> list:
        return [self.segment(image) for image in images]


class MaskRCNNTrainTask(ParticleTrainTask):
    """Mask R-CNN on the same augmented crops as the dense models."""

    def __init__(self, settings: TrainSettings, train: list[LabelledImage], val: list[LabelledImage]):
        require_torchvision()
        super().__init__(settings, train, val)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = build_maskrcnn().to(self.device)
        self.modules = {"maskrcnn": self.model}
        self.base_lr = min(settings.lr, 1e-3)  # detection heads diverge at the U-Net's rate
        self.optimizers = {"adamw": torch.optim.AdamW(self.model.parameters(), lr=self.base_lr,
                                                      weight_decay=settings.weight_decay)}
        self.schedulers = {}

    def train_batches(self, epoch: int, generator: torch.Generator) -> CropBatches:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        s = self.settings
        return CropBatches(self.train_items, detection_targets, s.steps_per_epoch, s.batch_size, s.crop, seed)

    def train_step(self, batch) -> dict[str, float]:
        started = time.perf_counter()
        self.set_learning_rate()
        images, targets = batch
        _keep_size(self.model, *images.shape[-2:])
        inputs = [im.expand(3, -1, -1).to(self.device) for im in images]
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
        losses = self.model(inputs, targets)
        loss = sum(losses.values())
        clipped_step(loss, self.optimizers["adamw"], self.model.parameters(), 10.0)
        self.steps_done += 1
        self.train_seconds += time.perf_counter() - started
        return {"loss": float(loss), **{k.removeprefix("loss_"): float(v) for k, v in losses.items()}}

    def payload(self) -> dict[str, Any]:
        return {"kind": CHECKPOINT_KIND, "model": "maskrcnn", "scale": self.settings.scale}

    def segmenter(self) -> MaskRCNNSegmenter:
        return MaskRCNNSegmenter(self.model, scale=self.settings.scale, device=self.device)


@PARTICLE_MODELS.register("maskrcnn")
class MaskRCNNModel(ParticleModel):
    """Registry entry: exports the whole Mask R-CNN's weights and the scale."""

    name = "maskrcnn"
    settings_keys = ("scale",)
    modules = ("maskrcnn",)

    def check_available(self) -> None:
        require_torchvision()

    def make_task(self, settings: TrainSettings, train: list[LabelledImage], val: list[LabelledImage]):
        return MaskRCNNTrainTask(settings, train, val)

    def segmenter(self, exported: ExportedModel | None, scale: float | None = None) -> MaskRCNNSegmenter:
        require_torchvision()
        model = build_maskrcnn()
        try:
            model.load_state_dict(exported.state["modules"]["maskrcnn"])
            trained_scale = float(exported.settings["scale"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"weights do not fit model 'maskrcnn' ({type(exc).__name__})",
                                  exported.source) from None
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return MaskRCNNSegmenter(model, scale=scale or trained_scale, device=device)
