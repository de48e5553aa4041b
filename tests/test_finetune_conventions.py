"""Fine-tuning learns the annotations' conventions: whether objects cut by the image border count."""

import json

import numpy as np
import pytest

from micrometry.cli import run
from micrometry.io.image import write_image
from micrometry.particles.models.conventions import (
    border_convention,
    border_touching,
    drop_border_instances,
    one_polarity,
    particle_polarity,
)
from particle_scenes import make_scene


def cli(args):
    return run([str(a) for a in args])


def scenes(n, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return [make_scene(rng, height=160, width=200, n=30, radius=(6, 10), **kw) for _ in range(n)]


def test_drop_border_instances_renumbers_and_keeps_each_score_with_its_instance():
    labels = np.zeros((20, 30), np.int32)
    labels[0:4, 5:9] = 1  # touches the top
    labels[8:12, 8:12] = 2
    labels[10:14, 26:30] = 3  # touches the right
    labels[15:18, 2:6] = 4
    scores = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    out, kept = drop_border_instances(labels, scores)
    assert out.max() == 2 and list(kept) == [0.2, 0.4]
    assert (out[8:12, 8:12] == 1).all() and (out[15:18, 2:6] == 2).all()
    assert list(border_touching(labels)) == [1, 3] and len(border_touching(out)) == 0
    # a label image with gaps in its ids and no scores (annotations)
    gapped = np.where(labels == 2, 7, labels)
    assert drop_border_instances(gapped)[0].max() == 2


def test_border_convention_read_from_the_annotations():
    full = [labels for _, labels in scenes(3)]
    cleared = [drop_border_instances(labels)[0] for labels in full]
    assert sum(len(border_touching(labels)) for labels in full) >= 10  # the scenes do have cut particles
    kept = border_convention(full)
    left_out = border_convention(cleared)
    assert not kept.exclude and kept.observed >= 10
    assert left_out.exclude and left_out.observed == 0 and left_out.expected >= 5
    assert "leave out objects cut by the image border" in left_out.note()
    # too few objects to tell: the default (keep them)
    few = np.zeros((200, 200), np.int32)
    few[90:100, 90:100] = 1
    assert not border_convention([few]).exclude
    assert not border_convention([np.zeros((50, 50), np.int32)]).exclude


def test_polarity_of_the_particles():
    (image, labels), (image2, labels2) = scenes(2, seed=1)
    assert particle_polarity(image, labels) == 1 and particle_polarity(255 - image, labels) == -1
    assert particle_polarity(image, np.zeros_like(labels)) == 0
    assert one_polarity([(image, labels), (image2, labels2), (image, np.zeros_like(labels))])
    assert not one_polarity([(image, labels), (255 - image2, labels2)])
    assert not one_polarity([])


@pytest.mark.slow
def test_finetuning_on_masks_without_border_objects_predicts_none(tmp_path, capsys):
    """images/ + masks/ whose annotator left out cut particles -> train --init shipped -> predict leaves them out."""
    data = tmp_path / "data"
    for i, (image, labels) in enumerate(scenes(2, seed=3)):
        write_image(data / "images" / f"im{i}.png", image)
        write_image(data / "masks" / f"im{i}.png", drop_border_instances(labels)[0].astype(np.uint16))
        write_image(tmp_path / "raw" / f"im{i}.png", image)
    run_dir = tmp_path / "run"
    train = ["particles", "train", data, "--out", run_dir, "--init", "shipped", "--epochs", "1"]
    train += ["--steps-per-epoch", "2", "--batch-size", "2", "--crop", "64", "--threads", "1"]
    assert cli(train) == 0
    said = capsys.readouterr()
    assert "leave out objects cut by the image border" in said.err
    assert "int8 network for CPU prediction" in said.out  # made from the fine-tuned weights
    settings = json.loads((run_dir / "config.json").read_text())["settings"]
    assert settings["exclude_border"] is True
    assert settings["invert_p"] == 0.0  # bright particles in every image: fine-tuned on that polarity only
    assert "image border" in (run_dir / "log.txt").read_text()
    pred = tmp_path / "pred"
    assert (
        cli(["particles", "predict", tmp_path / "raw", "--out", pred, "--model", run_dir, "--no-overlays"])
        == 0
    )
    from micrometry.particles.label_sources import read_label_image

    for i in range(2):
        found = read_label_image(pred / "labels" / f"im{i}.png")
        assert found.max() > 0 and len(border_touching(found)) == 0
    per_image = json.loads((pred / "prediction.json").read_text())["per_image"]
    assert {p["precision"] for p in per_image} == {"int8"}  # its 7-bit int8 network is exact on every CPU
    # the user's word wins over what the annotations suggest
    assert cli([*train, "--overwrite", "--keep-border"]) == 0
    assert json.loads((run_dir / "config.json").read_text())["settings"]["exclude_border"] is False
    assert "image border" not in capsys.readouterr().err
