"""Issue 23, point 5: no silent garbage. A per-image reliability verdict on particle segmentations."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from micrometry.cli import run
from micrometry.io.image import write_image
from micrometry.particles.models.base import load_particle_model
from micrometry.particles.reliability import MIN_DIAMETER_PX, MIN_OBJECTS, assess_reliability
from micrometry.synth.particle_dataset import DENSITIES
from micrometry.synth.particle_optics import ALL_MODES, MODES
from micrometry.synth.particle_scene import SuspensionParams, image_rng, render_image
from particle_scenes import TEXTURES, bandpass_noise, foam


def cli(args):
    return run([str(a) for a in args])


def discs(shape, centres, radius):
    """A label image of discs (ids 1..N in order)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    return labels


def grid(shape, step):
    return [(y, x) for y in range(step // 2, shape[0], step) for x in range(step // 2, shape[1], step)]


# -- the rules, on label images made here --------------------------------------------------------


def test_sparse_confident_particles_are_reliable():
    labels = discs((400, 400), grid((400, 400), 60), 10)  # 49 discs, 10 % of the image
    verdict = assess_reliability(labels, np.full(labels.max(), 0.9))
    assert verdict.reliable and verdict.reason == ""
    assert verdict.metrics["objects"] == 49 and 0.05 < verdict.metrics["coverage"] < 0.12


def test_nothing_found_is_not_unreliable():
    verdict = assess_reliability(np.zeros((64, 64), np.int32), np.zeros(0))
    assert verdict.reliable and verdict.metrics["objects"] == 0


def test_a_field_tiled_with_objects_is_unreliable():
    # Voronoi cells: every pixel belongs to an object, as when a texture is cut into blobs
    rng = np.random.default_rng(0)
    seeds = np.ones((300, 300), bool)
    seeds[rng.integers(0, 300, 300), rng.integers(0, 300, 300)] = False
    _, (r, c) = ndimage.distance_transform_edt(seeds, return_indices=True)
    ids = np.zeros((300, 300), np.int32)
    ids[~seeds] = np.arange(1, (~seeds).sum() + 1)
    labels = ids[r, c]
    verdict = assess_reliability(labels, np.full(labels.max(), 0.9))
    assert not verdict.reliable and "cover 100 %" in verdict.reason
    # the same tiling with fewer objects than the rules need is not judged
    few = discs((300, 300), grid((300, 300), 100), 60)
    assert few.max() < MIN_OBJECTS and assess_reliability(few, np.full(few.max(), 0.9)).reliable


def test_objects_the_model_doubts_are_unreliable_and_doubt_adds_to_cover():
    labels = discs((400, 400), grid((400, 400), 60), 10)
    n = labels.max()
    doubted = assess_reliability(labels, np.where(np.arange(n) < 0.6 * n, 0.3, 0.9))
    assert not doubted.reliable and "score below 0.5" in doubted.reason
    # a few doubts on a sparse field: fine
    assert assess_reliability(labels, np.where(np.arange(n) < 0.3 * n, 0.3, 0.9)).reliable
    # 40 % cover and 40 % doubted: neither alone at its limit, both together are
    dense = discs((400, 400), grid((400, 400), 30), 11)
    m = dense.max()
    assert 0.35 < assess_reliability(dense).metrics["coverage"] < 0.5
    assert assess_reliability(dense, np.full(m, 0.9)).reliable
    assert not assess_reliability(dense, np.where(np.arange(m) < 0.4 * m, 0.3, 0.9)).reliable


def test_candidates_the_model_dropped_as_doubtful_count_as_doubted():
    labels = discs((400, 400), grid((400, 400), 60), 10)  # 49 confident objects kept
    n = int(labels.max())
    scores = np.full(n, 0.9)
    assert assess_reliability(labels, scores, {"candidates": n + 20, "below_score": 20}).reliable
    verdict = assess_reliability(labels, scores, {"candidates": n + 60, "below_score": 60})
    assert not verdict.reliable and f"of the {n + 60} candidates" in verdict.reason
    assert verdict.metrics["uncertain_fraction"] == pytest.approx(60 / (n + 60), abs=1e-4)
    # a few confident objects left from many doubtful candidates: judged on the candidates
    few = discs((400, 400), [(100, 100), (300, 300)], 10)
    assert not assess_reliability(few, np.full(2, 0.9), {"candidates": 80, "below_score": 78}).reliable


def test_a_field_of_fragments_is_unreliable():
    shape = (400, 400)
    labels = discs(shape, grid(shape, 100), 20)  # 16 particles
    specks = discs(shape, [(y + 50, x + 50) for y, x in grid((300, 300), 40)], 3)  # 49 specks between them
    labels = np.where(specks > 0, specks + labels.max(), labels)
    verdict = assess_reliability(labels, np.full(labels.max(), 0.9))
    assert not verdict.reliable and "fragments" in verdict.reason
    assert verdict.metrics["tiny_fraction"] > 0.7


def test_objects_too_small_to_measure_are_unreliable_whatever_their_number():
    shape = (300, 300)
    specks = discs(shape, grid(shape, 60)[:6], 3)  # 6 dots of about 7 px: dust, grain or noise
    verdict = assess_reliability(specks, np.full(specks.max(), 0.9))
    assert not verdict.reliable and "under 10 px" in verdict.reason
    assert verdict.metrics["median_diameter_px"] < MIN_DIAMETER_PX
    small = discs(shape, grid(shape, 60)[:6], 6)  # 6 particles of about 13 px: measurable
    assert assess_reliability(small, np.full(small.max(), 0.9)).reliable


# -- the shipped model: texture-only images flagged or (almost) empty, ordinary modes not flagged --


def _flagged_or_empty(segmenter, image) -> tuple[bool, dict]:
    found = segmenter.segment(image)
    verdict = assess_reliability(found.labels, found.scores, found.info)
    return (not verdict.reliable) or found.count <= 3, verdict.metrics


@pytest.fixture(scope="module")
def shipped():
    return load_particle_model("shipped")


@pytest.mark.slow
@pytest.mark.parametrize("texture", list(TEXTURES))
def test_shipped_model_on_texture_only_images_is_flagged_or_finds_nothing(shipped, texture):
    for seed in (0, 1):
        ok, metrics = _flagged_or_empty(shipped, TEXTURES[texture](np.random.default_rng(seed)))
        assert ok, (texture, seed, metrics)


@pytest.mark.slow
def test_shipped_model_on_the_generators_texture_only_images_is_flagged_or_finds_almost_nothing(shipped):
    # `synth particles --density none`: every mode's ground, debris and specks, no particle at all
    params = dataclasses.replace(SuspensionParams(), height=384, width=480)
    params = dataclasses.replace(
        params, population=dataclasses.replace(params.population, **DENSITIES["none"])
    )
    for seed in (0, 1):
        for index, mode in enumerate(ALL_MODES):
            rendered = render_image(params, image_rng(seed, "test", index), mode)
            assert rendered.labels.max() == 0
            found = shipped.segment(rendered.image)
            verdict = assess_reliability(found.labels, found.scores, found.info)
            assert (not verdict.reliable) or found.count <= 10, (mode, seed, found.count, verdict.metrics)


@pytest.mark.slow
def test_shipped_model_on_the_ordinary_synthetic_modes_is_not_flagged(shipped):
    params = dataclasses.replace(SuspensionParams(), height=384, width=480)
    for index, mode in enumerate(MODES):
        for seed in (0, 1, 2):
            image = render_image(params, image_rng(seed, "test", index), mode).image
            found = shipped.segment(image)
            verdict = assess_reliability(found.labels, found.scores, found.info)
            assert verdict.reliable, (mode, seed, verdict.reason)
            assert found.count > 0


def test_shipped_model_flags_band_passed_noise_but_not_brightfield_particles(shipped):
    noise = bandpass_noise(np.random.default_rng(0), (160, 200))
    ok, metrics = _flagged_or_empty(shipped, noise)
    assert ok, metrics
    params = dataclasses.replace(SuspensionParams(), height=256, width=320)
    found = shipped.segment(render_image(params, image_rng(3, "test", 0), "brightfield").image)
    assert found.count > 3 and assess_reliability(found.labels, found.scores, found.info).reliable


# -- the verdict travels: prediction.json, the warning, measure's tables, compare's warning --------


def voronoi_labels(shape, n, seed=0):
    """Every pixel in one of ``n`` random cells: what a texture cut into blobs looks like."""
    rng = np.random.default_rng(seed)
    free = np.ones(shape, bool)
    free[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = False
    _, (r, c) = ndimage.distance_transform_edt(free, return_indices=True)
    ids = np.zeros(shape, np.int32)
    ids[~free] = np.arange(1, (~free).sum() + 1)
    return ids[r, c]


@pytest.mark.slow
def test_predict_stores_and_warns_about_the_verdict(tmp_path, capsys):
    images = tmp_path / "images"
    # a reticulated foam: the shipped model cuts it into pieces (it finds next to nothing on band-passed noise)
    write_image(images / "foam.png", foam(np.random.default_rng(1), (192, 240)))
    clean = discs((192, 240), grid((192, 240), 48), 9)
    write_image(images / "clean.png", np.where(clean > 0, 60, 200).astype(np.uint8))
    pred = tmp_path / "pred"
    assert cli(["particles", "predict", images, "--out", pred]) == 0
    err = capsys.readouterr().err
    per_image = {p["file"]: p for p in json.loads((pred / "prediction.json").read_text())["per_image"]}
    assert per_image["clean.png"]["reliable"] is True and per_image["clean.png"]["reason"] == ""
    assert per_image["foam.png"]["reliable"] is False and "cover" in per_image["foam.png"]["reason"]
    assert per_image["foam.png"]["reliability"]["objects"] == per_image["foam.png"]["particles"]
    lines = [line for line in err.splitlines() if "unreliable segmentation" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: foam.png: unreliable segmentation: ")
    assert cli(["particles", "measure", pred, "--out", tmp_path / "m.csv"]) == 0
    assert "come from 1 image whose segmentation is unreliable (foam;" in capsys.readouterr().err


@pytest.fixture
def pred_folder(tmp_path):
    """A prediction folder as 'particles predict' writes it: one tiled (unreliable) image, one clean."""
    from micrometry.io.atomic import write_json
    from micrometry.io.coco import instances_to_results

    pred = tmp_path / "pred"
    tiled, clean = voronoi_labels((120, 150), 60), discs((120, 150), grid((120, 150), 40), 8)
    entries, results, per_image = [], [], []
    for image_id, (name, labels) in enumerate([("noise", tiled), ("clean", clean)], start=1):
        write_image(pred / "labels" / f"{name}.png", labels.astype(np.uint16))
        scores = np.full(labels.max(), 0.9, np.float32)
        verdict = assess_reliability(labels, scores)
        entries.append({"id": image_id, "file_name": f"{name}.png", "height": 120, "width": 150})
        results += instances_to_results(image_id, labels, scores)
        per_image.append(
            {"image_id": image_id, "file": f"{name}.png", "particles": int(labels.max()), **verdict.record()}
        )
    write_json(
        pred / "images.json", {"images": entries, "annotations": [], "categories": [{"id": 1, "name": "p"}]}
    )
    write_json(pred / "results.json", results)
    write_json(pred / "prediction.json", {"model": "test", "per_image": per_image, "calibration": None})
    return pred


def test_measure_and_compare_carry_the_verdict(tmp_path, pred_folder, capsys):
    pred = pred_folder
    table = tmp_path / "m.csv"
    assert cli(["particles", "measure", pred, "--out", table]) == 0
    err = capsys.readouterr().err
    assert "come from 1 image whose segmentation is unreliable (noise;" in err
    particles = pd.read_csv(table)
    assert set(particles.groupby("Image")["Reliable"].first().items()) == {("noise", False), ("clean", True)}
    images_table = pd.read_csv(tmp_path / "m_images.csv").set_index("Image")
    assert (
        not images_table.loc["noise", "Reliable"] and "cover" in images_table.loc["noise", "UnreliableReason"]
    )
    assert pd.read_csv(tmp_path / "m_summary.csv")["UnreliableImages"].iloc[0] == 1

    # the COCO results file beside prediction.json knows too, and so does PRED/labels
    assert cli(["particles", "measure", pred / "results.json", "--out", tmp_path / "r.csv"]) == 0
    assert "(noise;" in capsys.readouterr().err
    assert not pd.read_csv(tmp_path / "r.csv").query("Image == 'noise'")["Reliable"].any()
    assert cli(["particles", "measure", pred / "labels", "--out", tmp_path / "l.csv"]) == 0
    assert "Reliable" in pd.read_csv(tmp_path / "l.csv")
    capsys.readouterr()

    # label images without a prediction record: nothing known, no column, no warning
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "noise.png").write_bytes((pred / "labels" / "noise.png").read_bytes())
    assert cli(["particles", "measure", bare, "--out", tmp_path / "bare.csv"]) == 0
    assert (
        "Reliable" not in pd.read_csv(tmp_path / "bare.csv") and "unreliable" not in capsys.readouterr().err
    )


@pytest.mark.slow
def test_compare_warns_about_rows_from_unreliable_images(tmp_path, pred_folder, capsys):
    table = tmp_path / "m.csv"
    assert cli(["particles", "measure", pred_folder, "--out", table]) == 0
    capsys.readouterr()
    assert cli(["particles", "compare", table, table, "--n-boot", 100, "--out", tmp_path / "cmp"]) == 0
    err = capsys.readouterr().err
    assert "batch A: " in err and "batch B: " in err and "(noise;" in err


def test_report_shows_unreliable_images(pred_folder):
    from micrometry.particles.measure import measure_source
    from micrometry.report.particles import measure_report

    m = measure_source(pred_folder)
    html = measure_report(m.particles, m.images, m.summary).render()
    assert "unreliable images" in html and "1 of 2" in html and "Reliable = False" in html
    assert "noise: " in html  # the reason, by image


@pytest.mark.slow
def test_web_app_shows_the_verdict_per_image_and_per_row():
    import io

    from PIL import Image

    from micrometry.web.services import Services

    def png(array):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return buffer.getvalue()

    clean = discs((160, 200), grid((160, 200), 40), 8)
    files = [
        ("noise.png", png(bandpass_noise(np.random.default_rng(0), (160, 200)))),
        ("clean.png", png(np.where(clean > 0, 60, 200).astype(np.uint8))),
    ]
    body = Services(particle_model="shipped").particles(files)
    verdicts = {im["name"]: (im["reliable"], im["reason"]) for im in body["images"]}
    assert verdicts["clean.png"] == (True, "") and verdicts["noise.png"][0] is False
    assert "cover" in verdicts["noise.png"][1]
    table = pd.DataFrame(body["table"]["rows"], columns=body["table"]["columns"])
    assert dict(table.groupby("image")["reliable"].first()) == {"noise.png": False, "clean.png": True}
    page = (Path(__file__).parents[1] / "src/micrometry/web/page.html").read_text()
    assert "im.reliable === false" in page and "Unreliable segmentation: " in page


@pytest.mark.slow
def test_measure_with_a_model_carries_the_verdict(tmp_path, capsys):
    photos = tmp_path / "photos"
    # a reticulated foam the shipped model cuts into pieces (on band-passed noise it finds next to nothing)
    write_image(photos / "foam.png", foam(np.random.default_rng(1), (192, 240)))
    params = dataclasses.replace(SuspensionParams(), height=256, width=320)
    write_image(photos / "clean.png", render_image(params, image_rng(3, "test", 0), "brightfield").image)
    assert cli(["particles", "measure", photos, "--model", "shipped", "--out", tmp_path / "m.csv"]) == 0
    assert "(foam;" in capsys.readouterr().err
    images = pd.read_csv(tmp_path / "m_images.csv").set_index("Image")
    assert list(images.loc[["foam", "clean"], "Reliable"]) == [False, True]
