"""Counts and statistics of a COCO particle dataset (``micrometry particles info``)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from micrometry.errors import DatasetError, InputError
from micrometry.io.coco import CocoDataset
from micrometry.io.image import read_image

# COCO's object-size classes (area in pixels), used by APs/APm/APl.
SMALL_AREA = 32**2
LARGE_AREA = 96**2


def dataset_summary(ds: CocoDataset) -> dict:
    """Whole-dataset figures: counts, image sizes, object areas and diameters."""
    anns = [a for a in ds.all_annotations() if not a.iscrowd]
    areas = np.array([a.area for a in anns], dtype=np.float64)
    diameters = np.sqrt(4 * areas / np.pi)
    per_image = np.array([len(ds.annotations[im.id]) for im in ds.images])
    sizes = Counter(f"{im.height}x{im.width}" for im in ds.images)

    def pct(values: np.ndarray, q: float) -> float | None:
        return float(np.percentile(values, q)) if values.size else None  # None: JSON null, table "-"

    return {
        "annotation_file": str(ds.path),
        "images_dir": str(ds.images_dir) if ds.images_dir else None,
        "images": len(ds.images),
        "images_without_annotations": int((per_image == 0).sum()),
        "annotations": ds.n_annotations,
        "crowd_annotations": ds.n_annotations - len(anns),
        "multi_polygon_annotations": sum(
            isinstance(a.segmentation, list) and len(a.segmentation) > 1 for a in anns
        ),
        "rle_annotations": sum(isinstance(a.segmentation, dict) for a in anns),
        "categories": [c["name"] for c in ds.categories],
        "image_sizes_hxw": dict(sizes),
        "objects_per_image": {
            "min": pct(per_image, 0),
            "median": pct(per_image, 50),
            "max": pct(per_image, 100),
        },
        "area_px": {"min": pct(areas, 0), "median": pct(areas, 50), "max": pct(areas, 100)},
        "equivalent_diameter_px": {
            "d10": pct(diameters, 10),
            "d50": pct(diameters, 50),
            "d90": pct(diameters, 90),
        },
        "size_classes": {
            "small": int((areas < SMALL_AREA).sum()),
            "medium": int(((areas >= SMALL_AREA) & (areas < LARGE_AREA)).sum()),
            "large": int((areas >= LARGE_AREA).sum()),
        },
    }


def per_image_rows(ds: CocoDataset) -> list[dict]:
    """One row per image: size, object count, area statistics, covered fraction."""
    rows = []
    for im in ds.images:
        anns = [a for a in ds.annotations[im.id] if not a.iscrowd]
        areas = np.array([a.area for a in anns])
        rows.append(
            {
                "id": im.id,
                "file": im.file_name,
                "size": f"{im.height}x{im.width}",
                "objects": len(anns),
                "crowd": len(ds.annotations[im.id]) - len(anns),
                "median_area": float(np.median(areas)) if areas.size else None,
                "max_area": float(areas.max()) if areas.size else None,
                # annotations can overlap, so the sum of areas may exceed the union
                "cover_pct": 100.0 * float(areas.sum()) / (im.height * im.width),
            }
        )
    return rows


def check_images(ds: CocoDataset) -> int:
    """Decode every image of ``ds`` and check its size against the annotation file.

    Loading a dataset reads image headers only, so a truncated or corrupt file
    passes it; this finds them.

    Returns
    -------
    int
        The number of images decoded.

    Raises
    ------
    DatasetError
        An image that does not decode or whose size differs (the first one is
        named, with the count of the others).
    """
    if ds.images_dir is None:
        raise DatasetError("no images folder to check (give --images)", ds.path)
    problems: list[InputError] = []
    for im in ds.images:
        path = ds.images_dir / im.file_name
        try:
            shape = read_image(path).shape
        except InputError as exc:
            problems.append(exc)
            continue
        if shape != (im.height, im.width):
            problems.append(
                DatasetError(
                    f"image is {shape[0]}x{shape[1]} (HxW), the annotation file says {im.height}x{im.width}",
                    path,
                )
            )
    if problems:
        more = f" (and {len(problems) - 1} more images)" if len(problems) > 1 else ""
        raise DatasetError(problems[0].message + more, problems[0].path)
    return len(ds.images)
