"""Training data in the layouts users keep: COCO, images/ + masks/, images/ + rois/, a corrected prediction."""

import json

import numpy as np
import pytest
import roifile
from scipy import ndimage
from skimage.draw import disk, polygon

from micrometry.cli import run
from micrometry.io.coco import load_coco
from micrometry.io.image import write_image
from micrometry.particles.rois import (
    ROISET_SUFFIX,
    label_polygons,
    polygons_to_labels,
    read_roiset,
    write_polygons,
    write_roiset,
)
from micrometry.particles.training_data import detect_layout, load_training_set
from particle_scenes import make_scene, write_coco_folder


def cli(args):
    return run([str(a) for a in args])


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _same_objects(found, truth, min_iou=0.999):
    """Every true object has exactly one found object with IoU >= ``min_iou``, and nothing else was found."""
    assert found.max() == len(np.unique(found[found > 0])) == len(np.unique(truth[truth > 0]))
    for t in np.unique(truth[truth > 0]):
        ids, counts = np.unique(found[truth == t], return_counts=True)
        j = ids[np.argmax(counts)]
        assert j > 0 and _iou(found == j, truth == t) >= min_iou, (t, _iou(found == j, truth == t))


def shapes_labels(seed=0, size=240):
    """Label image of varied particles: single pixels, thin bars, concave stars, crescents, discs."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int32)
    k = 1
    for y in range(2, size - 24, 26):
        for x in range(2, size - 24, 26):
            kind = k % 6
            if kind == 0:
                labels[y + 3, x + 4] = k
            elif kind == 1:
                labels[y : y + 2, x : x + int(rng.integers(2, 20))] = k
            elif kind == 2:  # a 5-pointed star: deeply concave
                angle = np.linspace(0, 2 * np.pi, 11)[:-1] + rng.uniform(0, 1)
                r = np.where(np.arange(10) % 2, rng.uniform(3, 5), rng.uniform(9, 12))
                rr, cc = polygon(y + 12 + r * np.sin(angle), x + 12 + r * np.cos(angle), labels.shape)
                labels[rr, cc] = k
            elif kind == 3:  # a crescent
                rr, cc = disk((y + 11, x + 11), 10, shape=labels.shape)
                crescent = np.zeros_like(labels, bool)
                crescent[rr, cc] = True
                rr, cc = disk((y + 8, x + 14), 8, shape=labels.shape)
                crescent[rr, cc] = False
                labels[crescent] = k
            elif kind == 4:
                rr, cc = disk((y + 10, x + 10), rng.uniform(1.5, 10), shape=labels.shape)
                labels[rr, cc] = k
            else:  # an L
                labels[y : y + 15, x : x + 4] = k
                labels[y + 11 : y + 15, x : x + 14] = k
            k += 1
    # two touching particles
    labels[size - 20 : size - 10, 5:15] = k
    labels[size - 20 : size - 10, 15:25] = k + 1
    # one piece each (8-connected, as ImageJ's wand sees it): a ROI outlines one region
    for i in range(1, k + 2):
        parts, n = ndimage.label(labels == i, structure=np.ones((3, 3)))
        if n > 1:
            labels[(parts > 0) & (parts != np.argmax(np.bincount(parts.ravel())[1:]) + 1)] = 0
    return labels


def test_roi_sets_fill_back_to_the_labels_they_were_written_from(tmp_path):
    labels = shapes_labels()
    assert write_roiset(tmp_path / "a.zip", labels) == labels.max()
    outlines = read_roiset(tmp_path / "a.zip")
    back = polygons_to_labels(list(outlines.values()), labels.shape)
    # ROI names are the label ids: each ROI fills exactly the pixels of its particle
    for index, name in enumerate(outlines, start=1):
        assert _iou(back == index, labels == int(name)) == 1.0, name
    _same_objects(back, labels)


def test_overlapping_rois_keep_the_smaller_one_whole():
    big = np.array([[0, 0], [40, 0], [40, 40], [0, 40]], float)
    small = np.array([[10, 10], [20, 10], [20, 20], [10, 20]], float)
    labels = polygons_to_labels([small, big], (50, 50))
    assert (labels == 1).sum() == 100 and (labels == 2).sum() == 1600 - 100


def _scenes(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [make_scene(rng, 96, 128, n=8) for _ in range(n)]


def _write_masks_layout(root, scenes, tiff16=False):
    for i, (image, labels) in enumerate(scenes):
        write_image(root / "images" / f"im{i}.png", image)
        if tiff16:
            write_image(root / "masks" / f"im{i}_cp_masks.tif", (labels * 300).astype(np.uint16))
        else:
            write_image(root / "masks" / f"im{i}.png", labels.astype(np.uint8))
    return root


def _write_rois_layout(root, scenes):
    for i, (image, labels) in enumerate(scenes):
        write_image(root / "images" / f"im{i}.png", image)
        if i == 1:  # single .roi files in a folder named by the stem
            (root / "rois" / f"im{i}").mkdir(parents=True)
            for label, xy in label_polygons(labels).items():
                roi = roifile.ImagejRoi.frompoints(xy.astype(np.float32), name=str(label))
                roi.tofile(root / "rois" / f"im{i}" / f"{label}.roi")
        else:
            write_roiset(root / "rois" / f"im{i}{ROISET_SUFFIX}", labels)
    return root


@pytest.mark.parametrize("layout", ["masks8", "masks16", "rois", "coco"])
def test_every_layout_reads_the_same_objects(tmp_path, layout):
    scenes = _scenes()
    if layout.startswith("masks"):
        root = _write_masks_layout(tmp_path / "d", scenes, tiff16=layout == "masks16")
    elif layout == "rois":
        root = _write_rois_layout(tmp_path / "d", scenes)
    else:
        root = write_coco_folder(tmp_path / "d", n_images=3, height=96, width=128, n=8)
        scenes = [(None, d) for d in [load_coco(root).labels(i) for i in (1, 2, 3)]]
    assert detect_layout(root) == ("masks" if layout.startswith("masks") else layout)
    ds = load_training_set(root)
    assert len(ds.images) == 3
    for im, (_, truth) in zip(ds.images, scenes, strict=True):
        _same_objects(ds.labels(im.id), truth)


def test_info_and_convert_take_any_layout(tmp_path, capsys):
    scenes = _scenes()
    root = _write_rois_layout(tmp_path / "d", scenes)
    assert cli(["particles", "info", root, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    n_true = sum(int(labels.max()) for _, labels in scenes)
    assert figures["summary"]["layout"] == "rois" and figures["summary"]["annotations"] == n_true
    assert cli(["particles", "convert", root, "--out", tmp_path / "coco"]) == 0
    assert f"3 images, {n_true} particles" in capsys.readouterr().out
    converted = load_coco(tmp_path / "coco")
    assert sorted(p.name for p in (tmp_path / "coco" / "images").iterdir()) == [
        "im0.png",
        "im1.png",
        "im2.png",
    ]
    for im, (_, truth) in zip(converted.images, scenes, strict=True):
        _same_objects(converted.labels(im.id), truth)
    # the converted folder is a COCO layout of its own
    assert detect_layout(tmp_path / "coco") == "coco"
    assert cli(["particles", "convert", root, "--out", tmp_path / "coco"]) == 2  # no silent overwrite


def test_no_layout_is_one_line_naming_the_layouts(tmp_path, capsys):
    (tmp_path / "d" / "pictures").mkdir(parents=True)
    assert cli(["particles", "train", tmp_path / "d", "--out", tmp_path / "run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    for name in ("annotations.json", "images/ + masks/", "images/ + rois/", "prediction"):
        assert name in err
    assert not (tmp_path / "run").exists()
    assert cli(["particles", "info", tmp_path / "d"]) == 2


def test_masks_that_do_not_fit_and_images_without_masks(tmp_path, capsys):
    scenes = _scenes()
    root = _write_masks_layout(tmp_path / "d", scenes)
    (root / "masks" / "im2.png").unlink()
    with pytest.warns(UserWarning, match="1 of 3 images have no annotations and are left out"):
        ds = load_training_set(root)
    assert [im.file_name for im in ds.images] == ["im0.png", "im1.png"]
    write_image(root / "masks" / "im0.png", np.zeros((10, 10), np.uint8))
    assert cli(["particles", "info", root]) == 2
    assert "label image is 10x10 (HxW), its image 96x128" in capsys.readouterr().err


def test_a_binary_mask_is_split_into_its_objects(tmp_path):
    image, _ = _scenes(1)[0]
    binary = np.zeros(image.shape, np.uint8)
    binary[10:20, 10:20] = 255
    binary[40:50, 60:75] = 255
    write_image(tmp_path / "d" / "images" / "a.png", image)
    write_image(tmp_path / "d" / "masks" / "a.png", binary)
    with pytest.warns(UserWarning, match="binary mask"):
        ds = load_training_set(tmp_path / "d")
    assert ds.n_annotations == 2


def _edit_roiset(path, shape):
    """Delete the first ROI, move the second by (+7, +5) px, add a new square: what a Fiji user does."""
    outlines = read_roiset(path)
    names = list(outlines)
    deleted, moved = names[0], names[1]
    edited = {int(n): xy for n, xy in outlines.items() if n != deleted}
    edited[int(moved)] = outlines[moved] + [7, 5]
    h, w = shape
    square = np.array([[w - 14, h - 14], [w - 4, h - 14], [w - 4, h - 4], [w - 14, h - 4]], float)
    edited[9999] = square
    write_polygons(path, edited)
    return int(deleted), int(moved)


@pytest.mark.slow
def test_corrected_prediction_round_trip_trains_and_predicts(tmp_path, capsys):
    """predict -> ROI set edited (delete, move, add) -> train --init shipped -> predict with the new model."""
    scenes = _scenes(2, seed=4)
    for i, (image, _) in enumerate(scenes):
        write_image(tmp_path / "raw" / f"im{i}.png", image)
    pred = tmp_path / "pred"
    assert cli(["particles", "predict", tmp_path / "raw", "--out", pred, "--no-overlays"]) == 0
    assert detect_layout(pred) == "prediction"
    predicted = [np.asarray(load_training_set(pred).labels(i)) for i in (1, 2)]
    # untouched, the prediction folder reads back as its label images
    from micrometry.particles.label_sources import read_label_image

    _same_objects(predicted[0], read_label_image(pred / "labels" / "im0.png"))
    deleted, moved = _edit_roiset(pred / "rois" / f"im0{ROISET_SUFFIX}", scenes[0][0].shape)
    before = read_label_image(pred / "labels" / "im0.png")
    ds = load_training_set(pred)
    after = ds.labels(1)
    assert after.max() == before.max()  # one deleted, one added
    assert not (
        after[before == deleted] > 0
    ).all()  # the deleted particle's pixels are not one object any more
    shifted = np.roll(np.roll(before == moved, 5, axis=0), 7, axis=1)
    ids, counts = np.unique(after[shifted], return_counts=True)
    assert _iou(after == ids[np.argmax(counts)], shifted) >= 0.95  # moved by (7, 5) px, same shape
    assert (after[-13:-5, -13:-5] > 0).all()  # the added square
    _same_objects(ds.labels(2), predicted[1])  # the other image: its label image, untouched
    capsys.readouterr()
    assert cli(["particles", "info", pred, "--json"]) == 0  # says which file each image was read from
    rows = json.loads(capsys.readouterr().out)["images"]
    assert [r["annotations"] for r in rows] == [f"rois/im0{ROISET_SUFFIX}", "labels/im1.png"]
    # and the prediction folder trains, fine-tuning the shipped model, then predicts
    run_dir = tmp_path / "run"
    train = ["particles", "train", pred, "--out", run_dir, "--init", "shipped", "--epochs", "1"]
    train += ["--steps-per-epoch", "2", "--batch-size", "2", "--crop", "64", "--threads", "1"]
    assert cli(train) == 0
    assert json.loads((run_dir / "config.json").read_text())["n_train"] == 2
    assert (
        cli(["particles", "predict", tmp_path / "raw", "--out", tmp_path / "pred2", "--model", run_dir]) == 0
    )
    assert json.loads((tmp_path / "pred2" / "prediction.json").read_text())["images"] == 2
    capsys.readouterr()
    # both files of one image edited: which one to train on is the user's call
    write_image(pred / "labels" / "im0.png", np.zeros(scenes[0][0].shape, np.uint16))
    assert cli(["particles", "info", pred]) == 2
    assert "both the label image and the ROI set of im0.png were edited" in capsys.readouterr().err
