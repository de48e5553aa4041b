"""Issue 12: the generalist shipped model, automatic size, fine-tuning, and no silent wrong answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import command_argv, particles_train_argv
from micrometry.cli import run as cli
from micrometry.errors import InputError
from micrometry.io.atomic import write_json
from micrometry.io.coco import instances_to_results, labels_to_rles
from micrometry.io.image import write_image
from micrometry.modelfile import ExportedModel, write_model
from micrometry.particles.models import load_particle_model
from micrometry.particles.models.dense.dense_segmenter import build_network
from micrometry.particles.models.plausibility import plausibility_warnings
from micrometry.particles.models.sizing import (
    clear_border,
    estimate_diameter,
    median_diameter,
    probe_window,
    scale_for_diameter,
)
from micrometry.particles.models.validation import evaluate_label_images
from particle_scenes import make_scene, write_coco_folder


def disks(shape, diameter, n=6, seed=0) -> np.ndarray:
    """A label image of ``n`` disjoint disks of one diameter."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    placed = 0
    for _ in range(500):
        cy, cx = rng.uniform(diameter, shape[0] - diameter), rng.uniform(diameter, shape[1] - diameter)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= (diameter / 2) ** 2
        if labels[disk].any():
            continue
        placed += 1
        labels[disk] = placed
        if placed == n:
            break
    return labels


def random_model(folder, net_diameter=20.0, scale=None, widths=(8, 16)):
    """An untrained center-offset model folder (automatic size unless ``scale`` is given)."""
    torch.manual_seed(0)
    _, net = build_network("center-offset", widths)
    settings = {"widths": list(widths), "scale": scale, "method_config": {}}
    if scale is None:
        settings["net_diameter"] = net_diameter
    exported = ExportedModel(
        job="particles",
        model="center-offset",
        settings=settings,
        state={"modules": {"net": net.state_dict()}},
    )
    write_model(folder, exported)
    return folder


# -- automatic size ------------------------------------------------------------------------------


def test_median_diameter_and_scale():
    labels = disks((200, 200), 30, n=5)
    assert median_diameter(labels) == pytest.approx(30, rel=0.05)
    assert median_diameter(np.zeros((10, 10), np.int32)) is None
    assert scale_for_diameter(40, 20) == pytest.approx(0.5)
    assert scale_for_diameter(1, 20) == 4.0  # clipped to the allowed range


def test_estimate_diameter_finds_the_size_a_model_sees_only_near_its_trained_diameter():
    true_diameter, shape = 60.0, (400, 400)
    calls = []

    def segment_at(scale):  # a model that finds particles only when they meet it at 10-40 px
        calls.append(scale)
        seen = true_diameter * scale
        labels = disks(shape, true_diameter, n=6) if 10 <= seen <= 40 else np.zeros(shape, np.int32)
        return labels, np.ones(int(labels.max()), np.float32)

    diameter, scale, (labels, _) = estimate_diameter(segment_at, shape, 20.0)
    assert diameter == pytest.approx(true_diameter, rel=0.05)
    assert scale == pytest.approx(20 / true_diameter, rel=0.05)
    assert labels.max() == 6 and len(calls) <= 3


def test_probe_window_and_clear_border():
    assert probe_window((400, 500), 1.0) is None  # 320 px of 400x500: probing the whole image is as cheap
    rows, cols = probe_window((2000, 2400), 0.5)  # 640 px a side, centred
    assert (rows.start, rows.stop, cols.start, cols.stop) == (680, 1320, 880, 1520)
    labels = np.zeros((20, 20), np.int32)
    labels[0:3, 5:8], labels[8:12, 8:12] = 1, 2
    assert set(np.unique(clear_border(labels))) == {0, 2}
    only_cut = np.zeros((20, 20), np.int32)
    only_cut[0:3, 5:8] = 1
    assert clear_border(only_cut) is only_cut  # nothing inside: keep what there is


def test_sizing_probes_a_window_of_a_large_image_then_segments_it_whole(tmp_path, monkeypatch):
    segmenter = load_particle_model(random_model(tmp_path / "m"))
    true_diameter, seen = 80.0, []

    def fake_segment_labels(image, scale):  # a model that finds particles only near 20 network px
        seen.append((image.shape, round(scale, 3)))
        found = 10 <= true_diameter * scale <= 40
        labels = disks(image.shape, true_diameter, n=12) if found else np.zeros(image.shape, np.int32)
        return labels, np.ones(int(labels.max()), np.float32)

    monkeypatch.setattr(segmenter, "segment_labels", fake_segment_labels)
    labels, scores, info = segmenter.segment_sized(np.zeros((1500, 1800), np.uint8))
    assert info["diameter_px"] == pytest.approx(true_diameter, rel=0.05)
    assert info["scale"] == pytest.approx(20 / true_diameter, rel=0.05)
    # sizing passes saw windows (smaller than the image); only the last pass saw the whole image
    *probes, last = seen
    assert probes and all(shape[0] < 1500 and shape[1] < 1800 for shape, _ in probes)
    assert last == ((1500, 1800), round(info["scale"], 3)) and labels.shape == (1500, 1800)


def test_diameter_option_fixes_the_scale(tmp_path):
    model = random_model(tmp_path / "m")
    segmenter = load_particle_model(model, diameter=40.0)
    labels, scores, info = segmenter.segment_sized(np.full((64, 80), 100, np.uint8))
    assert info["scale"] == pytest.approx(0.5) and info["diameter_source"].startswith("given")
    fixed = random_model(tmp_path / "fixed", scale=0.5)
    with pytest.raises(InputError, match="--diameter needs a model trained with automatic size"):
        load_particle_model(fixed, diameter=40.0)


def test_predict_prints_and_stores_the_diameter_and_scale(tmp_path, capsys):
    image, _ = make_scene(np.random.default_rng(1), 128, 160, n=8)
    write_image(tmp_path / "in" / "a.png", image)
    assert (
        cli(
            command_argv(
                "particles", "predict", tmp_path / "in", out=tmp_path / "p", diameter=25, no_overlays=True
            )
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "a.png: diameter 25.0 px (given (--diameter)), scale 0.8" in out
    summary = json.loads((tmp_path / "p" / "prediction.json").read_text())
    assert summary["per_image"][0]["diameter_px"] == 25.0 and summary["per_image"][0]["scale"] == 0.8


# -- polarity: one model, either polarity, no flag ---------------------------------------------


def test_inverted_image_segments_the_same_particles():
    torch.set_num_threads(1)
    image, truth = make_scene(np.random.default_rng(3), 192, 224, n=12, radius=(8, 14))
    segmenter = load_particle_model("shipped")
    bright = segmenter.segment(image)  # bright particles on a dark field
    dark = segmenter.segment(255 - image)  # the same, dark on bright
    assert evaluate_label_images([(bright.labels, bright.scores)], [truth])["F1@0.5"] >= 0.8
    matched = evaluate_label_images([(dark.labels, dark.scores)], [bright.labels])
    assert matched["F1@0.5"] >= 0.8 and matched["AP50"] >= 0.7


# -- fine-tuning ---------------------------------------------------------------------------------


def test_init_starts_from_the_model_weights_and_says_how_it_validates(tmp_path, capsys):
    from micrometry.particles.models.base import read_particle_model

    model = random_model(tmp_path / "m")
    data = write_coco_folder(tmp_path / "coco", n_images=3, height=96, width=128, n=8)
    tiny = {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2, "crop": 64, "threads": 1}
    assert cli(particles_train_argv(data, tmp_path / "run", init=model, **tiny)) == 0
    said = capsys.readouterr()
    assert "every annotated pixel is trained on" in said.err  # the console, not only log.txt
    assert "fine-tuned on 3 image(s): the model predicts with flip TTA by default" in said.out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    s = config["settings"]
    assert s["init"] == str(model) and s["widths"] == [8, 16] and s["warmup"] > 0
    assert s["lr"] == pytest.approx(3e-3 / 3) and s["scale"] is None and s["net_diameter"] == 20.0
    start = read_particle_model(model).state["modules"]["net"]
    assert cli(["export", tmp_path / "run", "--out", tmp_path / "tuned"]) == 0
    tuned = read_particle_model(tmp_path / "tuned").state["modules"]["net"]
    # one warm-up step moves the weights only a little; a fresh network differs entirely
    key = next(k for k in start if k.endswith("weight"))
    assert torch.allclose(tuned[key], start[key], atol=1e-3) and not torch.equal(tuned[key], start[key])
    torch.manual_seed(1)
    fresh = build_network("center-offset", (8, 16))[1].state_dict()[key]
    assert not torch.allclose(fresh, start[key], atol=1e-3)


def test_a_few_image_finetune_predicts_with_flip_tta_unless_told_not_to(tmp_path, capsys):
    from micrometry.particles.models.base import DEFAULT_TTA, read_particle_model
    from micrometry.particles.tta import TTASegmenter

    model = random_model(tmp_path / "m")
    data = write_coco_folder(tmp_path / "coco", n_images=2, height=96, width=128, n=8)
    tiny = {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2, "crop": 64, "threads": 1}
    assert cli(particles_train_argv(data, tmp_path / "run", init=model, **tiny)) == 0
    assert cli(["export", tmp_path / "run", "--out", tmp_path / "tuned"]) == 0
    assert read_particle_model(tmp_path / "tuned").settings[DEFAULT_TTA] is True
    assert DEFAULT_TTA not in read_particle_model(model).settings  # a model trained from random weights
    for source in (tmp_path / "run", tmp_path / "tuned"):
        assert isinstance(load_particle_model(source), TTASegmenter)
        assert not isinstance(load_particle_model(source, tta=False), TTASegmenter)
    assert not isinstance(load_particle_model(model), TTASegmenter)
    capsys.readouterr()
    for flag, expected in ((None, True), ("--no-tta", False)):
        pred = tmp_path / f"pred-{flag}"
        argv = ["particles", "predict", data / "images", "--model", tmp_path / "tuned", "--out", pred]
        assert cli(argv + ([flag] if flag else [])) == 0
        said = capsys.readouterr().out
        assert ("flip TTA on: the model's default" in said) is expected
        assert ("tta" in json.loads((pred / "prediction.json").read_text())) is expected


def test_init_refuses_another_architecture(tmp_path, capsys):
    model = random_model(tmp_path / "m")
    data = write_coco_folder(tmp_path / "coco", n_images=2, height=64, width=64, n=3)
    assert cli(particles_train_argv(data, tmp_path / "run", init=model, model="unet-watershed")) == 2
    assert "is a 'center-offset' model, not 'unet-watershed'" in capsys.readouterr().err
    assert cli(["particles", "train", data, "--out", tmp_path / "run2", "--init", tmp_path / "nothing"]) == 2
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()


# -- measure / compare given photos --------------------------------------------------------------


def write_photos(folder, n=2, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, _ = make_scene(rng, 128, 160, n=8)
        write_image(folder / f"p{i}.png", image)
    return folder


def test_measure_and_compare_refuse_photos_as_label_images(tmp_path, capsys):
    photos = write_photos(tmp_path / "A")
    write_photos(tmp_path / "B", seed=1)
    assert cli(["particles", "measure", photos, "--out", tmp_path / "m.csv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "looks like a photo" in err[0] and "--model shipped" in err[0]
    assert cli(["particles", "compare", photos, tmp_path / "B", "--out", tmp_path / "cmp"]) == 2
    assert "looks like a photo" in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "cmp").exists()


def test_measure_segments_photos_with_the_shipped_model_and_skips_label_images(tmp_path, capsys):
    photos = write_photos(tmp_path / "A")
    _, labels = make_scene(np.random.default_rng(5), 128, 160, n=8)
    write_image(photos / "z_labels.png", labels.astype(np.uint16))
    assert cli(["particles", "measure", photos, "--model", "shipped", "--out", tmp_path / "m.csv"]) == 0
    captured = capsys.readouterr()
    assert "segmenting the photos" in captured.out and "with model 'shipped'" in captured.out
    assert "z_labels.png: skipped: looks like a label image" in captured.err
    import pandas as pd

    table = pd.read_csv(tmp_path / "m.csv")
    assert set(table["Image"]) == {"p0", "p1"} and len(table) >= 8


def test_label_images_are_still_measured(tmp_path):
    _, labels = make_scene(np.random.default_rng(5), 128, 160, n=8)
    write_image(tmp_path / "L" / "a.png", labels.astype(np.uint16))
    assert cli(["particles", "measure", tmp_path / "L", "--out", tmp_path / "m.csv"]) == 0


# -- evaluate ------------------------------------------------------------------------------------


def truth_and_results(tmp_path, ids=(10, 20), categories=({"id": 1, "name": "particle"},)):
    """Truth with the given image ids (files b.png, a.png) and perfect results numbered 1, 2 by sorted name."""
    rng = np.random.default_rng(0)
    images, annotations, results, pred_images = [], [], [], []
    names = ["b.png", "a.png"]
    for image_id, name in zip(ids, names, strict=False):
        _, labels = make_scene(rng, 64, 80, n=5)
        images.append({"id": image_id, "file_name": name, "height": 64, "width": 80})
        for k, rle in enumerate(labels_to_rles(labels)):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "segmentation": rle,
                    "iscrowd": 0,
                    "category_id": categories[k % len(categories)]["id"],
                }
            )
        pred_id = sorted(names).index(name) + 1
        pred_images.append({"id": pred_id, "file_name": name, "height": 64, "width": 80})
        results.extend(instances_to_results(pred_id, labels, np.full(labels.max(), 0.9, np.float32)))
    write_json(
        tmp_path / "truth.json",
        {"images": images, "annotations": annotations, "categories": list(categories)},
    )
    (tmp_path / "pred").mkdir()
    write_json(tmp_path / "pred" / "results.json", results)
    write_json(
        tmp_path / "pred" / "images.json",
        {"images": pred_images, "annotations": [], "categories": [{"id": 1, "name": "particle"}]},
    )
    return tmp_path / "truth.json", tmp_path / "pred"


def evaluate_json(capsys, pred, truth):
    code = cli(["particles", "evaluate", pred, truth, "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


def test_evaluate_matches_images_by_file_name_when_ids_disagree(tmp_path, capsys):
    truth, pred = truth_and_results(tmp_path)
    code, metrics, err = evaluate_json(capsys, pred, truth)
    assert code == 0 and metrics["segm"]["AP"] > 0.95
    assert "matched 2 images by file name" in err


def test_evaluate_is_class_agnostic_with_a_warning_for_several_truth_categories(tmp_path, capsys):
    truth, pred = truth_and_results(
        tmp_path, ids=(1, 2), categories=({"id": 1, "name": "a"}, {"id": 2, "name": "b"})
    )
    # same ids, but file names swapped relative to sorted order: matched by name too
    code, metrics, err = evaluate_json(capsys, pred, truth)
    assert code == 0 and metrics["segm"]["AP"] > 0.95
    assert "evaluated as one class" in err


def test_evaluate_refuses_unmatched_categories_and_missing_scores(tmp_path, capsys):
    truth, pred = truth_and_results(tmp_path, categories=({"id": 7, "name": "particle"},))
    code, _, err = evaluate_json(capsys, pred, truth)
    assert code == 2 and "category ids [1] match none of the truth's [7]" in err
    (tmp_path / "x").mkdir()
    truth, pred = truth_and_results(tmp_path / "x")
    results = json.loads((pred / "results.json").read_text())
    del results[0]["score"]
    write_json(pred / "results.json", results)
    code, _, err = evaluate_json(capsys, pred, truth)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "result 0 has no 'score'" in errors[0]


# -- unreadable or non-2-D files in a batch; implausible results ---------------------------------


def test_predict_skips_unreadable_and_3d_files_and_counts_them(tmp_path, capsys):
    import tifffile

    image, _ = make_scene(np.random.default_rng(1), 96, 128, n=6)
    write_image(tmp_path / "in" / "a.png", image)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG not really")
    tifffile.imwrite(tmp_path / "in" / "stack.tif", np.zeros((5, 40, 50), np.uint8))
    assert (
        cli(["particles", "predict", tmp_path / "in", "--out", tmp_path / "p", "--model", "watershed"]) == 0
    )
    captured = capsys.readouterr()
    assert "2 skipped" in captured.out
    assert "broken.png: skipped" in captured.err and "stack.tif: skipped" in captured.err
    summary = json.loads((tmp_path / "p" / "prediction.json").read_text())
    assert summary["images"] == 1 and len(summary["skipped"]) == 2
    assert (
        cli(
            command_argv(
                "particles", "predict", tmp_path / "in", out=tmp_path / "q", strict=True, model="watershed"
            )
        )
        == 2
    )
    assert not (tmp_path / "q").exists()


def test_implausible_results_warn_on_the_console_and_in_the_summary(tmp_path, capsys):
    write_image(tmp_path / "in" / "blank.png", np.full((96, 128), 120, np.uint8))
    assert cli(["particles", "predict", tmp_path / "in", "--out", tmp_path / "p", "--no-overlays"]) == 0
    assert "blank.png: no particles found" in capsys.readouterr().err
    summary = json.loads((tmp_path / "p" / "prediction.json").read_text())
    assert summary["per_image"][0]["warnings"] == ["no particles found"]
    assert "blank.png: no particles found" in summary["warnings"]


def test_plausibility_warnings():
    labels = disks((100, 100), 20, n=4)
    assert plausibility_warnings(labels, 20.0, 20.0, 1.0) == []
    assert "no particles found" in plausibility_warnings(np.zeros((10, 10), np.int32), None, 20.0, 1.0)
    full = np.ones((50, 50), np.int32)
    assert any("cover 100 %" in w for w in plausibility_warnings(full, None, 20.0, 0.4))
    assert any("far from the 20 px" in w for w in plausibility_warnings(labels, 20.0, 20.0, 4.0))
