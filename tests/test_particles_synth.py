import json
import warnings

import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as mask_utils

from helpers import synth_particles_argv
from micrometry.cli import run
from micrometry.io.coco import load_coco, rle_to_mask
from micrometry.io.image import read_image
from micrometry.synth.particle_scene import SuspensionParams, image_rng, render_image, sample_particles
from micrometry.synth.particle_shapes import PopulationParams, polygon_descriptors, sample_diameters

SMALL = SuspensionParams(height=256, width=320)


def dense_small(**population):
    """A small frame with a full-frame particle density (so the small image is not nearly empty)."""
    return SuspensionParams(
        height=256, width=320, population=PopulationParams(count_range=(640, 1600), **population)
    )


def test_same_seed_same_image_other_seed_differs():
    a = render_image(SMALL, image_rng(3, "train", 0))
    b = render_image(SMALL, image_rng(3, "train", 0))
    c = render_image(SMALL, image_rng(4, "train", 0))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.annotations == b.annotations
    assert not np.array_equal(a.image, c.image)
    assert a.image.dtype == np.uint8 and a.image.shape == (256, 320)


def test_population_follows_its_parameters():
    rng = np.random.default_rng(0)
    params = SuspensionParams()
    counts = [len(sample_particles(params, rng)) for _ in range(30)]
    assert 40 <= min(counts) and max(counts) <= 200 and max(counts) - min(counts) > 50
    d = sample_diameters(params.population, 5000, rng)
    assert d.min() >= 12 and d.max() <= 110
    assert abs(np.median(d) - 30) < 2.5  # log-normal median (truncation shifts it a little)
    kinds = {p.kind for _ in range(5) for p in sample_particles(params, rng)}
    assert kinds == {"ellipse", "polygon", "blob", "rod"}


def test_every_annotation_rasterises_to_its_visible_mask():
    r = render_image(dense_small(), image_rng(0, "train", 1))
    assert len(r.annotations) >= 20
    assert r.labels.max() == len(r.annotations)
    h, w = r.labels.shape
    for i, ann in enumerate(r.annotations, start=1):
        seg = ann["segmentation"]
        rle = (
            mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            if isinstance(seg, list)
            else mask_utils.frPyObjects(seg, h, w)
        )
        mask = rle_to_mask(rle)
        truth = r.labels == i
        assert (mask & truth).sum() / (mask | truth).sum() > 0.9
        assert ann["area"] == truth.sum()
    # the image is not trivially thresholdable: particles are both darker and (transparent) near background
    kinds = [row["transparent"] for row in r.particles]
    assert any(kinds) and not all(kinds)
    # visible parts of occluded particles are smaller than the whole particle, never larger (up to rasterisation)
    assert all(row["visible_area"] <= row["Area"] * 1.15 + 10 for row in r.particles)
    assert any(row["border_cut"] for row in r.particles)
    assert any(row["visible_fraction"] < 0.9 and not row["border_cut"] for row in r.particles)


def test_polygon_descriptors_of_an_ellipse():
    t = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    pts = np.stack([20 * np.cos(t), 10 * np.sin(t)], axis=1)
    d = polygon_descriptors(pts)
    assert d["Area"] == pytest.approx(np.pi * 200, rel=1e-4)
    assert d["Major"] == pytest.approx(40, rel=1e-3) and d["Minor"] == pytest.approx(20, rel=1e-3)
    assert d["AR"] == pytest.approx(2.0, rel=1e-3)
    assert d["Feret"] == pytest.approx(40, rel=1e-3) and d["MinFeret"] == pytest.approx(20, rel=1e-3)
    assert d["Solidity"] == pytest.approx(1.0, abs=1e-3)


def test_cli_writes_the_layout_and_valid_coco(tmp_path):
    out, truth = tmp_path / "syn", tmp_path / "truth"
    args = synth_particles_argv(out, truth, n_train=2, n_test=2, n_batch=2, height=256, width=320, seed=5)
    assert run(args) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a generated dataset needs no repair
        train = load_coco(out / "train")
        test_images = load_coco(out / "test" / "images.json", out / "test" / "images")
        answers = load_coco(truth / "test_annotations.json", out / "test" / "images")
    assert len(train.images) == 2 and train.n_annotations > 0
    assert test_images.n_annotations == 0
    assert [im.id for im in answers.images] == [im.id for im in test_images.images]
    assert answers.n_annotations > 0
    assert read_image(train.image_path(1)).shape == (256, 320)
    assert len(list((out / "batches" / "A").glob("*.png"))) == 2
    assert len(list((out / "batches" / "B").glob("*.png"))) == 2
    assert not list(out.rglob("*annotations*.json"))[1:]  # only train/annotations.json: no answers in OUT
    a = pd.read_csv(truth / "batches" / "A.csv")
    assert {"image", "particle", "Area", "AR", "Circ.", "Solidity", "Feret", "annotated"} <= set(a.columns)
    # same seed, same files
    out2, truth2 = tmp_path / "syn2", tmp_path / "truth2"
    assert run(args[:2] + [str(out2), "--truth", str(truth2)] + args[5:]) == 0
    for rel in ("train/images/train_0000.png", "train/annotations.json", "batches/B/B_0001.png"):
        assert (out / rel).read_bytes() == (out2 / rel).read_bytes()
    assert (truth / "test_annotations.json").read_bytes() == (truth2 / "test_annotations.json").read_bytes()


def test_batches_differ_as_documented(tmp_path):
    out, truth = tmp_path / "syn", tmp_path / "truth"
    assert run(synth_particles_argv(out, truth, n_train=0, n_test=0, n_batch=2, height=512, width=640)) == 0
    a = pd.read_csv(truth / "batches" / "A.csv")
    b = pd.read_csv(truth / "batches" / "B.csv")
    assert b["AR"].median() > a["AR"].median() + 0.3
    assert b["Solidity"].median() < a["Solidity"].median()
    json.loads((out / "synth_config.json").read_text())


def test_bad_output_folders_exit_2_and_leave_nothing(tmp_path, capsys):
    out = tmp_path / "syn"
    assert run(synth_particles_argv(out, out / "truth", n_train=1, height=64, width=64)) == 2
    assert "separate" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert run(synth_particles_argv(out, tmp_path / "t", n_train=1, height=64, width=64)) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and not (tmp_path / "t").exists()


def test_params_file_overrides_knobs_and_rejects_unknown_names(tmp_path, capsys):
    params = tmp_path / "p.json"
    params.write_text(
        json.dumps(
            {
                "population": {"count_range": [2, 2], "transparent_fraction": 0.0},
                "distractors": {"specks_range": [0, 0]},
            }
        )
    )
    out, truth = tmp_path / "syn", tmp_path / "truth"
    assert (
        run(
            synth_particles_argv(
                out, truth, n_train=0, n_test=1, n_batch=0, height=1024, width=1280, params=params
            )
        )
        == 0
    )
    rows = pd.read_csv(truth / "test_particles.csv")
    assert len(rows) == 2 and not rows["transparent"].any()
    config = json.loads((out / "synth_config.json").read_text())
    assert config["params"]["population"]["count_range"] == [2, 2]
    # the written config is itself a valid parameter file
    assert (
        run(
            synth_particles_argv(
                tmp_path / "o2",
                tmp_path / "t2",
                n_train=0,
                n_test=1,
                n_batch=0,
                params=out / "synth_config.json",
            )
        )
        == 0
    )
    assert (tmp_path / "o2" / "test" / "images" / "test_0000.png").read_bytes() == (
        out / "test" / "images" / "test_0000.png"
    ).read_bytes()
    params.write_text(json.dumps({"optics": {"shininess": 3}}))
    assert run(synth_particles_argv(tmp_path / "o3", tmp_path / "t3", params=params)) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown optics parameter(s) shininess" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o3").exists()
