"""The models shipped in the package make predict work without training."""

import csv

import numpy as np
from PIL import Image

from micrometry.cli import run
from micrometry.depth.methods import load_depth_model
from micrometry.depth.methods.base import shipped_model_dir
from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset


def test_shipped_depth_model_predicts_plausible_depths(tmp_path):
    assert (shipped_model_dir() / "model.json").is_file()
    write_sem_dataset(
        tmp_path / "d",
        tmp_path / "t",
        SemSynthConfig(seed=5, n_structures=2, n_sites=4, images_per_site=1, n_test=20),
    )
    assert run(["depth", "predict", tmp_path / "d", "--out", tmp_path / "pred"]) == 0  # no --model
    names = sorted(p.name for p in (tmp_path / "d/test/SEM").iterdir())
    # one depth map per image, plus the per-image report (90 % interval, OOD flag) of the shipped unet-weak
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == sorted(names + ["depth_report.csv"])
    report = list(csv.DictReader(open(tmp_path / "pred" / "depth_report.csv")))
    assert [r["file"] for r in report] == names
    # images of the tool it was trained for: (nearly) none flagged
    assert sum(r["unlike_training_data"] == "yes" for r in report) <= 1
    pred = np.stack([np.array(Image.open(tmp_path / "pred" / n)) for n in names]).astype(float)
    truth = np.stack([np.array(Image.open(tmp_path / "t/test_depth" / n)) for n in names]).astype(float)
    rmse = np.sqrt(((pred - truth) ** 2).mean())
    # the official baseline scores ~25 on this simulator; the shipped model must be far better
    assert rmse < 12, rmse


def test_shipped_depth_model_flags_images_of_another_tool(tmp_path, capsys):
    """A much blurrier, noisier, more charged tool (the bench's --variant other): warned about."""
    from micrometry.synth.sem_physics import RealDomain

    other = RealDomain(
        psf_sigma=(1.6, 1.1),
        dose=18.0,
        charging=0.09,
        line_jitter_px=0.55,
        escape_length_scale=0.9,
        gain=62.0,
        offset=38.0,
    )
    write_sem_dataset(
        tmp_path / "d",
        tmp_path / "t",
        SemSynthConfig(seed=6, n_structures=2, n_sites=4, images_per_site=1, n_test=20, real=other),
    )
    capsys.readouterr()
    assert run(["depth", "predict", tmp_path / "d", "--out", tmp_path / "pred"]) == 0
    err = capsys.readouterr().err
    assert "images look unlike the model's training data" in err
    report = list(csv.DictReader(open(tmp_path / "pred" / "depth_report.csv")))
    assert sum(r["unlike_training_data"] == "yes" for r in report) >= 18


def test_shipped_depth_model_loads_through_the_api():
    method = load_depth_model("shipped", device="cpu")
    heights = method.predict(np.full((3, 72, 48), 120, np.uint8))
    assert heights.shape == (3, 72, 48) and np.isfinite(heights).all()
