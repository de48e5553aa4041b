import json

import numpy as np
import pytest

from micrometry.cli import run
from micrometry.errors import DatasetError
from micrometry.io.coco import (
    CocoRepairWarning,
    instances_to_results,
    load_coco,
    load_results,
    mask_to_rle,
    polygons_from_mask,
    rle_to_mask,
    write_results,
)
from micrometry.io.image import write_image

H, W = 40, 50


def square(x, y, s):
    return [x, y, x + s, y, x + s, y + s, x, y + s]


def uncompressed_rle(mask):
    """Column-major run lengths starting with a background run, as COCO defines them."""
    flat = mask.T.ravel().astype(np.uint8)
    counts, current, run_len = [], 0, 0
    for v in flat:
        if v == current:
            run_len += 1
        else:
            counts.append(run_len)
            current, run_len = v, 1
    counts.append(run_len)
    return {"size": [H, W], "counts": [int(c) for c in counts]}


def rect_mask(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture
def coco_dir(tmp_path):
    """A valid COCO folder using every legal variant: polygons, multi-polygons, both RLE forms, crowd, empty image."""
    images = tmp_path / "ds" / "images"
    images.mkdir(parents=True)
    for name in ("a.png", "b.png", "c.png"):
        write_image(images / name, np.zeros((H, W), np.uint8))
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": H, "width": W},
            {"id": 2, "file_name": "b.png", "height": H, "width": W, "license": 0},  # extra key
            {"id": 3, "file_name": "c.png", "height": H, "width": W},  # no annotations
        ],
        "categories": [{"id": 1, "name": "Normal"}],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 1,
                "segmentation": [square(2, 2, 10)],
                "bbox": [2, 2, 10, 10],
                "area": 100,
                "iscrowd": 0,
            },
            {
                "id": 11,
                "image_id": 1,
                "category_id": 1,
                "segmentation": [square(20, 5, 5), square(30, 5, 5)],
                "bbox": [20, 5, 15, 5],
                "area": 50,
                "iscrowd": 0,
                "attributes": {"occluded": False},
            },
            {
                "id": 12,
                "image_id": 2,
                "category_id": 1,
                "segmentation": mask_to_rle(rect_mask(5, 15, 5, 25)),
                "bbox": [5, 5, 20, 10],
                "area": 200,
                "iscrowd": 0,
            },
            {
                "id": 13,
                "image_id": 2,
                "category_id": 1,
                "segmentation": uncompressed_rle(rect_mask(20, 30, 10, 20)),
                "bbox": [10, 20, 10, 10],
                "area": 100,
                "iscrowd": 1,
            },
        ],
    }
    (tmp_path / "ds" / "annotations.json").write_text(json.dumps(data))
    return tmp_path / "ds"


def test_valid_dataset_loads_every_variant_without_warnings(coco_dir, recwarn):
    ds = load_coco(coco_dir)
    assert not [w for w in recwarn if issubclass(w.category, CocoRepairWarning)]
    assert [im.id for im in ds.images] == [1, 2, 3]
    assert ds.annotations[3] == []
    assert ds.n_annotations == 4
    masks = ds.masks(1)
    assert masks.shape == (2, H, W)
    assert masks[0].sum() == 100 and masks[1].sum() == 50  # multi-polygon: two 5x5 squares
    np.testing.assert_array_equal(ds.masks(2)[0], rect_mask(5, 15, 5, 25))
    np.testing.assert_array_equal(ds.crowd_mask(2), rect_mask(20, 30, 10, 20))  # uncompressed RLE
    labels = ds.labels(2, include_crowd=True)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert ds.image_path(1) == coco_dir / "images" / "a.png"


def test_mask_rle_roundtrip_and_polygons_from_mask():
    rng = np.random.default_rng(1)
    mask = np.zeros((H, W), bool)
    yy, xx = np.mgrid[:H, :W]
    mask |= (yy - 20) ** 2 + (xx - 25) ** 2 < 12**2
    mask ^= rng.random((H, W)) < 0.01  # a little noise to exercise RLE
    np.testing.assert_array_equal(rle_to_mask(mask_to_rle(mask)), mask)
    disc = (yy - 20) ** 2 + (xx - 25) ** 2 < 12**2
    from pycocotools import mask as mu

    back = rle_to_mask(mu.merge(mu.frPyObjects(polygons_from_mask(disc), H, W)))
    assert (back & disc).sum() / (back | disc).sum() > 0.95


def test_results_roundtrip(tmp_path, coco_dir):
    ds = load_coco(coco_dir)
    labels = np.zeros((H, W), np.int32)
    labels[2:12, 2:12] = 1
    labels[20:25, 30:40] = 3  # id 2 is missing on purpose
    res = instances_to_results(1, labels, np.array([0.9, 0.5, 0.7], np.float32))
    assert [r["score"] for r in res] == [0.9, 0.7]
    write_results(tmp_path / "r.json", res)
    lines = (tmp_path / "r.json").read_text().splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == 4  # one detection per line
    back = load_results(tmp_path / "r.json", ds)
    assert back[1]["bbox"] == [30.0, 20.0, 10.0, 5.0]
    np.testing.assert_array_equal(rle_to_mask(back[0]["segmentation"]), labels == 1)


def _write(coco_dir, mutate):
    path = coco_dir / "annotations.json"
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    return coco_dir


def _set(key_path, value):
    def mutate(data):
        obj = data
        for k in key_path[:-1]:
            obj = obj[k]
        obj[key_path[-1]] = value

    return mutate


def _delete(key_path):
    def mutate(data):
        obj = data
        for k in key_path[:-1]:
            obj = obj[k]
        del obj[key_path[-1]]

    return mutate


FATAL = [
    ("unknown image", _set(["annotations", 0, "image_id"], 99), "annotation 10 points at unknown image 99"),
    ("no segmentation", _delete(["annotations", 1, "segmentation"]), "annotation 11 has no 'segmentation'"),
    (
        "odd polygon",
        _set(["annotations", 0, "segmentation"], [[1, 2, 3, 4, 5, 6, 7]]),
        "annotation 10: polygon has an odd",
    ),
    (
        "bad polygon",
        _set(["annotations", 0, "segmentation"], [["a", 1, 2]]),
        "annotation 10: polygon is not a flat",
    ),
    ("rle size", _set(["annotations", 2, "segmentation", "size"], [10, 10]), "annotation 12: RLE size 10x10"),
    (
        "rle counts sum",
        _set(["annotations", 3, "segmentation", "counts"], [5, 5]),
        "annotation 13: uncompressed RLE covers",
    ),
    ("duplicate ann id", _set(["annotations", 1, "id"], 10), "annotation 10: duplicate annotation id"),
    ("duplicate image id", _set(["images", 1, "id"], 1), "image 1: duplicate image id"),
    ("no images", _delete(["images"]), "no 'images' list"),
    ("image size mismatch", _set(["images", 0, "height"], 41), "image 1 (a.png): file says 41x50"),
    ("missing file", _set(["images", 2, "file_name"], "zz.png"), "image 3: file zz.png not found"),
    ("unknown category", _set(["annotations", 0, "category_id"], 7), "annotation 10 has category_id 7"),
]


@pytest.mark.parametrize("name, mutate, message", FATAL, ids=[f[0] for f in FATAL])
def test_fatal_defects_raise_dataset_error_naming_the_id(coco_dir, name, mutate, message, capsys):
    _write(coco_dir, mutate)
    with pytest.raises(DatasetError) as info:
        load_coco(coco_dir)
    assert message in str(info.value)
    assert "annotations.json" in str(info.value)
    capsys.readouterr()
    assert run(["particles", "info", str(coco_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_invalid_json_is_one_line_error(coco_dir, capsys):
    (coco_dir / "annotations.json").write_text('{"images": [')
    assert run(["particles", "info", str(coco_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not valid JSON" in err and len(err.splitlines()) == 1


REPAIRABLE = [
    (
        "degenerate polygon",
        _set(["annotations", 1, "segmentation"], [square(20, 5, 5), [1, 1, 2, 2]]),
        "degenerate polygons",
        4,
    ),
    (
        "all polygons degenerate",
        _set(["annotations", 0, "segmentation"], [[1, 1, 5, 5, 9, 9]]),
        "annotations with no usable polygon dropped",
        3,
    ),
    ("missing bbox", _delete(["annotations", 0, "bbox"]), "'bbox' recomputed", 4),
    ("missing ann id", _delete(["annotations", 0, "id"]), "given new ids", 4),
    ("missing category", _delete(["annotations", 0, "category_id"]), "given category 1", 4),
    ("missing categories", _delete(["categories"]), "no categories", 4),
    ("missing image size", _delete(["images", 0, "width"]), "image sizes missing", 4),
    ("outside image", _set(["annotations", 0, "segmentation"], [square(60, 60, 5)]), "outside the image", 3),
]


@pytest.mark.parametrize("name, mutate, message, n_left", REPAIRABLE, ids=[r[0] for r in REPAIRABLE])
def test_repairable_defects_warn_and_load(coco_dir, name, mutate, message, n_left, capsys):
    _write(coco_dir, mutate)
    with pytest.warns(CocoRepairWarning, match=message):
        ds = load_coco(coco_dir)
    assert ds.n_annotations == n_left
    assert all(a.bbox and a.area > 0 for a in ds.all_annotations())
    capsys.readouterr()
    assert run(["particles", "info", str(coco_dir)]) == 0
    assert "warning:" in capsys.readouterr().err


def test_info_prints_counts_and_explicit_flags(coco_dir, capsys, tmp_path):
    moved = tmp_path / "elsewhere.json"
    moved.write_text((coco_dir / "annotations.json").read_text())
    assert (
        run(
            ["particles", "info", "--images", str(coco_dir / "images"), "--annotations", str(moved), "--json"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["images"] == 3
    assert out["summary"]["annotations"] == 4
    assert out["summary"]["crowd_annotations"] == 1
    assert out["summary"]["images_without_annotations"] == 1
    assert [r["objects"] for r in out["images"]] == [2, 1, 0]
    assert run(["particles", "info", str(coco_dir)]) == 0
    table = capsys.readouterr().out
    assert "per image" in table and "a.png" in table


def test_images_only_file_loads(tmp_path, coco_dir):
    data = json.loads((coco_dir / "annotations.json").read_text())
    data.pop("annotations")
    (tmp_path / "images.json").write_text(json.dumps(data))
    ds = load_coco(tmp_path / "images.json")
    assert len(ds.images) == 3 and ds.n_annotations == 0


def test_labels_to_rles_matches_full_frame_encoding():
    from micrometry.io.coco import labels_to_rles

    rng = np.random.default_rng(2)
    labels = np.zeros((H, W), np.int32)
    labels[0:5, 0:3] = 1  # touches the first column and row
    labels[30:40, 45:50] = 2  # touches the last column
    labels[H - 1, 10:20] = 3  # last row only
    labels[10:20, 20:30] = np.where(rng.random((10, 10)) < 0.5, 5, 0)  # ragged, id 4 absent
    labels[:, 35] = 6  # a full column: foreground run spans the whole column
    rles = labels_to_rles(labels)
    assert rles[3] is None and len(rles) == 6
    for i, rle in enumerate(rles, start=1):
        if rle is not None:
            assert rle == mask_to_rle(labels == i)


def test_labels_to_rles_of_scattered_labels_match_each_mask():
    """Every pixel a random label of 30: runs of one label broken by others, in every column, at both ends."""
    from micrometry.io.coco import labels_to_rles

    labels = np.random.default_rng(4).integers(0, 31, (H, W)).astype(np.uint16)
    labels[labels == 7] = 0  # an absent id
    labels[-1, -1] = 30  # the last pixel: no background after the label's last run
    rles = labels_to_rles(labels)
    assert len(rles) == 30 and rles[6] is None
    for i, rle in enumerate(rles, start=1):
        if i != 7:
            assert rle == mask_to_rle(labels == i), i
    assert labels_to_rles(np.zeros((H, W), np.int32)) == []


# Results (detections) go through the same segmentation check as the dataset: same fatal defects, same repairs.
RESULT_FATAL = [
    ("odd polygon", [[1, 2, 3, 4, 5, 6, 7]], "result 0: polygon has an odd number of coordinates (7)"),
    ("bad polygon", [["a", 1, 2]], "result 0: polygon is not a flat"),
    (
        "rle size",
        {"size": [10, 10], "counts": [100]},
        "result 0: RLE size 10x10 does not match image 1 (40x50)",
    ),
    ("rle counts sum", {"size": [H, W], "counts": [5, 5]}, "result 0: uncompressed RLE covers 10 pixels"),
    ("rle negative count", {"size": [H, W], "counts": [-1, H * W + 1]}, "must be non-negative integers"),
    (
        "rle too long",
        {"size": [H, W], "counts": "0`h9"},  # a 100x100 mask
        "result 0: compressed RLE 'counts' cannot be decoded",
    ),
    ("rle without size", {"counts": "PX1"}, "result 0: RLE needs 'size'"),
    ("not a segmentation", "polygon", "result 0: 'segmentation' must be a list of polygons or an RLE object"),
]


@pytest.mark.parametrize("name, seg, message", RESULT_FATAL, ids=[f[0] for f in RESULT_FATAL])
def test_results_fatal_segmentations_name_the_record(tmp_path, coco_dir, name, seg, message, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"image_id": 1, "category_id": 1, "segmentation": seg, "score": 0.9}]))
    with pytest.raises(DatasetError) as info:
        load_results(path, load_coco(coco_dir))
    assert message in str(info.value) and str(info.value).startswith(str(path))
    capsys.readouterr()
    assert run(["particles", "evaluate", str(path), str(coco_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


RESULT_REPAIRABLE = [
    ("degenerate polygon", [square(20, 5, 5), [1, 1, 2, 2]], "degenerate polygons", 1),
    ("all polygons degenerate", [[1, 1, 5, 5, 9, 9]], "results with no usable polygon dropped", 0),
    ("flat polygon", square(20, 5, 5), "flat polygon lists wrapped", 1),
    ("outside image", [square(60, 60, 5)], "results whose mask lies outside the image were dropped", 0),
    ("reaching outside", [square(45, 5, 10)], "polygons reaching outside their image clipped", 1),
    ("empty rle", mask_to_rle(np.zeros((H, W), bool)), "results with an empty mask dropped", 0),
]


@pytest.mark.parametrize(
    "name, seg, message, n_left", RESULT_REPAIRABLE, ids=[r[0] for r in RESULT_REPAIRABLE]
)
def test_results_repairable_segmentations_warn(tmp_path, coco_dir, name, seg, message, n_left, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"image_id": 1, "category_id": 1, "segmentation": seg, "score": 0.9}]))
    with pytest.warns(CocoRepairWarning, match=message):
        back = load_results(path, load_coco(coco_dir))
    assert len(back) == n_left
    for rec in back:
        mask = rle_to_mask(rec["segmentation"])
        assert mask.shape == (H, W) and mask.any()
        assert rec["bbox"][2] > 0 and rec["bbox"][3] > 0
    capsys.readouterr()
    assert run(["particles", "evaluate", str(path), str(coco_dir), "--json"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert any(message in line for line in warned) and all("r.json" in line for line in warned)


def test_results_without_dataset_check_rle_on_its_own_size(tmp_path):
    from micrometry.io.coco import normalize_results

    mask = rect_mask(5, 15, 5, 25)
    back = normalize_results([{"image_id": 7, "segmentation": uncompressed_rle(mask), "score": 0.5}])
    np.testing.assert_array_equal(rle_to_mask(back[0]["segmentation"]), mask)
    assert back[0]["bbox"] == [5.0, 5.0, 20.0, 10.0] and back[0]["category_id"] == 1
    with pytest.raises(DatasetError, match="uncompressed RLE covers 10 pixels, image has 2000"):
        normalize_results([{"image_id": 7, "segmentation": {"size": [H, W], "counts": [4, 6]}, "score": 0.5}])
    with pytest.raises(DatasetError, match="result 0: polygon results need the ground-truth image sizes"):
        normalize_results([{"image_id": 7, "segmentation": [square(2, 2, 5)], "score": 0.5}])
    with pytest.raises(DatasetError, match="result 0: 'category_id' must be an integer"):
        normalize_results([{"image_id": 7, "category_id": "1", "bbox": [0, 0, 1, 1]}])


@pytest.mark.parametrize(
    "key, value", [("image_id", [1]), ("category_id", [1]), ("category_id", "1"), ("image_id", True)]
)
def test_evaluate_refuses_results_whose_ids_are_not_integers(tmp_path, coco_dir, key, value, capsys):
    # found by bench/fuzz.py: lists and strings as ids reached the file-name matching and crashed
    record = {"image_id": 1, "category_id": 1, "segmentation": [square(20, 5, 5)], "score": 0.9, key: value}
    path = tmp_path / "r.json"
    path.write_text(json.dumps([record]))
    assert run(["particles", "evaluate", str(path), str(coco_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and f"'{key}' must be an integer" in err and len(err.splitlines()) == 1
