import json

import pytest
import torch
from torch import nn

from micrometry.errors import CheckpointError, OutputExistsError
from micrometry.train import LoopConfig, RunDir, TrainTask, fit, load_checkpoint, seed_everything


class LinearTask(TrainTask):
    """Fit y = 3x - 1 with noise-free data; small enough to run in milliseconds."""

    def __init__(self, seed=0):
        seed_everything(seed)
        self.net = nn.Sequential(nn.Linear(1, 8), nn.Dropout(0.1), nn.Linear(8, 1))
        self.modules = {"net": self.net}
        self.optimizers = {"opt": torch.optim.SGD(self.net.parameters(), lr=0.05)}
        self.schedulers = {}
        self.x = torch.linspace(-1, 1, 64)[:, None]
        self.y = 3 * self.x - 1

    def train_batches(self, epoch, generator):
        order = torch.randperm(64, generator=generator)
        return [order[i : i + 16] for i in range(0, 64, 16)]

    def train_step(self, idx):
        loss = nn.functional.mse_loss(self.net(self.x[idx]), self.y[idx])
        self.optimizers["opt"].zero_grad()
        loss.backward()
        self.optimizers["opt"].step()
        return {"loss": loss.item()}

    def validate(self):
        return {"val_loss": nn.functional.mse_loss(self.net(self.x), self.y).item()}


def test_fit_writes_run_folder_and_learns(tmp_path):
    run = RunDir.for_training(tmp_path / "run")
    metrics = fit(LinearTask(), run, LoopConfig(epochs=15, seed=1))
    assert metrics["history"][-1]["val_loss"] < metrics["history"][0]["val_loss"] / 5
    assert run.checkpoint_path("best").is_file() and run.checkpoint_path("last").is_file()
    assert json.loads(run.metrics_path.read_text())["best"]["epoch"] >= 1
    assert "epoch=15" in run.log_path.read_text()


def test_resume_equals_uninterrupted(tmp_path):
    full = fit(LinearTask(), RunDir.for_training(tmp_path / "full"), LoopConfig(epochs=6, seed=3))

    run = RunDir.for_training(tmp_path / "resumed")
    fit(LinearTask(), run, LoopConfig(epochs=3, seed=3))  # "killed" after 3 epochs
    # a fresh process would build a freshly initialised task; resume overwrites it
    resumed = fit(
        LinearTask(seed=99),
        RunDir.for_training(tmp_path / "resumed", resume=True),
        LoopConfig(epochs=6, seed=3),
        resume=True,
    )
    assert resumed["final"]["val_loss"] == pytest.approx(full["final"]["val_loss"], rel=1e-6)
    assert len(resumed["history"]) == 6


def test_run_folder_refuses_to_clobber(tmp_path):
    run = RunDir.for_training(tmp_path / "r")
    fit(LinearTask(), run, LoopConfig(epochs=1))
    with pytest.raises(OutputExistsError):
        RunDir.for_training(tmp_path / "r")
    with pytest.raises(CheckpointError, match="nothing to resume"):
        RunDir.for_training(tmp_path / "empty", resume=True)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a micrometry checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_time_budget_stops_early(tmp_path):
    metrics = fit(
        LinearTask(), RunDir.for_training(tmp_path / "r"), LoopConfig(epochs=10_000, time_budget_s=0.0)
    )
    assert len(metrics["history"]) == 1
