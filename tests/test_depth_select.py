"""Choosing unet-weak's epoch by the excess variation of its predicted real shapes (no label read)."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def sem_data(tmp_path_factory):
    from micrometry.depth.methods import DepthData
    from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset

    root = tmp_path_factory.mktemp("sem")
    config = SemSynthConfig(seed=2, n_structures=4, n_sites=8, images_per_site=2, n_test=2)
    write_sem_dataset(root / "data", root / "truth", config)
    return DepthData.load(root / "data", ("sim", "real"))


def train_selecting(sem_data, run_path, margin: float):
    """4 epochs of a tiny unet-weak with select="excess"; the metrics and the kept state's epoch."""
    from micrometry.depth.methods import DEPTH_METHODS, train_method
    from micrometry.train import RunDir
    from micrometry.train.run import load_checkpoint

    method = DEPTH_METHODS.create(
        "unet-weak",
        width=4,
        batch_size=16,
        real_batch_size=8,
        render_weight=0.0,
        select="excess",
        select_margin=margin,
        epochs=4,
    )
    run = RunDir.for_training(run_path)
    metrics = train_method(method, sem_data, run, seed=0, device="cpu")
    kept = load_checkpoint(RunDir.existing(run_path).best_checkpoint())["loop"]["epoch"] + 1
    return metrics, kept


def test_select_excess_keeps_the_epoch_with_the_least_excess(sem_data, tmp_path):
    metrics, kept = train_selecting(sem_data, tmp_path / "run", margin=0.0)
    scored = [r for r in metrics["history"] if "val_real_excess_nm" in r]
    assert [r["epoch"] for r in scored] == [2, 3, 4]  # the second half of the schedule only
    assert all(np.isfinite(r["val_real_excess_nm"]) and r["val_real_excess_nm"] >= 0 for r in scored)
    least = min(scored, key=lambda r: r["val_real_excess_nm"])
    assert metrics["monitor"] == "val_real_excess_nm" and metrics["best"]["epoch"] == least["epoch"]
    assert kept == least["epoch"]


def test_select_excess_keeps_the_last_epoch_within_the_margin(sem_data, tmp_path):
    metrics, kept = train_selecting(sem_data, tmp_path / "run", margin=0.99)  # no epoch is 99 % below
    assert kept == metrics["final"]["epoch"] == 4
    assert "kept the last epoch" in (tmp_path / "run" / "log.txt").read_text()
