"""Open micrometry's folders and label images in napari as layer-data tuples.

What the reader opens (:func:`get_reader` says whether it can, before any work):

* a prediction folder of ``particles predict`` (``prediction.json`` + ``labels/``): each
  image with its (possibly corrected) particles; the labels alone when the images
  are gone;
* a COCO folder (``annotations.json`` + ``images/``), a COCO annotation file, or a
  COCO results file with its ``images.json``;
* the other training layouts of :mod:`micrometry.particles.training_data`
  (``images/`` + ``masks/``, ``images/`` + ``rois/``);
* a label image (``*_labels.png``, ``*_masks.tif``, ... : single-channel integer ids).

Each image becomes an image layer ``NAME`` and its particles a labels layer
``NAME labels``; an image whose file declares its pixel size carries it in the
layer's metadata (``pixel_size``, ``unit``), which the widget measures with.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from micrometry.errors import InputError
from micrometry.napari_plugin import labels_name

LayerData = tuple[np.ndarray, dict, str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader function for ``path``, or None when micrometry does not read it.

    Parameters
    ----------
    path : str or list of str
        What napari is asked to open; a list is read path by path.
    """
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(_readable(Path(p)) for p in paths):
        return None
    return read


def _readable(path: Path) -> bool:
    from micrometry.errors import DatasetError
    from micrometry.io.coco import read_json
    from micrometry.io.image import IMAGE_SUFFIXES
    from micrometry.particles.training_data import detect_layout

    if path.is_dir():
        try:
            detect_layout(path)
        except DatasetError:
            return False
        return True
    if path.suffix.lower() == ".json":
        try:
            data = read_json(path)
        except InputError:
            return False
        return (isinstance(data, dict) and "annotations" in data) or (
            isinstance(data, list) and (path.parent / "images.json").is_file()
        )
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def read(path: str | list[str]) -> list[LayerData]:
    """Layer-data tuples for everything in ``path`` (see the module's description).

    Raises
    ------
    InputError
        A broken dataset, or an image file that is not a label image (a photo:
        napari's own reader opens it).
    """
    paths = [path] if isinstance(path, str | Path) else list(path)
    layers: list[LayerData] = []
    for p in map(Path, paths):
        if p.is_dir():
            layers += read_folder(p)
        elif p.suffix.lower() == ".json":
            layers += read_coco_file(p)
        else:
            layers.append(read_label_file(p))
    return layers


def read_folder(path: Path) -> list[LayerData]:
    """A prediction folder or a training-data folder: images and their labels."""
    from micrometry.errors import DatasetError
    from micrometry.particles.training_data import detect_layout, load_training_set, prediction_images

    path = Path(path)
    if detect_layout(path) == "prediction":
        try:
            prediction_images(path)
        except DatasetError:  # the images moved: the particles alone, still measurable
            warnings.warn(f"{path}: the images of this prediction were not found; opening its labels only")
            return _labels_only(path)
    return _dataset_layers(load_training_set(path))


def read_coco_file(path: Path) -> list[LayerData]:
    """A COCO annotation file (with its images when found) or a results file (labels only)."""
    from micrometry.io.coco import read_json
    from micrometry.particles.training_data import load_training_set

    if isinstance(read_json(path), list):
        return _labels_only(path)
    return _dataset_layers(load_training_set(path))


def read_label_file(path: Path) -> LayerData:
    """One label image as a labels layer ``STEM labels``; a photo is refused."""
    from micrometry.errors import ImageReadError
    from micrometry.particles.label_sources import looks_like_photo, read_label_image
    from micrometry.particles.training_data import MASK_STEM_ENDINGS

    labels = read_label_image(path)
    if looks_like_photo(labels):
        raise ImageReadError("looks like a photo, not a label image (open it with napari's reader)", path)
    # a_labels.png, a_cp_masks.tif: the labels of image a
    ending = next(
        (e for e in sorted(MASK_STEM_ENDINGS, key=len, reverse=True) if e and path.stem.endswith(e)), ""
    )
    return labels, {"name": labels_name(path.stem[: len(path.stem) - len(ending)])}, "labels"


def _labels_only(source: Path) -> list[LayerData]:
    from micrometry.particles.label_sources import iter_label_images

    _, items = iter_label_images(source)
    return [(item.labels, {"name": labels_name(item.name)}, "labels") for item in items]


def _dataset_layers(dataset) -> list[LayerData]:
    from micrometry.io.image import read_calibration, read_image

    layers: list[LayerData] = []
    for im in dataset.images:
        name = Path(im.file_name).stem
        labels = dataset.labels(im.id)
        if dataset.images_dir is not None and dataset.image_path(im.id).is_file():
            file = dataset.image_path(im.id)
            calibration = read_calibration(file)
            metadata = {"source_file": str(file)}
            if calibration is not None:
                metadata.update(pixel_size=calibration[0], unit=calibration[1])
            layers.append((read_image(file), {"name": name, "metadata": metadata}, "image"))
        layers.append((labels, {"name": labels_name(name)}, "labels"))
    return layers
