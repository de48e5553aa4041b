"""The models shipped in the package make predict work without training."""

import numpy as np
from PIL import Image

from micrometry.cli import run
from micrometry.depth.shipped import load_default_method, shipped_model
from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset


def test_shipped_depth_model_predicts_plausible_depths(tmp_path):
    assert (shipped_model() / "model.json").is_file()
    write_sem_dataset(tmp_path / "d", tmp_path / "t", SemSynthConfig(seed=5, n_structures=2, n_sites=4,
                                                                     images_per_site=1, n_test=20))
    assert run(["depth", "predict", tmp_path / "d", "--out", tmp_path / "pred"]) == 0  # no --model
    names = sorted(p.name for p in (tmp_path / "d/test/SEM").iterdir())
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == names
    pred = np.stack([np.array(Image.open(tmp_path / "pred" / n)) for n in names]).astype(float)
    truth = np.stack([np.array(Image.open(tmp_path / "t/test_depth" / n)) for n in names]).astype(float)
    rmse = np.sqrt(((pred - truth) ** 2).mean())
    # the official baseline scores ~25 on this simulator; the shipped model must be far better
    assert rmse < 12, rmse


def test_shipped_depth_model_loads_through_the_api():
    method = load_default_method(device="cpu")
    heights = method.predict(np.full((3, 72, 48), 120, np.uint8))
    assert heights.shape == (3, 72, 48) and np.isfinite(heights).all()
