"""A trained detector as a segmenter: image in, instance labels (full resolution) out.

The image is normalised and resized by ``scale`` like the dense models' input;
images larger than a tile are cut into overlapping tiles (the same spans as
the dense models' tiling, :func:`~micrometry.particles.models.tiling.tile_spans`)
and each tile keeps the detections whose box centre lies in its own part, so a
particle on a tile border is found once. Boxes are scaled back to the image and
masks pasted at its full resolution.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from micrometry.particles.models.detection.maskrcnn import MaskRCNN
from micrometry.particles.models.detection.paste import paint_instances
from micrometry.particles.models.preprocess import normalise_image, resize
from micrometry.particles.models.tiling import tile_spans


def pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad ``(B, C, H, W)`` up to multiples of ``multiple`` (no mirrored particles)."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple), mode="replicate")


class DetectorSegmenter:
    """Segment particles with a :class:`MaskRCNN`.

    Parameters
    ----------
    model : MaskRCNN
    scale : float
        Network resolution relative to the image.
    tile, overlap : int
        Tile side and overlap in network pixels (the overlap should exceed the
        largest particle).
    mask_threshold : float
        Pasted mask probability above which a pixel belongs to a particle.
    """

    name = "maskrcnn"

    def __init__(
        self,
        model: MaskRCNN,
        scale: float = 0.5,
        tile: int = 768,
        overlap: int = 128,
        mask_threshold: float = 0.5,
        device: str | torch.device = "cpu",
    ):
        self.model = model.to(device).eval()
        self.scale = float(scale)
        self.tile = int(tile)
        self.overlap = min(int(overlap), self.tile // 2)
        self.mask_threshold = mask_threshold
        self.device = torch.device(device)

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """Boxes ``(K, 4)`` in image pixels, scores ``(K,)`` and mask probabilities ``(K, M, M)``."""
        small = torch.from_numpy(resize(normalise_image(image), self.scale))[None, None]
        h, w = small.shape[-2:]
        m = self.model.multiple
        rows, cols = tile_spans(h, self.tile, self.overlap, m), tile_spans(w, self.tile, self.overlap, m)
        boxes, scores, masks = [], [], []
        for r0, r1, keep_r0, keep_r1 in rows:
            for c0, c1, keep_c0, keep_c1 in cols:
                crop = pad_to(small[..., r0:r1, c0:c1], self.model.multiple).to(self.device)
                out = self.model(crop)[0]
                b = out["boxes"].cpu()
                b = torch.stack(
                    [
                        b[:, 0].clamp(max=c1 - c0),
                        b[:, 1].clamp(max=r1 - r0),
                        b[:, 2].clamp(max=c1 - c0),
                        b[:, 3].clamp(max=r1 - r0),
                    ],
                    1,
                )
                b = b + torch.tensor([c0, r0, c0, r0], dtype=b.dtype)
                cy, cx = (b[:, 1] + b[:, 3]) / 2, (b[:, 0] + b[:, 2]) / 2
                own = (cy >= keep_r0) & (cy < keep_r1) & (cx >= keep_c0) & (cx < keep_c1)
                boxes.append(b[own])
                scores.append(out["scores"].cpu()[own])
                masks.append(out["masks"].cpu()[own])
        full_boxes = torch.cat(boxes) / self.scale  # network pixels -> image pixels (pixel-edge coordinates)
        return full_boxes.numpy(), torch.cat(scores).numpy(), torch.cat(masks)

    def segment_labels(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels ``(H, W)`` int32, scores ``(N,)`` float32) for one gray image."""
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"expected a 2-D gray image, got shape {image.shape}")
        boxes, scores, masks = self.detect(image)
        # A particle must keep a few pixels of its own (hidden ones would be spurious instances).
        return paint_instances(masks, boxes, scores, image.shape, self.mask_threshold, min_area=4)

    def segment(self, image: np.ndarray):
        from micrometry.particles.segmenter import Instances

        labels, scores = self.segment_labels(image)
        return Instances(labels=labels, scores=scores)

    def segment_batch(self, images: list[np.ndarray]) -> list:
        return [self.segment(image) for image in images]
