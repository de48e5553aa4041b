"""Per-image uncertainty and out-of-distribution flags of depth predictions, the imaging ranges read
off real images, and the weight average the U-Net predicts with."""

import csv
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch.optim.swa_utils import AveragedModel

from micrometry.cli import run
from micrometry.depth.calibration import conformal_halfwidth, site_conformal_halfwidth
from micrometry.depth.methods import DEPTH_METHODS, DepthData, load_depth_model, train_method
from micrometry.depth.methods.unet import ema_average
from micrometry.depth.ood import fit_feature_gaussian
from micrometry.depth.photometry import blur_gap, noise_level
from micrometry.depth.predict import REPORT_NAME, UnlikeTrainingDataWarning, predict_folder
from micrometry.io.image import write_image
from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset
from micrometry.synth.sem_geometry import heights, hole_shapes, sample_holes
from micrometry.synth.sem_physics import SemPhysics, secondary_yield
from micrometry.train import RunDir


def test_conformal_interval_covers_the_stated_share_of_new_errors():
    rng = np.random.default_rng(0)
    half = conformal_halfwidth(rng.standard_t(4, size=500) * 3.0, coverage=0.9)
    new = rng.standard_t(4, size=50_000) * 3.0
    assert 0.87 <= np.mean(np.abs(new) <= half) <= 0.94
    assert conformal_halfwidth(np.array([1.0, -2.0, 3.0]), 0.9) == 3.0  # too few: the largest


def test_site_interval_holds_for_new_sites_where_the_plain_one_falls_short():
    # Residuals of 8 held-out sites x 25 images, most of the error shared by a site (SD 3 vs 1), and
    # new images each from a new site: the plain split-conformal width is often too narrow.
    rng = np.random.default_rng(0)
    plain, by_site = [], []
    for _ in range(100):
        residuals = np.repeat(rng.normal(1.0, 3.0, 8), 25) + rng.normal(0.0, 1.0, 200)
        sites = np.repeat(np.arange(8), 25)
        new = rng.normal(1.0, 3.0, 4000) + rng.normal(0.0, 1.0, 4000)
        plain.append(np.mean(np.abs(new) <= conformal_halfwidth(residuals, 0.9)))
        by_site.append(np.mean(np.abs(new) <= site_conformal_halfwidth(residuals, sites, 0.9)))
    plain, by_site = np.array(plain), np.array(by_site)
    assert plain.mean() < 0.89 and 0.9 <= by_site.mean() <= 0.96
    assert np.mean(by_site < 0.85) <= 0.5 * np.mean(plain < 0.85)
    one_site = rng.normal(size=30)
    assert site_conformal_halfwidth(one_site, np.zeros(30)) == conformal_halfwidth(one_site)


def test_feature_gaussian_flags_shifted_features_only():
    rng = np.random.default_rng(1)
    cov = np.diag(np.linspace(0.2, 3.0, 20))
    train, held, new = (rng.multivariate_normal(np.zeros(20), cov, size=n) for n in (800, 200, 2000))
    model = fit_feature_gaussian(train, held)
    assert np.mean(model.score(new) > model.threshold) < 0.02
    shifted = new + 2.0 * np.sqrt(np.diag(cov))  # every feature two standard deviations off
    assert np.mean(model.score(shifted) > model.threshold) > 0.98


def _clean_renders(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = heights(hole_shapes(sample_holes(n, rng)), rng.uniform(110, 140, size=n))
    return secondary_yield(h, SemPhysics())


def _to_u8(signal: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(20 + 80 * signal), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("sy,sx", [(0.0, 1.2), (1.0, 0.5)])
def test_blur_gap_reads_the_extra_probe_blur_per_axis(sy, sx):
    clean = _clean_renders(300, 0)
    sim = _to_u8(ndimage.gaussian_filter(clean, (0, 0.6, 0.6)))
    real = _to_u8(ndimage.gaussian_filter(clean, (0, np.hypot(0.6, sy), np.hypot(0.6, sx))))
    gy, gx = blur_gap(sim, real)
    assert abs(gy - sy) < 0.3 and abs(gx - sx) < 0.3


def test_noise_level_grows_with_added_noise():
    signal = ndimage.gaussian_filter(_clean_renders(100, 1), (0, 1, 1))
    rng = np.random.default_rng(2)
    low, high = (
        np.median(noise_level(_to_u8(signal + rng.normal(scale=s, size=signal.shape)))) for s in (0.02, 0.08)
    )
    assert high > 2 * low
    # 0.08 x 80 grey levels of noise over a median level of about 100 grey levels
    assert 0.05 < high < 0.1


def test_ema_average_follows_the_decay_schedule():
    net = torch.nn.Linear(3, 1)
    averaged = AveragedModel(net, multi_avg_fn=ema_average(0.9))
    averaged.update_parameters(net)  # first call copies
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    averaged.update_parameters(net)  # n = 1: decay min(0.9, 2 / 11)
    expected = start + (1 - 2 / 11) * 1.0
    torch.testing.assert_close(averaged.module.weight, expected)


@pytest.mark.slow
def test_predict_writes_intervals_and_warns_on_images_of_another_tool(tmp_path, capsys):
    write_sem_dataset(
        tmp_path / "d",
        tmp_path / "t",
        SemSynthConfig(seed=3, n_structures=12, n_sites=8, images_per_site=8, n_test=12),
    )
    method = DEPTH_METHODS.create("unet-weak", width=4, batch_size=16, real_batch_size=8)
    train_method(
        method,
        DepthData.load(tmp_path / "d"),
        RunDir.for_training(tmp_path / "run"),
        epochs=2,
        seed=0,
        device="cpu",
    )
    model = load_depth_model(tmp_path / "run", device="cpu")
    assert model.interval_nm > 0 and model.ood is not None

    with warnings.catch_warnings():
        warnings.simplefilter("error", UnlikeTrainingDataWarning)  # none expected on its own tool's images
        predict_folder(tmp_path / "d" / "test" / "SEM", model, tmp_path / "pred")
    with open(tmp_path / "pred" / REPORT_NAME, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["unlike_training_data"] for r in rows} <= {"no", "yes"}
    row = rows[0]
    assert float(row["depth_low_nm"]) < float(row["depth_nm"]) < float(row["depth_high_nm"])

    # The same holes seen at 1.5x magnification: flagged.
    odd = tmp_path / "zoomed"
    odd.mkdir()
    import cv2

    for i, path in enumerate(sorted((tmp_path / "d" / "test" / "SEM").glob("*.png"))):
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        write_image(odd / f"{i:03d}.png", cv2.resize(image[12:60, 8:40], (48, 72)))
    with pytest.warns(UnlikeTrainingDataWarning, match="unlike the model's training data"):
        predict_folder(odd, model, tmp_path / "pred2")
    # the command says so in one line, and still writes the maps (exit code 0)
    capsys.readouterr()
    assert (
        run(["depth", "predict", str(odd), "--model", str(tmp_path / "run"), "--out", str(tmp_path / "p3")])
        == 0
    )
    err = capsys.readouterr().err
    assert [
        line
        for line in err.splitlines()
        if line.startswith("warning: ") and "images look unlike the model's training data" in line
    ]
    assert len(list((tmp_path / "p3").glob("*.png"))) == 12
