"""COCO instance datasets: load and validate annotation files from any tool.

Annotation tools (CVAT, Labelme exports, MMDetection, makesense, hand-written
scripts) all write "COCO", each a little differently: polygons or RLE (string or
list ``counts``), several polygons per object, ``iscrowd`` present or not, boxes
and areas missing, extra keys, images with no annotation. :func:`load_coco`
accepts all of that and normalises it. What it cannot repair is fatal and raises
:class:`~micrometry.errors.DatasetError` naming the file and the annotation (or
image) id; what it can repair is repaired and reported once per kind of defect
as a :class:`~micrometry.io.coco.segmentation.CocoRepairWarning`. Segmentations
are checked by :func:`~micrometry.io.coco.segmentation.normalize_segmentation`,
the same check detections get (:mod:`micrometry.io.coco.results`).

Fatal: unreadable JSON, no ``images`` list, images without id/file name,
duplicate image ids or file names, annotations pointing at unknown images,
duplicate annotation ids, missing or malformed ``segmentation``, RLE whose size
does not match its image, image files missing from or disagreeing in size with
the images folder.

Repaired (with a warning): degenerate polygons (fewer than 3 points or no area)
are dropped, annotations left with nothing (or a mask outside the image) are
dropped, missing annotation ids are assigned, missing ``category_id`` /
``categories`` default to one category, missing or wrong ``bbox``/``area`` are
recomputed from the mask, missing image sizes are read from the image files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from micrometry.errors import DatasetError, ImageReadError
from micrometry.io.coco.rle import decode_rles
from micrometry.io.coco.segmentation import (
    MAX_IMAGE_PIXELS,
    Checks,
    is_number,
    is_positive_int,
    normalize_segmentation,
)

ANNOTATIONS_NAME = "annotations.json"
IMAGES_DIR_NAME = "images"
DEFAULT_CATEGORY = {"id": 1, "name": "particle", "supercategory": "particle"}


# ----------------------------------------------------------------------------- data model


@dataclass
class CocoImage:
    """One image entry: id, file name relative to the images folder, size in pixels."""

    id: int
    file_name: str
    height: int
    width: int


@dataclass
class CocoAnnotation:
    """One object, normalised.

    ``segmentation`` keeps the file's own form (a list of polygons, or RLE with
    string counts); ``rle`` is the same mask as compressed RLE for decoding.
    """

    id: int
    image_id: int
    category_id: int
    segmentation: list | dict
    rle: dict
    bbox: list[float]
    area: float
    iscrowd: int = 0

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "image_id": self.image_id,
            "category_id": self.category_id,
            "segmentation": self.segmentation,
            "area": self.area,
            "bbox": self.bbox,
            "iscrowd": self.iscrowd,
        }


@dataclass
class CocoDataset:
    """A validated COCO instance dataset.

    Attributes
    ----------
    path : Path
        The annotation file.
    images_dir : Path or None
        Folder the ``file_name`` entries are relative to, when known.
    images : list of CocoImage
        In file order.
    categories : list of dict
    annotations : dict
        image id -> list of :class:`CocoAnnotation` (every image has an entry,
        possibly empty).
    """

    path: Path
    images_dir: Path | None
    images: list[CocoImage]
    categories: list[dict]
    annotations: dict[int, list[CocoAnnotation]] = field(default_factory=dict)

    # -- look-ups
    def image(self, image_id: int) -> CocoImage:
        by_id = self.__dict__.get("_by_id")
        if by_id is None or len(by_id) != len(self.images):
            by_id = self.__dict__["_by_id"] = {im.id: im for im in self.images}
        return by_id[image_id]

    def image_path(self, image_id: int) -> Path:
        if self.images_dir is None:
            raise DatasetError("no images folder is known for this annotation file", self.path)
        return self.images_dir / self.image(image_id).file_name

    @property
    def n_annotations(self) -> int:
        return sum(len(a) for a in self.annotations.values())

    def all_annotations(self) -> list[CocoAnnotation]:
        return [a for im in self.images for a in self.annotations[im.id]]

    # -- masks
    def masks(self, image_id: int, include_crowd: bool = False) -> np.ndarray:
        """``(N, H, W)`` bool masks of the image's objects, in annotation order."""
        im = self.image(image_id)
        anns = [a for a in self.annotations[image_id] if include_crowd or not a.iscrowd]
        if not anns:
            return np.zeros((0, im.height, im.width), dtype=bool)
        stacked = decode_rles([a.rle for a in anns])  # (H, W, N), Fortran order
        return np.ascontiguousarray(np.moveaxis(stacked, -1, 0)).astype(bool)

    def labels(self, image_id: int, include_crowd: bool = False, hidden: list | None = None) -> np.ndarray:
        """``(H, W)`` int32 label image: 0 background, i = the i-th annotation (1-based).

        Where annotations overlap, the pixel goes to the object listed first
        (it is the one on top: tools list occluders first or paint visible
        parts only, and for visible-part masks there is no overlap at all).

        Parameters
        ----------
        hidden : list, optional
            Receives the 1-based numbers of annotations that got no pixel at all
            (entirely under earlier ones), which a label image cannot show.
        """
        im = self.image(image_id)
        labels = np.zeros((im.height, im.width), dtype=np.int32)
        anns = [a for a in self.annotations[image_id] if include_crowd or not a.iscrowd]
        for i, ann in enumerate(anns, start=1):
            mask = decode_rles([ann.rle])[:, :, 0].astype(bool)
            visible = mask & (labels == 0)
            labels[visible] = i
            if hidden is not None and mask.any() and not visible.any():
                hidden.append(i)
        return labels

    def crowd_mask(self, image_id: int) -> np.ndarray:
        """Union of the ``iscrowd`` regions (areas to ignore in training), ``(H, W)`` bool."""
        im = self.image(image_id)
        out = np.zeros((im.height, im.width), dtype=bool)
        for ann in self.annotations[image_id]:
            if ann.iscrowd:
                out |= decode_rles([ann.rle])[:, :, 0].astype(bool)
        return out

    def to_dict(self) -> dict:
        """The repaired dataset as a plain COCO dictionary (pycocotools accepts it)."""
        return {
            "images": [
                {"id": im.id, "file_name": im.file_name, "height": im.height, "width": im.width}
                for im in self.images
            ],
            "annotations": [a.to_dict() for a in self.all_annotations()],
            "categories": self.categories,
        }

    def images_dict(self) -> dict:
        """Images and categories only (the public half of a test set)."""
        d = self.to_dict()
        d["annotations"] = []
        return d


# ----------------------------------------------------------------------------- loading


def resolve_coco(
    coco: str | Path | None = None, images: str | Path | None = None, annotations: str | Path | None = None
) -> tuple[Path, Path | None]:
    """Turn CLI arguments into (annotation file, images folder).

    ``coco`` is a dataset folder (``DIR/annotations.json`` + ``DIR/images/``) or
    an annotation file (its images are looked for in a sibling ``images/``);
    ``--images``/``--annotations`` override either part.
    """
    ann_path: Path | None = Path(annotations) if annotations is not None else None
    img_dir: Path | None = Path(images) if images is not None else None
    if coco is not None:
        coco = Path(coco)
        if coco.is_dir():
            ann_path = ann_path or coco / ANNOTATIONS_NAME
            img_dir = img_dir or coco / IMAGES_DIR_NAME
        elif coco.is_file():
            ann_path = ann_path or coco
            sibling = coco.parent / IMAGES_DIR_NAME
            img_dir = img_dir or (sibling if sibling.is_dir() else None)
        else:
            raise DatasetError("no such file or folder", coco)
    if ann_path is None:
        raise DatasetError("give a COCO folder or --annotations FILE")
    if not ann_path.is_file():
        raise DatasetError("annotation file not found", ann_path)
    if img_dir is not None and not img_dir.is_dir():
        raise DatasetError("images folder not found", img_dir)
    return ann_path, img_dir


def read_json(path: str | Path) -> Any:
    """Read a JSON file; unreadable or invalid JSON is a :class:`DatasetError`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("no such file", path)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", path
        ) from None
    except RecursionError:  # json's parser recurses per nesting level
        raise DatasetError("JSON nested too deeply to be an annotation file", path) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise DatasetError(f"cannot read JSON ({exc})", path) from None


def load_coco(
    path: str | Path, images_dir: str | Path | None = None, check_files: bool = True
) -> CocoDataset:
    """Load and validate a COCO instance file.

    Parameters
    ----------
    path : str or Path
        The annotation JSON, or a COCO folder (``annotations.json`` + ``images/``).
    images_dir : str or Path, optional
        Folder of the images. When given (or found), image sizes are checked
        against the files (headers only) and missing sizes are read from them.
    check_files : bool
        Check that every image file exists in ``images_dir``.

    Returns
    -------
    CocoDataset

    Raises
    ------
    DatasetError
        A fatal defect, naming the file and the annotation or image id.
    """
    path = Path(path)
    if path.is_dir():
        path, found = resolve_coco(path)
        images_dir = images_dir if images_dir is not None else found
    images_dir = Path(images_dir) if images_dir is not None else None
    data = read_json(path)
    return _Validator(path, images_dir, check_files).run(data)


def dataset_from_dict(
    data: Any, path: str | Path, images_dir: str | Path | None = None, check_files: bool = True
) -> CocoDataset:
    """Validate a COCO dictionary made in memory, as :func:`load_coco` validates a file.

    ``path`` is what error messages name (the folder the dictionary was made from).
    """
    return _Validator(Path(path), Path(images_dir) if images_dir is not None else None, check_files).run(data)


class _Validator(Checks):
    """One pass over a COCO dictionary: fatal defects raise, repairs are tallied and warned once."""

    def __init__(self, path: Path, images_dir: Path | None, check_files: bool):
        super().__init__(path, noun="annotations")
        self.images_dir = images_dir
        self.check_files = check_files and images_dir is not None

    def run(self, data: Any) -> CocoDataset:
        if not isinstance(data, dict):
            self.fail(
                f"top level must be an object with 'images' and 'annotations', not {type(data).__name__}"
            )
        if "images" not in data:
            self.fail("no 'images' list (is this a COCO results file rather than a dataset?)")
        if not isinstance(data["images"], list):
            self.fail("'images' must be a list")
        raw_anns = data.get("annotations", [])
        if not isinstance(raw_anns, list):
            self.fail("'annotations' must be a list")
        categories = self.categories(data.get("categories"))
        images = [self.image(i, raw) for i, raw in enumerate(data["images"])]
        self.check_unique_images(images)
        by_id = {im.id: im for im in images}
        default_cat = categories[0]["id"]
        known_cats = {c["id"] for c in categories}
        annotations: dict[int, list[CocoAnnotation]] = {im.id: [] for im in images}
        seen_ids: set[int] = set()
        next_id = 1 + max(
            (a["id"] for a in raw_anns if isinstance(a, dict) and isinstance(a.get("id"), int)), default=0
        )
        for index, raw in enumerate(raw_anns):
            ann = self.annotation(index, raw, by_id, default_cat, known_cats)
            if ann is None:
                continue
            if ann.id is None:
                ann.id = next_id
                next_id += 1
            if ann.id in seen_ids:
                self.fail(f"annotation {ann.id}: duplicate annotation id")
            seen_ids.add(ann.id)
            annotations[ann.image_id].append(ann)
        self.warn(stacklevel=3)
        return CocoDataset(self.path, self.images_dir, images, categories, annotations)

    # -- categories and images
    def categories(self, raw: Any) -> list[dict]:
        if raw is None or raw == []:
            self.repaired("no categories; using one category 'particle' (id 1)", "file")
            return [dict(DEFAULT_CATEGORY)]
        if not isinstance(raw, list) or not all(
            isinstance(c, dict) and isinstance(c.get("id"), int) for c in raw
        ):
            self.fail("'categories' must be a list of objects with an integer 'id'")
        return [
            {
                "id": c["id"],
                "name": str(c.get("name", f"category {c['id']}")),
                **({"supercategory": c["supercategory"]} if "supercategory" in c else {}),
            }
            for c in raw
        ]

    def image(self, index: int, raw: Any) -> CocoImage:
        if not isinstance(raw, dict):
            self.fail(f"images[{index}] is not an object")
        image_id = raw.get("id")
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            self.fail(f"images[{index}] has no integer 'id'")
        file_name = raw.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            self.fail(f"image {image_id} has no 'file_name'")
        height, width = raw.get("height"), raw.get("width")
        actual = self.file_size(image_id, file_name)
        if not (is_positive_int(height) and is_positive_int(width)):
            if actual is None:
                self.fail(
                    f"image {image_id} ({file_name}) has no valid 'height'/'width' and no image file to read them from"
                )
            self.repaired("image sizes missing; read from the image files", image_id)
            height, width = actual
        elif actual is not None and (height, width) != actual:
            self.fail(
                f"image {image_id} ({file_name}): file says {height}x{width} (HxW) "
                f"but the image is {actual[0]}x{actual[1]}"
            )
        if height * width > MAX_IMAGE_PIXELS:  # before anything is allocated for it
            self.fail(
                f"image {image_id} ({file_name}): {height}x{width} (HxW) is larger than any image "
                f"micrometry reads ({MAX_IMAGE_PIXELS} pixels)"
            )
        return CocoImage(int(image_id), file_name, int(height), int(width))

    def file_size(self, image_id: int, file_name: str) -> tuple[int, int] | None:
        """(height, width) from the image file's header, or None when there is no images folder."""
        if self.images_dir is None:
            return None
        file = self.images_dir / file_name
        if not file.is_file():
            if self.check_files:
                self.fail(f"image {image_id}: file {file_name} not found in {self.images_dir}")
            return None
        from micrometry.io.image import image_size

        try:
            return image_size(file)
        except ImageReadError as exc:
            self.fail(f"image {image_id}: cannot read {file} ({exc.message})")
        return None

    def check_unique_images(self, images: list[CocoImage]) -> None:
        seen_ids: set[int] = set()
        seen_names: dict[str, int] = {}
        for im in images:
            if im.id in seen_ids:
                self.fail(f"image {im.id}: duplicate image id")
            if im.file_name in seen_names:
                self.fail(
                    f"image {im.id}: file name {im.file_name} is also used by image {seen_names[im.file_name]}"
                )
            seen_ids.add(im.id)
            seen_names[im.file_name] = im.id

    # -- annotations
    def annotation(
        self, index: int, raw: Any, images: dict[int, CocoImage], default_cat: int, known_cats: set[int]
    ) -> CocoAnnotation | None:
        if not isinstance(raw, dict):
            self.fail(f"annotations[{index}] is not an object")
        ann_id = raw.get("id")
        if ann_id is None:
            self.repaired("annotations without 'id' were given new ids (listed by position)", index)
        elif not isinstance(ann_id, int) or isinstance(ann_id, bool):
            self.fail(f"annotations[{index}]: 'id' must be an integer, not {ann_id!r}")
        name = f"annotation {ann_id}" if ann_id is not None else f"annotations[{index}]"
        image_id = raw.get("image_id")
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            self.fail(f"{name}: 'image_id' must be an integer, not {image_id!r}")
        if image_id not in images:
            self.fail(f"{name} points at unknown image {image_id!r}")
        im = images[image_id]
        cat = raw.get("category_id")
        if cat is None:
            self.repaired(
                f"annotations without 'category_id' were given category {default_cat}", ann_id or index
            )
            cat = default_cat
        elif not isinstance(cat, int) or isinstance(cat, bool) or cat not in known_cats:
            self.fail(f"{name} has category_id {cat!r}, which is not in 'categories'")
        iscrowd = raw.get("iscrowd", 0)
        if iscrowd not in (0, 1, True, False):
            self.fail(f"{name}: 'iscrowd' must be 0 or 1, not {iscrowd!r}")
        seg = raw.get("segmentation")
        if seg is None:
            self.fail(f"{name} has no 'segmentation' (instance masks are required)")
        checked = normalize_segmentation(
            seg, (im.height, im.width), im.id, name, ann_id if ann_id is not None else index, self
        )
        if checked is None:
            return None
        segmentation, rle = checked
        area = float(mask_utils.area(rle))
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
        raw_bbox = raw.get("bbox")
        if not (isinstance(raw_bbox, list) and len(raw_bbox) == 4 and all(is_number(v) for v in raw_bbox)):
            self.repaired("missing or malformed 'bbox' recomputed from the mask", ann_id or index)
        elif max(abs(a - b) for a, b in zip(raw_bbox, bbox, strict=False)) > 2.0:
            self.repaired(
                "'bbox' disagreeing with the mask by > 2 px replaced by the mask's box", ann_id or index
            )
        if not is_number(raw.get("area")):
            self.repaired("missing 'area' computed from the mask", ann_id or index)
        return CocoAnnotation(ann_id, int(image_id), int(cat), segmentation, rle, bbox, area, int(iscrowd))
