"""Choosing unet-weak's epoch by the excess variation of its predicted real shapes (no label read)."""

import numpy as np
import pytest
import torch

from micrometry.depth.methods.unet import excess_variation


def hole_row(n: int = 48, depth: float = 50.0) -> torch.Tensor:
    """One line across a hole: flat top, a tapered wall down, the floor, a wall back up."""
    x = torch.arange(n, dtype=torch.float32)
    return 100.0 - depth * ((x > 10) & (x < 38)).float() * torch.clamp(
        torch.minimum(x - 10, 38 - x) / 6, 0, 1
    )


def test_walls_of_any_profile_cost_nothing_and_a_dip_costs_twice_its_depth():
    plain = hole_row().expand(72, 48).clone()
    assert float(excess_variation(plain[None])) == pytest.approx(0.0, abs=1e-4)
    steep = hole_row().clone()
    steep[11:16] = 50.0  # a vertical wall instead of a tapered one: still one fall and one rise
    assert float(excess_variation(steep.expand(72, 48)[None])) == pytest.approx(0.0, abs=1e-4)
    dipped = plain.clone()
    dipped[:, 3] -= 4.0  # a 4-nm dip on the flat top, in every row (a column along the dip stays flat)
    expected = 72 * 2 * 4.0 / (72 * 48)  # each row: twice the dip's depth
    assert float(excess_variation(dipped[None])) == pytest.approx(expected, rel=1e-4)


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
