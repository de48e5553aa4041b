import json
from pathlib import Path

import numpy as np
import pytest

from helpers import command_argv
from micrometry.cli import run
from micrometry.io.coco import (
    CocoAnnotation,
    CocoDataset,
    CocoImage,
    compressed_rle,
    instances_to_results,
    mask_to_rle,
    rle_to_mask,
)
from micrometry.io.image import read_image, write_image
from micrometry.particles.evaluate import evaluate
from micrometry.particles.models import load_particle_model
from micrometry.particles.models.base import DEFAULT_MODEL
from micrometry.particles.segmenter import Instances, Segmenter
from micrometry.particles.watershed import WatershedParams, WatershedSegmenter
from micrometry.synth.particle_scene import SuspensionParams, image_rng, render_image
from micrometry.synth.particle_shapes import PopulationParams

H, W = 160, 200


def discs_image(centres, radius=14, seed=0):
    """Dark discs on an unevenly lit background with noise; returns (image, list of disc masks)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    img = 190.0 - 50.0 * ((xx - W / 2) ** 2 + (yy - H / 2) ** 2) / (W * W / 4)
    masks = []
    for cx, cy in centres:
        m = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
        img[m] *= 0.5
        masks.append(m)
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), masks


def test_separate_and_touching_discs_are_found_and_split():
    # two isolated discs and one touching pair (centres 26 px apart, radius 14)
    image, masks = discs_image([(40, 40), (150, 50), (80, 110), (106, 110)])
    inst = WatershedSegmenter().segment(image)
    assert inst.count == 4
    assert inst.labels.dtype == np.int32 and inst.labels.shape == image.shape
    assert np.all((inst.scores > 0) & (inst.scores <= 1))
    for m in masks:  # every disc is matched by one label with IoU > 0.7
        ids, counts = np.unique(inst.labels[m], return_counts=True)
        best = ids[np.argmax(counts)]
        assert best > 0
        pred = inst.labels == best
        assert (pred & m).sum() / (pred | m).sum() > 0.7


def test_blank_image_gives_no_particles():
    inst = WatershedSegmenter().segment(np.full((H, W), 128, np.uint8))
    assert inst.count == 0 and inst.labels.max() == 0


def test_params_change_behaviour():
    image, _ = discs_image([(80, 110), (106, 110)])
    merged = WatershedSegmenter(WatershedParams(marker_h=50.0)).segment(image)
    assert merged.count == 1
    huge_min_area = WatershedSegmenter(WatershedParams(min_area=10_000)).segment(image)
    assert huge_min_area.count == 0


def test_load_particle_model_names_and_protocol(tmp_path, capsys):
    seg = load_particle_model("watershed")
    assert isinstance(seg, Segmenter) and seg.name == "watershed"
    assert load_particle_model(None).name == DEFAULT_MODEL  # no name: the documented default model
    image, _ = discs_image([(40, 40)])
    out = seg.segment_batch([image, image])
    assert len(out) == 2 and all(isinstance(o, Instances) for o in out)
    (tmp_path / "imgs").mkdir()
    write_image(tmp_path / "imgs" / "a.png", image)
    assert (
        run(command_argv("particles", "predict", tmp_path / "imgs", model="nonsense", out=tmp_path / "p"))
        == 2
    )
    err = capsys.readouterr().err
    assert "unknown particle model 'nonsense'" in err and "watershed" in err
    assert not (tmp_path / "p").exists()
    # a folder that is not a run
    (tmp_path / "notarun").mkdir()
    assert (
        run(
            command_argv(
                "particles", "predict", tmp_path / "imgs", model=tmp_path / "notarun", out=tmp_path / "p"
            )
        )
        == 2
    )
    assert "config.json" in capsys.readouterr().err


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, centres in (("b.png", [(40, 40), (120, 100)]), ("a.png", [(60, 60)])):
        write_image(folder / name, discs_image(centres)[0])
    return folder


def test_predict_writes_the_pred_folder(tmp_path, image_folder, capsys):
    out = tmp_path / "pred"
    assert run(["particles", "predict", str(image_folder), "--model", "watershed", "--out", str(out)]) == 0
    images = json.loads((out / "images.json").read_text())
    assert [(im["id"], im["file_name"]) for im in images["images"]] == [(1, "a.png"), (2, "b.png")]
    results = json.loads((out / "results.json").read_text())
    assert sorted({r["image_id"] for r in results}) == [1, 2]
    assert sum(r["image_id"] == 2 for r in results) == 2
    for r in results:
        assert r["category_id"] == 1 and 0 < r["score"] <= 1 and isinstance(r["segmentation"]["counts"], str)
    labels = read_image(out / "labels" / "b.png")
    assert labels.dtype == np.uint16 and labels.max() == 2
    first_b = next(r for r in results if r["image_id"] == 2)
    np.testing.assert_array_equal(rle_to_mask(first_b["segmentation"]), labels == 1)
    assert (out / "overlays" / "a.png").is_file()
    # refuses to overwrite, leaves the old folder intact
    assert run(["particles", "predict", str(image_folder), "--out", str(out)]) == 2
    assert (out / "results.json").is_file()


def predict_listed(image_folder, out, listing):
    """Exit code of ``particles predict`` of ``image_folder`` with ``listing`` as its --images-json (beside ``out``)."""
    listing_path = out.parent / "images.json"
    listing_path.write_text(json.dumps(listing))
    return run(
        ["particles", "predict", str(image_folder), "--out", str(out), "--images-json", str(listing_path)]
    )


def test_predict_with_images_json_uses_its_ids(tmp_path, image_folder):
    listing = {
        "images": [{"id": 7, "file_name": "b.png", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "Normal"}],
    }
    out = tmp_path / "pred"
    assert predict_listed(image_folder, out, listing) == 0
    assert {r["image_id"] for r in json.loads((out / "results.json").read_text())} == {7}
    assert not (out / "images.json").exists()
    assert not (out / "labels" / "a.png").exists()


def test_predict_bad_inputs_exit_2_without_output(tmp_path, image_folder, capsys):
    listing = {"images": [{"id": 7, "file_name": "missing.png", "height": H, "width": W}]}
    out = tmp_path / "pred"
    assert predict_listed(image_folder, out, listing) == 2
    assert "missing.png not found" in capsys.readouterr().err
    (image_folder / "c.png").write_bytes(b"not a png")
    # --strict: an unreadable file is fatal, and nothing is written
    assert run(["particles", "predict", str(image_folder), "--out", str(out), "--strict"]) == 2
    err = capsys.readouterr().err.strip()
    assert "c.png" in err and len(err.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".pred*"))
    # by default it is skipped with a one-line warning and counted in prediction.json
    assert run(["particles", "predict", str(image_folder), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "warning: c.png: skipped" in captured.err and "1 skipped" in captured.out
    record = json.loads((out / "prediction.json").read_text())
    assert [Path(s["file"]).name for s in record["skipped"]] == ["c.png"] and record["images"] == 2
    assert not (out / "labels" / "c.png").exists()


def test_watershed_runs_on_a_generated_image_and_finds_particles():
    params = SuspensionParams(height=256, width=320, population=PopulationParams(count_range=(480, 640)))
    r = render_image(params, image_rng(0, "test", 0))
    inst = WatershedSegmenter().segment(r.image)
    assert inst.count > 5
    # score it against the generator's truth: far from perfect (thresholding fails on purpose), but it
    # finds real particles (a small crop is harder than a full frame: bench/particles_data.py has the figures)
    anns = []
    for i, ann in enumerate(r.annotations, start=1):
        rle = mask_to_rle(r.labels == i)
        anns.append(CocoAnnotation(i, 1, 1, rle, compressed_rle(rle, 256, 320), ann["bbox"], ann["area"]))
    gt = CocoDataset(
        None, None, [CocoImage(1, "x.png", 256, 320)], [{"id": 1, "name": "particle"}], {1: anns}
    )
    m = evaluate(instances_to_results(1, inst.labels, inst.scores), gt)
    assert 0 < m["segm"]["AP50"] < 0.95
    assert m["matching"][0]["tp"] >= 3 and m["matching"][0]["precision"] >= 0.3


def test_load_particle_model_from_a_run_folder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"model": "watershed"}))
    (run_dir / "checkpoints" / "best.pt").write_bytes(b"")
    assert load_particle_model(run_dir).name == "watershed"
    (run_dir / "config.json").write_text(json.dumps({"model": "no-such-model"}))
    image_dir = tmp_path / "imgs"
    image_dir.mkdir()
    write_image(image_dir / "a.png", discs_image([(40, 40)])[0])
    assert (
        run(["particles", "predict", str(image_dir), "--model", str(run_dir), "--out", str(tmp_path / "p")])
        == 2
    )
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def test_ensemble_is_its_own_option_and_a_comma_in_model_is_a_name(tmp_path, capsys):
    """--ensemble A,B fuses models; --model takes one model, whatever characters its path holds."""
    image_dir = tmp_path / "imgs"
    image_dir.mkdir()
    write_image(image_dir / "a.png", discs_image([(40, 40), (40, 100)])[0])
    out = tmp_path / "ens"
    assert (
        run(
            ["particles", "predict", str(image_dir), "--ensemble", "watershed,watershed:2", "--out", str(out)]
        )
        == 0
    )
    record = json.loads((out / "prediction.json").read_text())
    assert [(m["model"], m["weight"]) for m in record["members"]] == [("watershed", 1.0), ("watershed", 2.0)]
    capsys.readouterr()
    # a comma in --model is no longer an ensemble: the name is looked up as it is
    assert (
        run(command_argv("particles", "predict", image_dir, model="watershed,watershed", out=tmp_path / "x"))
        == 2
    )
    err = capsys.readouterr().err
    assert "unknown particle model 'watershed,watershed'" in err and len(err.strip().splitlines()) == 1
    run_dir = tmp_path / "run,1"  # a run folder with a comma in its name loads through --model
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"model": "watershed"}))
    (run_dir / "checkpoints" / "best.pt").write_bytes(b"")
    assert (
        run(["particles", "predict", str(image_dir), "--model", str(run_dir), "--out", str(tmp_path / "y")])
        == 0
    )
    capsys.readouterr()
    both = ["particles", "predict", str(image_dir), "--model", "watershed", "--ensemble", "a,b"]
    assert run([*both, "--out", str(tmp_path / "z")]) == 2
    assert "--model and --ensemble exclude each other" in capsys.readouterr().err
    assert (
        run(["particles", "predict", str(image_dir), "--ensemble", "watershed", "--out", str(tmp_path / "z")])
        == 2
    )
    assert "--ensemble needs two models or more" in capsys.readouterr().err
    assert not (tmp_path / "z").exists() and not (tmp_path / "x").exists()
