"""Learned particle models: training converges, run folders predict, bad inputs are clear errors."""

import json

import numpy as np
import pytest
import torch

from helpers import particles_train_argv
from micrometry.cli import run
from micrometry.errors import CheckpointError
from micrometry.particles.models import load_particle_model
from micrometry.particles.models.dense import target_maps as targets
from micrometry.particles.models.dense.decode import instances_from_centres, watershed_from_maps
from micrometry.particles.segmenter import Instances
from particle_scenes import make_scene, write_coco_folder


def cli(args):
    return run([str(a) for a in args])


#: ``particles train`` options of the runs here: a few small steps at the data's own scale
TINY_STEPS = {"steps_per_epoch": 2, "batch_size": 2, "crop": 64, "scale": 1}


# -- targets and decoders: perfect maps give back the true instances -------------------------


def _same_partition(a, b):
    """Label images equal up to renumbering."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(pairs[0]) == len(np.unique(a)) == len(np.unique(b))


def _recovered(found, truth, iou=0.8):
    """How many true instances have a found instance with IoU >= ``iou``."""
    n = 0
    for i in range(1, truth.max() + 1):
        ids, counts = np.unique(found[truth == i], return_counts=True)
        j, inter = ids[np.argmax(counts)], counts.max()
        n += j > 0 and inter / ((truth == i).sum() + (found == j).sum() - inter) >= iou
    return n


def test_centre_offsets_decode_back_to_the_true_touching_instances():
    _, labels = make_scene(np.random.default_rng(3), 96, 128, n=14)
    offsets, heat = targets.centre_offsets_and_heat(labels)
    assert (heat == 1).sum() >= labels.max() - 1  # one positive per (convex enough) particle
    decoded, scores = instances_from_centres(
        (labels > 0).astype(np.float32), heat, offsets, peak_radius=2, min_area=1
    )
    assert decoded.max() == labels.max() and scores.shape == (labels.max(),)
    assert _same_partition(decoded, labels)


def test_centre_decoding_drops_low_scoring_instances():
    _, labels = make_scene(np.random.default_rng(5), 96, 128, n=8)
    offsets, heat = targets.centre_offsets_and_heat(labels)
    fg = (labels > 0).astype(np.float32)
    fg[labels == 1] = 0.55  # a faint particle: its pixels barely foreground, its score low
    all_found, scores = instances_from_centres(fg, heat, offsets, peak_radius=2, min_area=1)
    kept, kept_scores = instances_from_centres(fg, heat, offsets, peak_radius=2, min_area=1, min_score=0.6)
    assert kept.max() == all_found.max() - 1 == int((scores >= 0.6).sum())
    assert (kept_scores >= 0.6).all() and not kept[labels == 1].any()


def test_automatic_size_models_drop_fragments_relative_to_the_trained_diameter():
    from micrometry.particles.models.dense.dense_segmenter import DenseSegmenter, build_network
    from micrometry.particles.models.sizing import MIN_DIAMETER_FRACTION

    method, net = build_network("center-offset", (8, 16))
    sized = DenseSegmenter(method, net, scale=None, net_diameter=20.0)
    # a disc narrower than 0.3 of the trained diameter (6 network px) is a fragment
    assert sized.method.min_area(1.0) == round(np.pi / 4 * (MIN_DIAMETER_FRACTION * 20) ** 2)
    assert sized.method.min_area(0.5) == round(4 * np.pi / 4 * 6**2)  # in image pixels
    fixed_method, fixed_net = build_network("center-offset", (8, 16))
    assert (
        DenseSegmenter(fixed_method, fixed_net, scale=0.5).method.min_area(1.0) == 6
    )  # fixed scale: as before
    explicit, net2 = build_network("center-offset", (8, 16))
    explicit.config["min_area_net"] = 10  # a model's method_config wins
    assert DenseSegmenter(explicit, net2, scale=None, net_diameter=20.0).method.min_area(1.0) == 10


def test_watershed_decodes_perfect_distance_maps():
    _, labels = make_scene(np.random.default_rng(4), 96, 128, n=10)
    fg, boundary, distance = (
        targets.foreground(labels),
        targets.boundaries(labels),
        targets.normalised_distance(labels),
    )
    assert distance.max() == pytest.approx(1.0) and distance[labels == 0].max() == 0
    decoded, _ = watershed_from_maps(fg, boundary, distance, min_area=1)
    # crescents left by occlusion can split in two: that is the watershed's weakness, not a bug
    assert _recovered(decoded, labels) >= 0.8 * labels.max()


# -- training ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model", ["center-offset", "unet-watershed"])
def test_tiny_training_converges(model, trained_run):
    history = json.loads((trained_run(model) / "metrics.json").read_text())["history"]
    assert history[-1]["val_ap50"] > history[0]["val_ap50"] + 0.3
    assert max(h["val_ap50"] for h in history) > 0.7
    assert history[-1]["loss"] < history[0]["loss"]


@pytest.mark.slow
def test_trained_run_segments_new_images_through_load_particle_model(trained_run):
    segmenter = load_particle_model(trained_run("center-offset"))
    image, truth = make_scene(np.random.default_rng(11), 128, 160, n=12)
    found = segmenter.segment(image)
    assert isinstance(found, Instances) and found.labels.shape == image.shape
    assert abs(found.count - truth.max()) <= 3
    assert ((found.scores > 0) & (found.scores <= 1)).all()


@pytest.mark.slow
def test_train_and_predict_commands(tmp_path):
    data = write_coco_folder(tmp_path / "coco", n_images=3, height=96, width=128, n=8)
    out = tmp_path / "run"
    assert cli(particles_train_argv(data, out, model="unet-watershed", epochs=2, **TINY_STEPS)) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "unet-watershed" and config["settings"]["scale"] == 1.0
    assert (out / "checkpoints" / "best.pt").is_file() and (out / "metrics.json").is_file()
    # resume continues the same run up to more epochs; without --epochs it keeps the run's
    assert cli(["particles", "train", data, "--out", out, "--epochs", "3", "--resume"]) == 0
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 3
    assert cli(["particles", "train", data, "--out", out, "--resume"]) == 0
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 3
    pred = tmp_path / "pred"
    assert cli(["particles", "predict", data / "images", "--model", out, "--out", pred, "--tta"]) == 0
    assert (pred / "results.json").is_file() and len(list((pred / "labels").glob("*.png"))) == 3


# -- bad input: one line, exit code 2, nothing left behind -----------------------------------


def test_unknown_model_and_bad_dataset_are_clear_errors(tmp_path, capsys):
    data = write_coco_folder(tmp_path / "coco", n_images=1, height=64, width=64, n=3)
    assert cli(["particles", "train", data, "--out", tmp_path / "r1", "--model", "yolo"]) == 2
    assert "unknown trainable particle model 'yolo'" in capsys.readouterr().err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "annotations.json").write_text("{not json")
    (tmp_path / "broken" / "images").mkdir()
    assert cli(["particles", "train", tmp_path / "broken", "--out", tmp_path / "r2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid JSON" in err[0]
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "center-offset"}))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "best.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_particle_model(run)
    write_coco_folder(tmp_path / "coco", n_images=1, height=64, width=64, n=3)
    assert (
        cli(
            ["particles", "predict", tmp_path / "coco" / "images", "--model", run, "--out", tmp_path / "pred"]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupt or unreadable checkpoint" in err[0]
    assert not (tmp_path / "pred").exists()


@pytest.mark.slow
def test_mismatched_model_name_is_a_clear_error(tmp_path, capsys, trained_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run("center-offset"), run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "model": "unet-watershed"}))
    with pytest.raises(CheckpointError, match="holds model 'center-offset', not 'unet-watershed'"):
        load_particle_model(run)
    # resuming a run with another --model (on the run's own data: other data is refused first)
    other_run = trained_run("unet-watershed")
    data = json.loads((other_run / "config.json").read_text())["data"]
    assert cli(particles_train_argv(data, other_run, resume=True, model="center-offset")) == 2
    assert "run was trained with model 'unet-watershed', not 'center-offset'" in capsys.readouterr().err
    # a plain torch file is not a model checkpoint
    torch.save({"net": {}}, run / "checkpoints" / "best.pt")
    with pytest.raises(CheckpointError, match="not a micrometry checkpoint"):
        load_particle_model(run)


def test_watershed_refuses_learned_model_options():
    from micrometry.errors import InputError

    with pytest.raises(InputError, match="does not take option"):
        load_particle_model("watershed", tile=256)
    from micrometry.particles.models.base import shipped_model_name

    other = next(m for m in ("unet-watershed", "center-offset") if m != shipped_model_name())
    with pytest.raises(CheckpointError, match="has no shipped weights"):
        load_particle_model(other)


# -- maskrcnn and cascade-maskrcnn: plain PyTorch, through the shared loop, tiling and export ----


@pytest.mark.slow
@pytest.mark.parametrize("model", ["maskrcnn", "cascade-maskrcnn"])
def test_detectors_train_resume_export_and_predict(tmp_path, model):
    data = write_coco_folder(tmp_path / "coco", n_images=2, height=96, width=128, n=8)
    out = tmp_path / "run"
    args = particles_train_argv(data, out, model=model, **TINY_STEPS)
    assert cli([*args, "--epochs", "1"]) == 0
    assert cli([*args, "--epochs", "2", "--resume"]) == 0
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 2
    image = make_scene(np.random.default_rng(2), 96, 128)[0]
    # tiles smaller than the image: the detections of each tile's own part are joined
    for segmenter in (load_particle_model(out), load_particle_model(out, tile=64)):
        found = segmenter.segment(image)
        assert segmenter.name == model
        assert found.labels.shape == (96, 128) and found.scores.shape == (found.count,)
    assert cli(["export", out, "--out", tmp_path / "exported"]) == 0
    exported = load_particle_model(tmp_path / "exported").segment(image)
    assert np.array_equal(exported.labels, load_particle_model(out).segment(image).labels)
    pred = tmp_path / "pred"
    assert (
        cli(["particles", "predict", data / "images", "--ensemble", f"{out},{out}", "--out", pred, "--tta"])
        == 0
    )
    meta = json.loads((pred / "prediction.json").read_text())
    assert [m["weight"] for m in meta["members"]] == [1.0, 1.0] and meta["members"][0]["tta"]["flips"]


# -- the shipped checkpoint ----------------------------------------------------------------------


def test_shipped_checkpoint_is_the_default_and_segments(tmp_path):
    from micrometry.particles.models.base import DEFAULT_MODEL, shipped_model_dir, shipped_model_name
    from micrometry.synth.particle_scene import SuspensionParams, image_rng, render_image

    # weights only (no optimiser moments, RNG or history): about 2 MB
    assert (shipped_model_dir() / "weights.safetensors").stat().st_size < 2_500_000
    segmenter = load_particle_model(None)
    assert segmenter.name == shipped_model_name() == DEFAULT_MODEL
    scene = render_image(SuspensionParams(height=256, width=320), image_rng(5, "test", 0))
    found = segmenter.segment(scene.image)
    assert found.labels.shape == (256, 320)
    n_true = int(scene.labels.max())
    # it finds most particles, and confident detections are not wildly more than the particles
    assert n_true > 0 and _recovered(found.labels, scene.labels, iou=0.5) >= 0.5 * n_true
    assert (found.scores >= 0.5).sum() <= 2 * n_true + 3


def test_importing_the_training_data_module_opens_no_network_connection():
    """albumentations checks for updates over the network on import unless told not to."""
    import subprocess
    import sys

    code = (
        "import socket, time\n"
        "calls = []\n"
        "def refuse(self, *args):\n"
        "    calls.append(args)\n"
        "    raise OSError('blocked by the test')\n"
        "socket.socket.connect = refuse\n"
        "import micrometry.particles.models.data\n"
        "time.sleep(1.0)  # the update check runs in a background thread\n"
        "print(len(calls))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
