"""COCO instance annotations: load and validate files from any tool, write results.

Annotation tools (CVAT, Labelme exports, MMDetection, makesense, hand-written
scripts) all write "COCO", each a little differently: polygons or RLE (string or
list ``counts``), several polygons per object, ``iscrowd`` present or not, boxes
and areas missing, extra keys, images with no annotation. :func:`load_coco`
accepts all of that and normalises it. What it cannot repair is fatal and raises
:class:`~micrometry.errors.DatasetError` naming the file and the annotation (or
image) id; what it can repair is repaired and reported once per kind of defect
as a :class:`CocoRepairWarning`.

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

Results (the output of a segmenter) are written as COCO results: a JSON list of
``{"image_id", "category_id", "segmentation": compressed RLE, "bbox", "score"}``.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage as ndi

from micrometry.errors import DatasetError
from micrometry.io.atomic import write_json

ANNOTATIONS_NAME = "annotations.json"
IMAGES_DIR_NAME = "images"
DEFAULT_CATEGORY = {"id": 1, "name": "particle", "supercategory": "particle"}


class CocoRepairWarning(UserWarning):
    """Something in a COCO file was wrong but could be repaired."""


# ----------------------------------------------------------------------------- masks <-> RLE


def decode_rles(rles: list[dict]) -> np.ndarray:
    """pycocotools' decode of several compressed RLEs: ``(H, W, N)`` uint8, Fortran order.

    pycocotools 2.0.11 calls ``np.array(copy=False)`` on its own buffer, which
    NumPy 2 answers with a DeprecationWarning on every call; it is harmless.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rles)


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode a 2-D boolean mask as compressed COCO RLE with a JSON-ready string ``counts``."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode a COCO RLE (compressed or uncompressed ``counts``) to an ``(H, W)`` bool mask."""
    h, w = rle["size"]
    return decode_rles([compressed_rle(rle, h, w)])[:, :, 0].astype(bool)


def crop_to_rle(crop: np.ndarray, y0: int, x0: int, height: int, width: int) -> dict:
    """Compressed RLE (string counts) of a full ``height x width`` frame holding ``crop`` at (y0, x0).

    COCO RLE runs down the columns of the whole frame; only the columns the
    crop spans carry foreground, so the runs are computed on that full-height
    strip and the empty columns before and after are added to the first and
    last background runs. Much faster than encoding a full frame per object.
    """
    crop = np.asarray(crop, dtype=bool)
    ch, cw = crop.shape
    strip = np.zeros((height, cw), dtype=bool)
    strip[y0:y0 + ch] = crop
    flat = strip.ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]]))
    if flat[0]:
        counts = np.concatenate([[0], counts])  # COCO counts start with a background run
    counts[0] += x0 * height
    after = (width - x0 - cw) * height
    if len(counts) % 2 == 0:  # ends with foreground: the empty columns after are a new background run
        counts = np.concatenate([counts, [after]]) if after else counts
    else:
        counts[-1] += after
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": [int(c) for c in counts]}, height, width)
    return _json_rle(rle)


def labels_to_rles(labels: np.ndarray) -> list[dict | None]:
    """One compressed RLE per label id 1..labels.max() of an ``(H, W)`` label image (None for absent ids)."""
    labels = np.asarray(labels)
    h, w = labels.shape
    out: list[dict | None] = []
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            out.append(None)
            continue
        out.append(crop_to_rle(labels[box] == i, box[0].start, box[1].start, h, w))
    return out


def compressed_rle(rle: dict, h: int, w: int) -> dict:
    """pycocotools' internal form (bytes ``counts``) of a compressed or uncompressed RLE."""
    counts = rle["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects(rle, h, w)
    return {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _json_rle(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


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
        return {"id": self.id, "image_id": self.image_id, "category_id": self.category_id,
                "segmentation": self.segmentation, "area": self.area, "bbox": self.bbox,
                "iscrowd": self.iscrowd}


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

    def labels(self, image_id: int, include_crowd: bool = False) -> np.ndarray:
        """``(H, W)`` int32 label image: 0 background, i = the i-th annotation (1-based).

        Where annotations overlap, the pixel goes to the object listed first
        (it is the one on top: tools list occluders first or paint visible
        parts only, and for visible-part masks there is no overlap at all).
        """
        im = self.image(image_id)
        labels = np.zeros((im.height, im.width), dtype=np.int32)
        anns = [a for a in self.annotations[image_id] if include_crowd or not a.iscrowd]
        for i, ann in enumerate(anns, start=1):
            mask = decode_rles([ann.rle])[:, :, 0].astype(bool)
            labels[mask & (labels == 0)] = i
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
            "images": [{"id": im.id, "file_name": im.file_name, "height": im.height, "width": im.width}
                       for im in self.images],
            "annotations": [a.to_dict() for a in self.all_annotations()],
            "categories": self.categories,
        }

    def images_dict(self) -> dict:
        """Images and categories only (the public half of a test set)."""
        d = self.to_dict()
        d["annotations"] = []
        return d


# ----------------------------------------------------------------------------- loading


def resolve_coco(coco: str | Path | None = None, images: str | Path | None = None,
                 annotations: str | Path | None = None) -> tuple[Path, Path | None]:
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
        raise DatasetError(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", path) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise DatasetError(f"cannot read JSON ({exc})", path) from None


def load_coco(path: str | Path, images_dir: str | Path | None = None, check_files: bool = True) -> CocoDataset:
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


class _Validator:
    """One pass over a COCO dictionary: fatal defects raise, repairs are tallied and warned once."""

    def __init__(self, path: Path, images_dir: Path | None, check_files: bool):
        self.path = path
        self.images_dir = images_dir
        self.check_files = check_files and images_dir is not None
        self.repairs: dict[str, list[Any]] = defaultdict(list)

    def fail(self, message: str) -> None:
        raise DatasetError(message, self.path)

    def repaired(self, kind: str, which: Any) -> None:
        self.repairs[kind].append(which)

    def run(self, data: Any) -> CocoDataset:
        if not isinstance(data, dict):
            self.fail(f"top level must be an object with 'images' and 'annotations', not {type(data).__name__}")
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
        next_id = 1 + max((a["id"] for a in raw_anns if isinstance(a, dict)
                           and isinstance(a.get("id"), int)), default=0)
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
        self.warn()
        return CocoDataset(self.path, self.images_dir, images, categories, annotations)

    # -- categories and images
    def categories(self, raw: Any) -> list[dict]:
        if raw is None or raw == []:
            self.repaired("no categories; using one category 'particle' (id 1)", "file")
            return [dict(DEFAULT_CATEGORY)]
        if not isinstance(raw, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), int) for c in raw):
            self.fail("'categories' must be a list of objects with an integer 'id'")
        return [{"id": c["id"], "name": str(c.get("name", f"category {c['id']}")),
                 **({"supercategory": c["supercategory"]} if "supercategory" in c else {})} for c in raw]

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
        if not (_positive_int(height) and _positive_int(width)):
            if actual is None:
                self.fail(f"image {image_id} ({file_name}) has no valid 'height'/'width' and no image file to read them from")
            self.repaired("image sizes missing; read from the image files", image_id)
            height, width = actual
        elif actual is not None and (height, width) != actual:
            self.fail(f"image {image_id} ({file_name}): file says {height}x{width} (HxW) "
                      f"but the image is {actual[0]}x{actual[1]}")
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
        from PIL import Image

        try:
            with Image.open(file) as img:
                return img.height, img.width
        except Exception as exc:  # PIL raises many types for broken files
            self.fail(f"image {image_id}: cannot read {file} ({exc})")
        return None

    def check_unique_images(self, images: list[CocoImage]) -> None:
        seen_ids: set[int] = set()
        seen_names: dict[str, int] = {}
        for im in images:
            if im.id in seen_ids:
                self.fail(f"image {im.id}: duplicate image id")
            if im.file_name in seen_names:
                self.fail(f"image {im.id}: file name {im.file_name} is also used by image {seen_names[im.file_name]}")
            seen_ids.add(im.id)
            seen_names[im.file_name] = im.id

    # -- annotations
    def annotation(self, index: int, raw: Any, images: dict[int, CocoImage], default_cat: int,
                   known_cats: set[int]) -> CocoAnnotation | None:
        if not isinstance(raw, dict):
            self.fail(f"annotations[{index}] is not an object")
        ann_id = raw.get("id")
        if ann_id is None:
            self.repaired("annotations without 'id' were given new ids (listed by position)", index)
        elif not isinstance(ann_id, int) or isinstance(ann_id, bool):
            self.fail(f"annotations[{index}]: 'id' must be an integer, not {ann_id!r}")
        name = f"annotation {ann_id}" if ann_id is not None else f"annotations[{index}]"
        image_id = raw.get("image_id")
        if image_id not in images:
            self.fail(f"{name} points at unknown image {image_id!r}")
        im = images[image_id]
        cat = raw.get("category_id")
        if cat is None:
            self.repaired(f"annotations without 'category_id' were given category {default_cat}", ann_id or index)
            cat = default_cat
        elif cat not in known_cats:
            self.fail(f"{name} has category_id {cat!r}, which is not in 'categories'")
        iscrowd = raw.get("iscrowd", 0)
        if iscrowd not in (0, 1, True, False):
            self.fail(f"{name}: 'iscrowd' must be 0 or 1, not {iscrowd!r}")
        segmentation, rle = self.segmentation(name, ann_id if ann_id is not None else index, raw, im)
        if segmentation is None:
            return None
        area = float(mask_utils.area(rle))
        if area == 0:
            self.repaired("annotations whose mask lies outside the image were dropped", ann_id or index)
            return None
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
        raw_bbox = raw.get("bbox")
        if not (isinstance(raw_bbox, list) and len(raw_bbox) == 4 and all(_number(v) for v in raw_bbox)):
            self.repaired("missing or malformed 'bbox' recomputed from the mask", ann_id or index)
        elif max(abs(a - b) for a, b in zip(raw_bbox, bbox)) > 2.0:
            self.repaired("'bbox' disagreeing with the mask by > 2 px replaced by the mask's box", ann_id or index)
        if not _number(raw.get("area")):
            self.repaired("missing 'area' computed from the mask", ann_id or index)
        return CocoAnnotation(ann_id, int(image_id), int(cat), segmentation, rle, bbox, area, int(iscrowd))

    def segmentation(self, name: str, which: Any, raw: dict, im: CocoImage) -> tuple[Any, dict | None]:
        seg = raw.get("segmentation")
        if seg is None:
            self.fail(f"{name} has no 'segmentation' (instance masks are required)")
        if isinstance(seg, dict):
            return self.rle(name, seg, im)
        if not isinstance(seg, list):
            self.fail(f"{name}: 'segmentation' must be a list of polygons or an RLE object")
        if seg and all(_number(v) for v in seg):
            seg = [seg]  # a single flat polygon, as some exporters write
            self.repaired("flat polygon lists wrapped into a list of polygons", which)
        polygons = []
        for poly in seg:
            if not isinstance(poly, list) or not all(_number(v) for v in poly):
                self.fail(f"{name}: polygon is not a flat list of numbers [x1, y1, x2, y2, ...]")
            if len(poly) % 2:
                self.fail(f"{name}: polygon has an odd number of coordinates ({len(poly)})")
            if len(poly) < 6 or _polygon_area(poly) < 1e-6:
                self.repaired("degenerate polygons (fewer than 3 points or no area) dropped", which)
                continue
            polygons.append([float(v) for v in poly])
        if not polygons:
            self.repaired("annotations with no usable polygon dropped", which)
            return None, None
        xy = np.concatenate([np.asarray(p).reshape(-1, 2) for p in polygons])
        if (xy[:, 0] < -1).any() or (xy[:, 1] < -1).any() or (xy[:, 0] > im.width + 1).any() or (xy[:, 1] > im.height + 1).any():
            self.repaired("polygons reaching outside their image clipped to it", which)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, im.height, im.width))
        return polygons, rle

    def rle(self, name: str, seg: dict, im: CocoImage) -> tuple[dict, dict]:
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_positive_int(v) for v in size)):
            self.fail(f"{name}: RLE needs 'size' [height, width]")
        if list(size) != [im.height, im.width]:
            self.fail(f"{name}: RLE size {size[0]}x{size[1]} does not match image {im.id} ({im.height}x{im.width})")
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts):
                self.fail(f"{name}: uncompressed RLE 'counts' must be non-negative integers")
            if sum(counts) != im.height * im.width:
                self.fail(f"{name}: uncompressed RLE covers {sum(counts)} pixels, image has {im.height * im.width}")
            rle = mask_utils.frPyObjects(seg, im.height, im.width)
        elif isinstance(counts, (str, bytes)):
            rle = compressed_rle(seg, im.height, im.width)
            try:
                decoded_area = int(mask_utils.area(rle))
                if not 0 <= decoded_area <= im.height * im.width:
                    raise ValueError
                mask_utils.toBbox(rle)
            except Exception:
                self.fail(f"{name}: compressed RLE 'counts' cannot be decoded")
        else:
            self.fail(f"{name}: RLE 'counts' must be a string or a list of integers")
        return _json_rle(rle), rle

    def warn(self) -> None:
        for kind, which in self.repairs.items():
            shown = ", ".join(str(w) for w in which[:5]) + (f", ... ({len(which)} in all)" if len(which) > 5 else "")
            warnings.warn(f"{self.path}: {kind}: {shown}", CocoRepairWarning, stacklevel=4)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _polygon_area(poly: Sequence[float]) -> float:
    xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# ----------------------------------------------------------------------------- results


def instances_to_results(image_id: int, labels: np.ndarray, scores: np.ndarray,
                         category_id: int = 1) -> list[dict]:
    """COCO result records (RLE + bbox + score) for one image's label image.

    Label id ``i`` gets ``scores[i - 1]``; ids without pixels are skipped.
    """
    labels = np.asarray(labels)
    if labels.max(initial=0) <= 0:
        return []
    results = []
    for i, rle in enumerate(labels_to_rles(labels), start=1):
        if rle is None:
            continue
        bbox = mask_utils.toBbox(compressed_rle(rle, *rle["size"]))
        results.append({
            "image_id": int(image_id),
            "category_id": int(category_id),
            "segmentation": rle,
            "bbox": [round(float(v), 2) for v in bbox],
            "score": round(float(scores[i - 1]), 5),
        })
    return results


def write_results(path: str | Path, results: Iterable[dict]) -> Path:
    """Write COCO results (a JSON list) atomically; RLE ``counts`` are made JSON strings."""
    out = []
    for r in results:
        r = dict(r)
        if isinstance(r.get("segmentation"), dict):
            r["segmentation"] = _json_rle(r["segmentation"])
        out.append(r)
    return write_json(path, out)


def load_results(path: str | Path, dataset: CocoDataset | None = None) -> list[dict]:
    """Read and validate a COCO results file (a list of detections).

    Every record needs ``image_id``, ``score`` and a ``segmentation`` (RLE or
    polygons) or ``bbox``; with ``dataset``, image ids must be known and RLE
    sizes must match. ``category_id`` defaults to the dataset's first category.
    """
    path = Path(path)
    data = read_json(path)
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]  # a COCO file used as results
    return normalize_results(data, dataset, path)


def normalize_results(data: Any, dataset: CocoDataset | None = None, path: str | Path | None = None) -> list[dict]:
    """Validate result records and bring them to one form (RLE with string counts, bbox, score).

    See :func:`load_results`; ``path`` only names the source in error messages.
    """
    if not isinstance(data, list):
        raise DatasetError("COCO results must be a JSON list of detections", path)
    images = {im.id: im for im in dataset.images} if dataset is not None else {}
    default_cat = dataset.categories[0]["id"] if dataset is not None else 1
    out = []
    for index, raw in enumerate(data):
        name = f"result {index}"
        if not isinstance(raw, dict):
            raise DatasetError(f"{name} is not an object", path)
        image_id = raw.get("image_id")
        if not isinstance(image_id, (int, np.integer)) or isinstance(image_id, bool):
            raise DatasetError(f"{name} has no integer 'image_id'", path)
        image_id = int(image_id)
        if dataset is not None and image_id not in images:
            raise DatasetError(f"{name} points at unknown image {image_id}", path)
        score = raw.get("score", 1.0)
        if not _number(score):
            raise DatasetError(f"{name}: 'score' must be a number", path)
        rec = {"image_id": image_id, "category_id": int(raw.get("category_id", default_cat)), "score": float(score)}
        seg = raw.get("segmentation")
        if isinstance(seg, dict):
            if not (isinstance(seg.get("size"), list) and len(seg["size"]) == 2):
                raise DatasetError(f"{name}: RLE needs 'size'", path)
            if image_id in images and list(seg["size"]) != [images[image_id].height, images[image_id].width]:
                raise DatasetError(f"{name}: RLE size {seg['size']} does not match image {image_id}", path)
            if isinstance(seg.get("counts"), list):
                seg = _json_rle(mask_utils.frPyObjects(seg, *seg["size"]))
            elif not isinstance(seg.get("counts"), str):
                raise DatasetError(f"{name}: RLE 'counts' must be a string or a list", path)
            rec["segmentation"] = seg
        elif isinstance(seg, list) and seg:
            if image_id not in images:
                raise DatasetError(f"{name}: polygon results need the ground-truth image sizes", path)
            im = images[image_id]
            polys = [seg] if all(_number(v) for v in seg) else seg
            polys = [p for p in polys if isinstance(p, list) and len(p) >= 6]
            if not polys:
                raise DatasetError(f"{name}: no usable polygon", path)
            rec["segmentation"] = _json_rle(mask_utils.merge(mask_utils.frPyObjects(polys, im.height, im.width)))
        elif seg is not None:
            raise DatasetError(f"{name}: 'segmentation' must be RLE or polygons", path)
        bbox = raw.get("bbox")
        if isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox):
            rec["bbox"] = [float(v) for v in bbox]
        elif "segmentation" in rec:
            rec["bbox"] = [float(v) for v in mask_utils.toBbox(compressed_rle(rec["segmentation"], *rec["segmentation"]["size"]))]
        else:
            raise DatasetError(f"{name} has neither 'segmentation' nor 'bbox'", path)
        out.append(rec)
    return out


# ----------------------------------------------------------------------------- writing datasets


def polygons_from_mask(mask: np.ndarray, tolerance: float = 0.25, upsample: int = 4) -> list[list[float]]:
    """Outer contours of a binary mask as COCO polygons (pixel-edge coordinates).

    Each connected part gives one polygon. OpenCV traces pixel centres, so the
    mask is first upsampled ``upsample`` times: the traced outline then runs
    within ``1 / (2 * upsample)`` px of the true pixel edges, and a polygon
    rasterised by pycocotools reproduces the mask, one-pixel-thin parts
    included. ``tolerance`` (px) simplifies the outline (Douglas-Peucker).
    Holes cannot be expressed as COCO polygons (use RLE for such masks).
    """
    import cv2

    mask = np.asarray(mask, dtype=np.uint8)
    k = int(upsample)
    up = np.repeat(np.repeat(mask, k, axis=0), k, axis=1)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for c in contours:
        if tolerance > 0:
            c = cv2.approxPolyDP(c, k * tolerance, True)
        if len(c) < 3:
            continue
        # upsampled pixel j has its centre at original coordinate (j + 0.5) / k
        xy = (c.reshape(-1, 2).astype(np.float64) + 0.5) / k
        polygons.append([round(float(v), 3) for v in xy.ravel()])
    return polygons


def write_coco(path: str | Path, dataset: dict) -> Path:
    """Write a COCO dictionary atomically."""
    return write_json(path, dataset)
