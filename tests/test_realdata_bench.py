"""bench/realdata.py: wheel contents to COCO, and the figures it reports (on small data made here;
the bench itself fetches its wheels only when it runs, never in tests)."""

import importlib.util
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from micrometry.io.coco import load_coco

spec = importlib.util.spec_from_file_location(
    "realdata", Path(__file__).resolve().parents[1] / "bench" / "realdata.py"
)
realdata = importlib.util.module_from_spec(spec)
spec.loader.exec_module(realdata)


def painted_mask() -> tuple[np.ndarray, np.ndarray]:
    """An RGB mask (one colour per nucleus, one colour reused for two nuclei, a speck) and its labels."""
    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb[5:20, 5:20] = (226, 10, 10)
    rgb[30:50, 10:30] = (10, 227, 10)
    rgb[30:50, 50:70] = (10, 227, 10)  # the same colour, another nucleus
    rgb[2:4, 70:72] = (5, 5, 228)  # a 4-px speck of paint
    return rgb


def test_colour_instances_split_reused_colours_and_drop_specks():
    labels = realdata.colour_instances(painted_mask())
    assert labels.max() == 3
    areas = sorted(np.bincount(labels.ravel())[1:])
    assert areas == [225, 400, 400]


def tif_bytes(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    tifffile.imwrite(out, image)
    return out.getvalue()


def fake_mnfinder_wheel(path: Path) -> Path:
    """A wheel laid out as mnfinder's: one test image, and two training images of which one is the test image."""
    image = (np.arange(60 * 80, dtype=np.uint16).reshape(60, 80) * 7) % 4000
    png = io.BytesIO()
    Image.fromarray(painted_mask()).save(png, format="PNG")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mnfinder/test-data/set1/images/a.tif", tif_bytes(image))
        z.writestr("mnfinder/test-data/set1/images/a.png", b"a preview, not the image")
        z.writestr("mnfinder/test-data/set1/nucleus_masks/a.png", png.getvalue())
        z.writestr("mnfinder/test-data/set1/mn_masks/a.png", png.getvalue())
        z.writestr("mnfinder/training-data/set0/images/a.tif", tif_bytes(image))  # the test image again
        z.writestr("mnfinder/training-data/set0/nucleus_masks/a.png", png.getvalue())
        z.writestr("mnfinder/validation-data/set2/images/b.tif", tif_bytes(image[::-1].copy()))
        z.writestr("mnfinder/validation-data/set2/nucleus_masks/b.png", png.getvalue())
    return path


def test_the_training_set_leaves_out_images_that_are_also_test_images(tmp_path, monkeypatch):
    (tmp_path / "wheels").mkdir()
    fake_mnfinder_wheel(tmp_path / "wheels" / "mnfinder-1.2.3-py3-none-any.whl")
    monkeypatch.setattr(realdata.subprocess, "run", lambda *a, **k: pytest.fail("fetched although cached"))
    test = load_coco(realdata.prepare("mnfinder", tmp_path))
    train = load_coco(realdata.prepare("mnfinder-train", tmp_path))
    assert [im.file_name for im in test.images] == ["set1_a.png"]
    assert [im.file_name for im in train.images] == ["validation_set2_b.png"]
    assert train.labels(train.images[0].id).max() == 3


def test_prepare_converts_a_cached_wheel_to_coco_without_fetching(tmp_path, monkeypatch):
    (tmp_path / "wheels").mkdir()
    fake_mnfinder_wheel(tmp_path / "wheels" / "mnfinder-1.2.3-py3-none-any.whl")
    monkeypatch.setattr(realdata.subprocess, "run", lambda *a, **k: pytest.fail("fetched although cached"))
    coco_dir = realdata.prepare("mnfinder", tmp_path)
    dataset = load_coco(coco_dir)
    assert [im.file_name for im in dataset.images] == ["set1_a.png"]
    labels = dataset.labels(dataset.images[0].id)
    assert labels.max() == 3 and np.array_equal(labels > 0, realdata.colour_instances(painted_mask()) > 0)
    from micrometry.io.image import read_image

    assert read_image(dataset.image_path(dataset.images[0].id)).dtype == np.uint16  # 16 bits kept


def test_score_outputs_counts_sizes_and_ks(tmp_path):
    coco_dir = realdata.write_coco(
        [("x", np.zeros((60, 80), np.uint8), realdata.colour_instances(painted_mask()))], tmp_path / "c"
    )
    dataset = load_coco(coco_dir)
    truth = dataset.labels(1)
    perfect = realdata.score_outputs(dataset, [1], {1: (truth, np.ones(3, np.float32))})
    assert perfect["AP"] == pytest.approx(1.0) and perfect["count_ratio"] == 1.0
    assert perfect["D50_err"] == pytest.approx(0.0) and perfect["KS"] == 0.0 and perfect["F1@0.5"] == 1.0
    # every object cut in two halves: twice the count, diameters 1/sqrt(2), no match at IoU 0.5
    halves = truth.copy()
    for k in range(1, 4):
        ys, xs = np.nonzero(truth == k)
        halves[ys[xs > np.median(xs)], xs[xs > np.median(xs)]] = k + 3
    split = realdata.score_outputs(dataset, [1], {1: (halves, np.ones(6, np.float32))})
    assert split["count_ratio"] == 2.0 and split["F1@0.5"] < 0.7  # a half reaches IoU 0.5 at best
    assert split["D50_err"] == pytest.approx(1 / np.sqrt(2) - 1, abs=0.06) and split["KS"] == 1.0
