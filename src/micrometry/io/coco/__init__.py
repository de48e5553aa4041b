"""COCO instance segmentation files: datasets, results and the mask encodings they share.

* :mod:`~micrometry.io.coco.dataset`: load and validate ground-truth annotation files.
* :mod:`~micrometry.io.coco.results`: write and read a segmenter's detections.
* :mod:`~micrometry.io.coco.segmentation`: the one check of a ``segmentation``
  (polygons, uncompressed or compressed RLE) that both use.
* :mod:`~micrometry.io.coco.rle`: masks <-> RLE, masks -> polygons.

The public names of all four are re-exported here.
"""

from micrometry.io.coco.dataset import (
    ANNOTATIONS_NAME,
    DEFAULT_CATEGORY,
    IMAGES_DIR_NAME,
    CocoAnnotation,
    CocoDataset,
    CocoImage,
    load_coco,
    read_json,
    resolve_coco,
)
from micrometry.io.coco.results import (
    instances_to_results,
    labels_to_annotations,
    load_results,
    normalize_results,
    write_results,
)
from micrometry.io.coco.rle import (
    compressed_rle,
    crop_to_rle,
    decode_rles,
    json_rle,
    labels_to_rles,
    mask_to_rle,
    polygons_from_mask,
    rle_to_mask,
)
from micrometry.io.coco.segmentation import Checks, CocoRepairWarning, normalize_segmentation

__all__ = [
    "ANNOTATIONS_NAME",
    "DEFAULT_CATEGORY",
    "IMAGES_DIR_NAME",
    "Checks",
    "CocoAnnotation",
    "CocoDataset",
    "CocoImage",
    "CocoRepairWarning",
    "compressed_rle",
    "crop_to_rle",
    "decode_rles",
    "instances_to_results",
    "json_rle",
    "labels_to_annotations",
    "labels_to_rles",
    "load_coco",
    "load_results",
    "mask_to_rle",
    "normalize_results",
    "normalize_segmentation",
    "polygons_from_mask",
    "read_json",
    "resolve_coco",
    "rle_to_mask",
    "write_results",
]
