"""Tiny synthetic particle scenes for the model tests: bright ellipses on a noisy background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from micrometry.io.atomic import write_json
from micrometry.io.coco import labels_to_rles
from micrometry.io.image import write_image


def make_scene(
    rng: np.random.Generator,
    height: int = 128,
    width: int = 160,
    n: int = 12,
    radius: tuple[float, float] = (6, 11),
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image, int32 labels): ``n`` ellipses, later ones on top, some touching."""
    yy, xx = np.mgrid[:height, :width]
    labels = np.zeros((height, width), np.int32)
    for i in range(1, n + 1):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        a, b = rng.uniform(*radius), rng.uniform(*radius)
        t = rng.uniform(0, np.pi)
        u = (yy - cy) * np.cos(t) + (xx - cx) * np.sin(t)
        v = -(yy - cy) * np.sin(t) + (xx - cx) * np.cos(t)
        labels[(u / a) ** 2 + (v / b) ** 2 <= 1] = i
    # visible parts only, renumbered 1..N without tiny slivers
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    keep = ids[counts >= 12]
    lut = np.zeros(n + 1, np.int32)
    lut[keep] = np.arange(1, len(keep) + 1)
    labels = lut[labels]
    inner = labels > 0
    edges = ndimage.morphological_gradient(labels, size=3) > 0
    image = 60 + 110 * inner - 50 * (edges & inner)
    image = ndimage.gaussian_filter(image.astype(float), 1.0) + rng.normal(0, 8, labels.shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels


def write_coco_folder(folder: Path, n_images: int = 6, seed: int = 0, **scene) -> Path:
    """A COCO folder (``annotations.json`` + ``images/``) of synthetic scenes."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, n_images + 1):
        image, labels = make_scene(rng, **scene)
        name = f"scene_{image_id:02d}.png"
        write_image(folder / "images" / name, image)
        images.append({"id": image_id, "file_name": name, "height": image.shape[0], "width": image.shape[1]})
        for rle in labels_to_rles(labels):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": rle,
                    "iscrowd": 0,
                }
            )
    write_json(
        folder / "annotations.json",
        {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "particle"}]},
    )
    return folder


def train_tiny_run(root: Path, model: str, epochs: int = 8) -> Path:
    """Train ``model`` briefly on synthetic scenes into ``root/run`` (the ``trained_run`` fixture caches it)."""
    from micrometry.particles.models.training import TrainSettings, train_model

    data = write_coco_folder(root / "coco", n_images=6, seed=0, height=128, width=160, n=14)
    settings = TrainSettings(
        model=model,
        epochs=epochs,
        steps_per_epoch=12,
        batch_size=4,
        crop=96,
        scale=1.0,
        widths=[16, 32, 64],
        time_budget_s=None,
        lr=4e-3,
    )
    train_model(data, root / "run", settings, threads=2)
    return root / "run"


# -- texture-only images: no particles, the right answer is none ------------------------------


def _gray(x: np.ndarray, rng: np.random.Generator, noise: float = 3.0) -> np.ndarray:
    x = (x - x.mean()) / (x.std() + 1e-9)
    return np.clip(128 + 40 * x + rng.normal(0, noise, x.shape), 0, 255).astype(np.uint8)


def bandpass_noise(rng: np.random.Generator, shape: tuple[int, int] = (256, 320)) -> np.ndarray:
    """White noise band-passed to blobs of a few pixels (difference of Gaussians)."""
    w = rng.normal(size=shape)
    return _gray(ndimage.gaussian_filter(w, 2.0) - ndimage.gaussian_filter(w, 8.0), rng)


def tem_grain(rng: np.random.Generator, shape: tuple[int, int] = (256, 320)) -> np.ndarray:
    """A TEM section's granular stain: 1/f-like clutter over six octaves plus fine speckle."""
    x = sum(ndimage.gaussian_filter(rng.normal(size=shape), s) * s**0.6 for s in (1, 2, 4, 8, 16, 32))
    x = x + 0.6 * ndimage.gaussian_filter(rng.normal(size=shape), 0.7) * x.std() / 0.3
    return _gray(x, rng)


def foam(rng: np.random.Generator, shape: tuple[int, int] = (256, 320), cells: int = 60) -> np.ndarray:
    """A reticulated foam: bright struts along the walls of random Voronoi cells."""
    seeds = (rng.uniform(0, 1, (cells, 2)) * shape).astype(int)
    free = np.ones(shape, bool)
    free[seeds[:, 0], seeds[:, 1]] = False
    _, (rows, cols) = ndimage.distance_transform_edt(free, return_indices=True)
    owner = np.zeros(shape, int)
    owner[seeds[:, 0], seeds[:, 1]] = np.arange(1, cells + 1)
    walls = ndimage.morphological_gradient(owner[rows, cols], size=3) > 0
    x = np.exp(-((ndimage.distance_transform_edt(~walls) / 2.5) ** 2))
    return _gray(x + 0.15 * ndimage.gaussian_filter(rng.normal(size=shape), 3), rng)


def cell_on_textured_ground(rng: np.random.Generator, shape: tuple[int, int] = (256, 320)) -> np.ndarray:
    """One large cell (70 % of the height) with its own texture, on a textured ground."""
    ground = ndimage.gaussian_filter(rng.normal(size=shape), 1.5) - ndimage.gaussian_filter(
        rng.normal(size=shape), 6
    )
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cell = ((yy - shape[0] / 2) / (0.35 * shape[0])) ** 2 + ((xx - shape[1] / 2) / (0.3 * shape[1])) ** 2 <= 1
    inside = ndimage.gaussian_filter(rng.normal(size=shape), 4)
    x = ground / ground.std() + cell * (1.5 + 0.6 * inside / inside.std())
    return _gray(ndimage.gaussian_filter(x, 0.8), rng)


TEXTURES = {
    "band-passed noise": bandpass_noise,
    "TEM-like grain": tem_grain,
    "reticulated foam": foam,
    "large cell on a textured ground": cell_on_textured_ground,
}
