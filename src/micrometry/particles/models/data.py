"""Training data for the dense models: COCO images at network scale, random augmented crops.

Images and label images are loaded once, normalised and resized to the
training scale; each step draws random crops from them and augments them with
albumentations (random scale, flips, 90-degree rotations, brightness/contrast,
blur). Targets are computed after augmentation, on the crop's own label image,
so that geometric transforms never have to rotate offset vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import albumentations as A
import cv2
import numpy as np
import torch

from micrometry.errors import DatasetError
from micrometry.io.coco import load_coco
from micrometry.io.image import read_image
from micrometry.particles.models.preprocess import normalise_image, resize, resize_labels
from micrometry.progress import track


@dataclass
class LabelledImage:
    """One image with its instances: ``image`` and ``labels`` at the training scale, ``truth`` at full size."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    full_image: np.ndarray
    truth: np.ndarray


def load_labelled_images(coco_dir: str | Path, scale: float) -> list[LabelledImage]:
    """Every image of a COCO folder (``annotations.json`` + ``images/``) with its label image.

    Raises
    ------
    DatasetError
        No images, or a malformed dataset (from :func:`~micrometry.io.coco.load_coco`).
    """
    dataset = load_coco(coco_dir)
    if not dataset.images:
        raise DatasetError("the dataset has no images", dataset.path)
    if dataset.images_dir is None:
        raise DatasetError("no images folder next to the annotations", dataset.path)
    items = []
    for entry in track(dataset.images, "loading training images"):
        full = read_image(dataset.image_path(entry.id))
        truth = dataset.labels(entry.id)
        items.append(LabelledImage(entry.file_name, resize(normalise_image(full), scale),
                                   resize_labels(truth, scale), full, truth))
    return items


def split_train_val(items: list[LabelledImage], val_fraction: float, seed: int
                    ) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Hold out ``val_fraction`` of the images (at least one) for validation.

    With fewer than five images nothing can be spared: validation then runs on
    the training images and says only whether training converges.
    """
    if len(items) < 5 or val_fraction <= 0:
        return items, items
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = max(1, int(round(val_fraction * len(items))))
    return [items[i] for i in order[n_val:]], [items[i] for i in order[:n_val]]


def augmentation(crop: int) -> A.Compose:
    """Random crop of ``crop`` pixels with scale, flips, rotations, contrast and blur."""
    margin = int(np.ceil(crop * 1.25))
    return A.Compose([
        A.RandomCrop(margin, margin, pad_if_needed=True, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
        A.RandomScale(scale_limit=(-0.2, 0.25), p=0.7),
        A.PadIfNeeded(crop, crop, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
        A.RandomCrop(crop, crop),
        A.HorizontalFlip(),
        A.VerticalFlip(),
        A.RandomRotate90(),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.3, p=0.8),
        A.GaussianBlur(blur_limit=(3, 5), p=0.2),
    ])


class CropBatches:
    """One epoch of ``steps`` batches of augmented crops with their targets.

    Each batch is ``(images, targets)``: a ``(B, 1, crop, crop)`` float tensor
    and the list of what ``make_targets`` made of each crop's label image.

    Parameters
    ----------
    items : list of LabelledImage
    make_targets : callable
        Label image of a crop -> its targets (e.g. a :class:`DenseMethod`'s maps).
    steps, batch_size, crop : int
    seed : int
        Makes the epoch reproducible (drawn from the loop's per-epoch generator).
    """

    def __init__(self, items: list[LabelledImage], make_targets: Callable[[np.ndarray], Any], steps: int,
                 batch_size: int, crop: int, seed: int):
        self.items = items
        self.make_targets = make_targets
        self.steps = steps
        self.batch_size = batch_size
        self.transform = augmentation(crop)
        self.transform.set_random_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.window_size = int(np.ceil(crop * 1.25))

    def window(self, item: LabelledImage) -> tuple[np.ndarray, np.ndarray]:
        """Half the time a window around a random particle pixel, else the whole image.

        Particles cover a small part of a typical image: centring half of the
        crops on them spends the (scarce, CPU) training steps where the learning is.
        """
        h, w = item.labels.shape
        if self.rng.random() < 0.5 or h <= self.window_size or w <= self.window_size:
            return item.image, item.labels
        rows, cols = np.nonzero(item.labels[::4, ::4])
        if len(rows) == 0:
            return item.image, item.labels
        k = self.rng.integers(len(rows))
        top = int(np.clip(rows[k] * 4 - self.rng.integers(self.window_size), 0, h - self.window_size))
        left = int(np.clip(cols[k] * 4 - self.rng.integers(self.window_size), 0, w - self.window_size))
        box = np.s_[top:top + self.window_size, left:left + self.window_size]
        return item.image[box], item.labels[box]

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[Any]]]:
        for _ in range(self.steps):
            images, targets = [], []
            for index in self.rng.integers(0, len(self.items), self.batch_size):
                image, labels = self.window(self.items[index])
                out = self.transform(image=image, mask=labels.astype(np.uint16))
                images.append(out["image"][None])
                targets.append(self.make_targets(out["mask"].astype(np.int32)))
            yield torch.from_numpy(np.stack(images)), targets
