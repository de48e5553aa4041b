"""int8 prediction: the quantized network a run, an export and the shipped model carry, and when it is used."""

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from micrometry.cli import run
from micrometry.errors import InputError
from micrometry.particles.models import load_particle_model
from micrometry.particles.models.base import export_run, shipped_model_dir
from micrometry.particles.models.dense import quantized
from micrometry.particles.models.dense.dense_segmenter import dense_segmenter
from micrometry.particles.models.dense.quantize_model import calibration_paths
from micrometry.particles.models.dense.quantized import (
    FILE,
    FINGERPRINT_KEY,
    WEIGHT_BITS_KEY,
    evenly,
    fingerprint,
    stored_metadata,
)
from micrometry.train.precision import PRECISION_ENV
from particle_scenes import make_scene


@pytest.fixture
def int8_run(trained_run, tmp_path, monkeypatch):
    """A copy of the tiny center-offset run (train made its int8 network), predicting by default."""
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    copy = tmp_path / "run"
    shutil.copytree(trained_run("center-offset"), copy)
    return copy


def _scene(seed: int = 7):
    return make_scene(np.random.default_rng(seed), n=14)


def test_training_writes_an_int8_network_of_its_best_weights_and_predict_uses_it(int8_run):
    assert (int8_run / FILE).is_file()
    exported = export_run(int8_run)
    metadata = stored_metadata(int8_run / FILE)
    assert metadata[FINGERPRINT_KEY] == fingerprint(exported.state["modules"]["net"])
    assert metadata[WEIGHT_BITS_KEY] == "7"  # exact on every CPU, VNNI or not
    assert "int8 network" in (int8_run / "log.txt").read_text()
    image, truth = _scene()
    int8 = load_particle_model(int8_run)
    float32 = dense_segmenter(exported, int8=False)
    assert int8.precision == "int8" and float32.precision == "fp32"
    a, b = int8.predict_maps(image, 1.0), float32.predict_maps(image, 1.0)
    assert a.shape == b.shape and a.dtype == np.float32
    assert not np.array_equal(a, b)  # it did run the int8 network
    # foreground and centre probabilities within a few percent; offsets (network px) within a fraction
    np.testing.assert_allclose(a[:2], b[:2], atol=0.08)
    assert np.abs(a[:2] - b[:2]).mean() < 0.01
    # offsets in network pixels: a tenth of a pixel on average (measured 0.04 on an AMD EPYC; one
    # bound of 0.02 over probabilities and offsets together failed there at 0.0205)
    assert np.abs(a[2:] - b[2:]).mean() < 0.1
    found, reference = int8.segment(image), float32.segment(image)
    assert found.info["precision"] == "int8"
    assert abs(int(found.labels.max()) - int(reference.labels.max())) <= 1


def test_the_variable_chooses_float32_and_int8_is_refused_without_a_network(int8_run, monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    assert load_particle_model(int8_run).precision == "fp32"
    monkeypatch.setenv(PRECISION_ENV, "int8")
    assert load_particle_model(int8_run).precision == "int8"
    (int8_run / FILE).unlink()
    with pytest.raises(InputError, match="no int8 network"):
        load_particle_model(int8_run)
    monkeypatch.delenv(PRECISION_ENV)
    assert load_particle_model(int8_run).precision == "fp32"  # no file: float32, nothing to say


def test_a_network_made_from_other_weights_is_ignored_with_a_warning(int8_run, trained_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(trained_run("center-offset"), other)
    best = other / "checkpoints" / "best.pt"
    payload = torch.load(best, weights_only=False)
    weights = payload["state"]["modules"]["net"]
    name = next(k for k in weights if k.endswith("weight"))
    weights[name] = weights[name] * 1.01  # the run trained on: its int8 copy is stale
    torch.save(payload, best)
    with pytest.warns(UserWarning, match="other weights"):
        segmenter = load_particle_model(other)
    assert segmenter.precision == "fp32"


def test_export_carries_the_int8_network_and_the_segmenter_pickles(int8_run, tmp_path):
    model = tmp_path / "model"
    assert run(["export", int8_run, "--out", model]) == 0
    assert (model / FILE).read_bytes() == (int8_run / FILE).read_bytes()
    segmenter = load_particle_model(model)
    image, _ = _scene(3)
    first = segmenter.segment(image)
    copy = pickle.loads(pickle.dumps(segmenter))  # Ray ships segmenters to its actors
    again = copy.segment(image)
    assert copy.precision == "int8" and np.array_equal(first.labels, again.labels)


def test_quantize_command_remakes_the_network_from_a_runs_own_images(int8_run, tmp_path, capsys):
    (int8_run / FILE).unlink()
    assert run(["particles", "quantize", int8_run]) == 0
    assert "calibrated on 6 image(s)" in capsys.readouterr().out
    assert stored_metadata(int8_run / FILE)[FINGERPRINT_KEY] == fingerprint(
        export_run(int8_run).state["modules"]["net"]
    )
    # a model folder keeps no training images: --images is needed, and said in one line
    model = tmp_path / "model"
    assert run(["export", int8_run, "--out", model]) == 0
    assert run(["particles", "quantize", model]) == 2
    assert "give --images" in capsys.readouterr().err
    data = json.loads((int8_run / "config.json").read_text())["data"]
    assert len(calibration_paths(model, data)) == 6  # training data of any layout: its images
    assert run(["particles", "quantize", model, "--images", tmp_path / "missing"]) == 2


def test_every_dense_model_gets_one_and_a_folder_that_is_no_model_is_a_one_line_error(
    trained_run, tmp_path, capsys
):
    watershed_run = trained_run("unet-watershed")
    assert (watershed_run / FILE).is_file()
    assert stored_metadata(watershed_run / FILE)[FINGERPRINT_KEY] == fingerprint(
        export_run(watershed_run).state["modules"]["net"]
    )
    assert run(["particles", "quantize", tmp_path]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_calibration_images_spread_over_the_set():
    assert evenly(list(range(3)), 8) == [0, 1, 2]
    picked = evenly(list(range(100)), 8)
    assert len(picked) == 8 and picked[0] == 0 and picked[-1] == 99
    assert np.all(np.diff(picked) > 10)


def test_the_shipped_model_carries_a_current_int8_network(monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    folder = shipped_model_dir()
    assert (folder / FILE).is_file()
    segmenter = load_particle_model("shipped")  # a stale file would warn and predict in float32
    assert segmenter.precision == "int8"
    provenance = json.loads((folder / "model.json").read_text())["provenance"]
    assert "quantize" in provenance["int8_network"]


def test_int8_in_the_variable_does_not_stop_training(monkeypatch):
    from micrometry.train.precision import native_bf16, resolve_precision

    monkeypatch.setenv(PRECISION_ENV, "int8")
    assert resolve_precision("auto") == ("bf16" if native_bf16() else "fp32")


def test_a_full_range_network_runs_only_where_it_is_exact(int8_run, monkeypatch):
    # files made before 2026-12-07 hold 8-bit weights, whose sums saturate on CPUs without VNNI
    exported = export_run(int8_run)
    segmenter = dense_segmenter(exported, int8=False)
    image, _ = _scene(4)
    inputs = quantized.capture_inputs(segmenter.net, lambda: segmenter.segment(image))
    full_range = quantized.quantize_network(
        segmenter.net,
        fingerprint(exported.state["modules"]["net"]),
        inputs,
        int8_run / FILE,
        reduce_range=False,
    )
    assert stored_metadata(full_range)[WEIGHT_BITS_KEY] == "8"
    monkeypatch.setattr(quantized, "int8_exact_here", lambda: True)
    assert load_particle_model(int8_run).precision == "int8"
    monkeypatch.setattr(quantized, "int8_exact_here", lambda: False)
    assert load_particle_model(int8_run).precision == "fp32"
    monkeypatch.setenv(PRECISION_ENV, "int8")
    with pytest.raises(InputError, match="no int8 network for this device"):
        load_particle_model(int8_run)
    monkeypatch.delenv(PRECISION_ENV)
    assert run(["particles", "quantize", int8_run]) == 0  # remade with 7-bit weights: exact here too
    assert load_particle_model(int8_run).precision == "int8"


def test_a_damaged_int8_network_is_ignored_with_a_warning(int8_run):
    (int8_run / FILE).write_bytes(b"not an onnx file")
    with pytest.warns(UserWarning, match="not an int8 network ONNX Runtime"):
        segmenter = load_particle_model(int8_run)
    assert segmenter.precision == "fp32"
    image, _ = _scene(5)
    assert segmenter.segment(image).info["precision"] == "fp32"
