"""``micrometry depth train / predict / evaluate / measure`` end to end, resume after a kill, bad inputs."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import TINY_UNET_OPTIONS, depth_predict_argv
from micrometry.cli import run
from micrometry.io.image import read_gray_u8, write_image
from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("depthcli")
    write_sem_dataset(
        root / "data",
        root / "truth",
        SemSynthConfig(seed=2, n_structures=6, n_sites=4, images_per_site=3, n_test=6),
    )
    return root


@pytest.fixture(scope="module")
def trained(dataset):
    out = dataset / "run"
    assert (
        run(["depth", "train", str(dataset / "data"), "--out", str(out), *TINY_UNET_OPTIONS, "--epochs", "2"])
        == 0
    )
    return out


@pytest.mark.slow
def test_train_writes_a_run_folder(trained):
    config = json.loads((trained / "config.json").read_text())
    assert config["method"] == "unet" and config["method_config"]["width"] == 4
    metrics = json.loads((trained / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and "val_rmse" in metrics["best"]
    assert (trained / "checkpoints/best.pt").is_file() and "epoch=2" in (trained / "log.txt").read_text()


@pytest.mark.slow
def test_predict_evaluate_measure(dataset, trained, tmp_path, capsys):
    pred, sub = tmp_path / "pred", tmp_path / "sub.zip"
    assert run(depth_predict_argv(dataset / "data", trained, pred, zip=sub)) == 0
    names = sorted(p.name for p in (dataset / "data/test/SEM").glob("*.png"))
    assert sorted(p.name for p in pred.iterdir()) == names
    assert read_gray_u8(pred / names[0]).shape == (72, 48)
    import zipfile

    assert sorted(zipfile.ZipFile(sub).namelist()) == names

    capsys.readouterr()
    assert run(["depth", "evaluate", str(pred), str(dataset / "truth"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    truth = np.stack([read_gray_u8(dataset / "truth/test_depth" / n) for n in names]).astype(float)
    mine = np.stack([read_gray_u8(pred / n) for n in names]).astype(float)
    assert result["rmse"] == pytest.approx(np.sqrt(((truth - mine) ** 2).mean()))
    assert sum(c["images"] for c in result["per_case"].values()) == len(names)

    assert run(["depth", "measure", str(dataset / "truth/test_depth"), "--out", str(tmp_path / "m.csv")]) == 0
    import csv

    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    true_depth = {
        r["file"]: float(r["hole_depth"]) for r in csv.DictReader(open(dataset / "truth/test_truth.csv"))
    }
    assert len(rows) == len(names)
    for r in rows:  # PNG depth maps are rounded to whole nm
        assert float(r["depth_nm"]) == pytest.approx(true_depth[r["file"]], abs=1.5)
        assert 0 < float(r["bottom_cd_x_nm"]) < float(r["top_cd_x_nm"])


def test_evaluate_matches_hand_computed_rmse(tmp_path, capsys):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    a = np.full((72, 48), 140, np.uint8)  # case 1 top level
    b = np.full((72, 48), 170, np.uint8)  # case 4
    write_image(truth / "x.png", a)
    write_image(truth / "y.png", b)
    a_pred = a.copy()
    a_pred[:36] = 143  # error 3 on half the pixels
    b_pred = b - 1  # error 1 everywhere
    write_image(pred / "x.png", a_pred)
    write_image(pred / "y.png", b_pred)
    assert run(["depth", "evaluate", str(pred), str(truth), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rmse"] == pytest.approx(np.sqrt((0.5 * 9 + 1) / 2))
    assert result["per_case"]["1"]["rmse"] == pytest.approx(np.sqrt(4.5))
    assert result["per_case"]["4"]["rmse"] == pytest.approx(1.0)


def _train_args(dataset, out):
    return [
        "depth",
        "train",
        str(dataset / "data"),
        "--out",
        str(out),
        *TINY_UNET_OPTIONS,
        "--epochs",
        "5",
        "--seed",
        "3",
    ]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metrics(dataset, tmp_path):
    assert run(_train_args(dataset, tmp_path / "full")) == 0
    full = json.loads((tmp_path / "full/metrics.json").read_text())

    killed = tmp_path / "killed"
    env = {**os.environ, "MICROMETRY_QUIET": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "micrometry", *_train_args(dataset, killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    # metrics.json is written right after checkpoints/last.pt: an epoch is then fully saved
    while not (killed / "metrics.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(json.loads((killed / "metrics.json").read_text())["history"])
    # the kill landed mid-run: the process did not finish on its own, and some but not all epochs were saved
    assert proc.returncode == -signal.SIGKILL
    assert 1 <= done < 5

    assert run(["depth", "train", str(dataset / "data"), "--out", str(killed), "--resume"]) == 0
    resumed = json.loads((killed / "metrics.json").read_text())
    assert len(resumed["history"]) == 5
    for a, b in zip(resumed["history"], full["history"], strict=False):
        assert a["val_rmse"] == pytest.approx(b["val_rmse"], rel=1e-5)
        assert a["map"] == pytest.approx(b["map"], rel=1e-5)


# -- bad inputs: one line, exit 2, nothing left behind ---------------------------------------------


def _one_line_error(capsys, expected):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    assert expected in err


def test_predict_with_missing_run_folder(dataset, tmp_path, capsys):
    assert run(depth_predict_argv(dataset / "data", tmp_path / "nope", tmp_path / "pred")) == 2
    _one_line_error(capsys, "no such run folder")
    assert not (tmp_path / "pred").exists()


@pytest.mark.slow
def test_predict_with_corrupt_checkpoint(dataset, trained, tmp_path, capsys):
    import shutil

    broken = tmp_path / "run"
    shutil.copytree(trained, broken)
    (broken / "checkpoints/best.pt").write_bytes(b"not a checkpoint")
    assert run(depth_predict_argv(dataset / "data", broken, tmp_path / "p", zip=tmp_path / "s.zip")) == 2
    _one_line_error(capsys, "corrupt")
    assert not (tmp_path / "p").exists() and not (tmp_path / "s.zip").exists()


@pytest.mark.slow
def test_predict_with_empty_image_folder(trained, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run(depth_predict_argv(tmp_path / "empty", trained, tmp_path / "pred")) == 2
    _one_line_error(capsys, "no images found")
    assert not (tmp_path / "pred").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # no temporary folders either


def test_train_with_unknown_method_or_parameter(dataset, tmp_path, capsys):
    assert (
        run(["depth", "train", str(dataset / "data"), "--method", "magic", "--out", str(tmp_path / "r")]) == 2
    )
    _one_line_error(capsys, "unknown depth method 'magic'")
    assert (
        run(
            [
                "depth",
                "train",
                str(dataset / "data"),
                "--param",
                "wdth=3",
                "--method",
                "unet",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    _one_line_error(capsys, "no parameter(s) wdth")
    assert not (tmp_path / "r").exists()


def test_train_with_missing_dataset_or_resume_without_run(tmp_path, capsys):
    assert run(["depth", "train", str(tmp_path / "nodata"), "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, "no such dataset folder")
    assert run(["depth", "train", str(tmp_path / "nodata"), "--out", str(tmp_path / "r"), "--resume"]) == 2
    _one_line_error(capsys, "nothing to resume")
    assert not (tmp_path / "r").exists()


def test_evaluate_with_missing_predictions(dataset, tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    assert run(["depth", "evaluate", str(tmp_path / "pred"), str(dataset / "truth")]) == 2
    _one_line_error(capsys, "have no prediction")


def test_measure_refuses_existing_csv(dataset, tmp_path, capsys):
    out = tmp_path / "m.csv"
    out.write_text("keep me")
    assert run(["depth", "measure", str(dataset / "truth/test_depth"), "--out", str(out)]) == 2
    _one_line_error(capsys, "already exists")
    assert out.read_text() == "keep me"
