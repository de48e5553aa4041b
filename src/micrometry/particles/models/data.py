"""Training data for the dense models: COCO images at network scale, random augmented crops.

Images and label images are loaded once, normalised and resized to the
training scale (one scale for the dataset, or each image's own, chosen so that
its median particle meets the network at a fixed diameter: :mod:`.sizing`);
each step draws random crops from them and augments them with albumentations
(random scale, flips, 90-degree rotations, brightness/contrast, blur), then
with intensity inversion and gamma (:func:`polarity_gamma`: one model learns
dark-on-bright and bright-on-dark particles alike). Targets are computed after
augmentation, on the crop's own label image, so that geometric transforms
never have to rotate offset vectors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# albumentations >= 1.4 asks the network for its latest version on import: nothing may be fetched at run time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np
import torch

from micrometry.errors import DatasetError
from micrometry.io.image import read_image
from micrometry.particles.models.preprocess import normalise_image, resize, resize_labels
from micrometry.particles.training_data import load_training_set
from micrometry.progress import track


@dataclass
class LabelledImage:
    """One image with its instances: ``image`` and ``labels`` at ``scale``, ``truth`` at full size."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    full_image: np.ndarray
    truth: np.ndarray
    scale: float = 1.0


def labelled_image(name: str, full: np.ndarray, truth: np.ndarray, scale: float) -> LabelledImage:
    """One :class:`LabelledImage` from a full-size image and label image."""
    return LabelledImage(
        name, resize(normalise_image(full), scale), resize_labels(truth, scale), full, truth, float(scale)
    )


def load_labelled_images(
    coco_dir: str | Path,
    scale: float | None,
    net_diameter: float | None = None,
    per_image: bool = True,
    images: str | Path | None = None,
) -> list[LabelledImage]:
    """Every annotated image of a training folder with its label image.

    Parameters
    ----------
    coco_dir : path
        Training data in any layout :func:`~micrometry.particles.training_data.load_training_set`
        reads (COCO, images/ + masks/, images/ + rois/, a corrected prediction folder).
    scale : float or None
        Network pixels per image pixel for every image; None: each image's own
        scale, ``net_diameter`` over its median particle diameter
        (:func:`~.sizing.scale_for_diameter`; images without particles take the
        dataset's median); with ``per_image`` False, one scale for all images
        from the dataset's median particle diameter.

    Raises
    ------
    DatasetError
        No images, or a malformed dataset (from :func:`~micrometry.io.coco.load_coco`).
    """
    from micrometry.particles.models.sizing import equivalent_diameters, median_diameter, scale_for_diameter

    dataset = load_training_set(coco_dir, images)
    if not dataset.images:
        raise DatasetError("the dataset has no images", dataset.path)
    if dataset.images_dir is None:
        raise DatasetError("no images folder next to the annotations", dataset.path)
    loaded = []
    for entry in track(dataset.images, "loading training images"):
        loaded.append((entry.file_name, read_image(dataset.image_path(entry.id)), dataset.labels(entry.id)))
    if scale is not None:
        return [labelled_image(name, full, truth, scale) for name, full, truth in loaded]
    diameters = [median_diameter(truth) for _, _, truth in loaded]
    known = [d for d in diameters if d is not None]
    if not known:
        raise DatasetError(
            "no particles in any image: cannot choose a training scale (pass --scale)", dataset.path
        )
    fallback = float(np.median(known))
    if not per_image:
        dataset_scale = scale_for_diameter(
            float(np.median(np.concatenate([equivalent_diameters(truth) for _, _, truth in loaded]))),
            net_diameter,
        )
        return [labelled_image(name, full, truth, dataset_scale) for name, full, truth in loaded]
    return [
        labelled_image(name, full, truth, scale_for_diameter(d or fallback, net_diameter))
        for (name, full, truth), d in zip(loaded, diameters, strict=False)
    ]


#: Fewer images than this: none is held out; every annotated pixel is trained on.
MIN_IMAGES_TO_HOLD_OUT = 5


def split_train_val(
    items: list[LabelledImage], val_fraction: float, seed: int
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Hold out ``val_fraction`` of the images (at least one) for validation.

    With fewer than :data:`MIN_IMAGES_TO_HOLD_OUT` images, or ``val_fraction <= 0``,
    nothing is held out: training uses every annotated pixel (with 1-4 images each
    one counts; docs/your-own-images.md) and validation measures the fit on the
    training images.
    """
    if val_fraction <= 0 or len(items) < MIN_IMAGES_TO_HOLD_OUT:
        return items, items
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = max(1, int(round(val_fraction * len(items))))
    return [items[i] for i in order[n_val:]], [items[i] for i in order[:n_val]]


def polarity_gamma(
    image: np.ndarray, rng: np.random.Generator, invert_p: float, gamma_range: tuple[float, float]
) -> np.ndarray:
    """Randomly inverted (``1 - x``) and gamma-adjusted normalised image.

    Inversion teaches one model both polarities (dark particles on a bright
    field and bright ones on a dark field, as in fluorescence or dark field);
    gamma varies the tone curve that instruments and exposure settings bend.
    """
    x = np.asarray(image, np.float32)
    if invert_p > 0 and rng.random() < invert_p:
        x = 1.0 - x
    lo, hi = gamma_range
    if hi > lo:
        # the tone curve bends [0, 1]; the few values normalisation put outside it stay linear
        inside = (x > 0) & (x < 1)
        x = np.where(
            inside, np.clip(x, 1e-6, 1.0) ** np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi)))), x
        )
    return x.astype(np.float32)


def augmentation(crop: int) -> A.Compose:
    """Random crop of ``crop`` pixels with scale, flips, rotations, contrast and blur."""
    margin = int(np.ceil(crop * 1.25))
    return A.Compose(
        [
            A.RandomCrop(
                margin, margin, pad_if_needed=True, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0
            ),
            A.RandomScale(scale_limit=(-0.2, 0.25), p=0.7),
            A.PadIfNeeded(crop, crop, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
            A.RandomCrop(crop, crop),
            A.HorizontalFlip(),
            A.VerticalFlip(),
            A.RandomRotate90(),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.3, p=0.8),
            A.GaussianBlur(blur_limit=(3, 5), p=0.2),
        ]
    )


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
    invert_p, gamma_range
        Probability of inverting a crop, and the range of its random gamma
        (log-uniform; see :func:`polarity_gamma`).
    """

    def __init__(
        self,
        items: list[LabelledImage],
        make_targets: Callable[[np.ndarray], Any],
        steps: int,
        batch_size: int,
        crop: int,
        seed: int,
        invert_p: float = 0.0,
        gamma_range: tuple[float, float] = (1.0, 1.0),
    ):
        self.items = items
        self.invert_p = invert_p
        self.gamma_range = tuple(gamma_range)
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
        box = np.s_[top : top + self.window_size, left : left + self.window_size]
        return item.image[box], item.labels[box]

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[Any]]]:
        for _ in range(self.steps):
            images, targets = [], []
            for index in self.rng.integers(0, len(self.items), self.batch_size):
                image, labels = self.window(self.items[index])
                out = self.transform(image=image, mask=labels.astype(np.uint16))
                images.append(polarity_gamma(out["image"], self.rng, self.invert_p, self.gamma_range)[None])
                targets.append(self.make_targets(out["mask"].astype(np.int32)))
            yield torch.from_numpy(np.stack(images)), targets


def _as_is(batch):
    """DataLoader collate function that leaves a ready batch alone."""
    return batch


class _CropShards(torch.utils.data.IterableDataset):
    """Each DataLoader worker draws its own share of an epoch's batches, with its own seed."""

    def __init__(self, make: Callable[[int, int], CropBatches], workers: int):
        self.make, self.workers = make, workers

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        for images, targets in self.make(worker, self.workers):
            # one stacked tensor crosses the process boundary through shared memory, not a pickled list
            yield images, torch.from_numpy(np.stack(targets))


class ParallelCropBatches:
    """:class:`CropBatches` drawn by ``workers`` processes (for a GPU that one CPU cannot keep busy).

    Worker ``k`` makes every ``workers``-th batch of the epoch from seed
    ``seed + k``: an epoch is reproducible for a given number of workers.
    """

    def __init__(
        self,
        items: list[LabelledImage],
        make_targets: Callable[[np.ndarray], Any],
        steps: int,
        batch_size: int,
        crop: int,
        seed: int,
        workers: int,
        **augment,
    ):
        self.steps, self.workers = steps, max(1, min(workers, steps))

        def make(worker: int, n: int) -> CropBatches:
            share = steps // n + (worker < steps % n)
            return CropBatches(items, make_targets, share, batch_size, crop, seed + worker, **augment)

        self.shards = _CropShards(make, self.workers)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        loader = torch.utils.data.DataLoader(
            self.shards, batch_size=None, num_workers=self.workers, collate_fn=_as_is, prefetch_factor=4
        )
        return iter(loader)
