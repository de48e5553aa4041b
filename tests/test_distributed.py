"""DDP training (2 CPU processes, gloo) gives the single-process result."""

import json
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from helpers import TINY_UNET_OPTIONS, depth_predict_argv, free_port, torchrun_failure, torchrun_micrometry
from micrometry.cli import run as run_cli
from micrometry.errors import InputError
from micrometry.train import LoopConfig, RunDir, TrainTask, distributed, fit, load_checkpoint, seed_everything

N_SAMPLES, GLOBAL_BATCH, EPOCHS = 64, 16, 4


class LinearTask(TrainTask):
    """A small regression (no dropout: the result must not depend on the RNG stream)."""

    def __init__(self, seed=0, shard=True, in_list=False):
        seed_everything(seed)
        net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
        # an ensemble-style task keeps its networks in a list, out of DDP's reach
        self.nets = [net] if in_list else None
        self.net = None if in_list else net
        self.modules = {"net": net}
        self.optimizers = {"opt": torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)}
        self.schedulers = {}
        self.shard = shard
        self.x = torch.linspace(-1, 1, 2 * N_SAMPLES).reshape(N_SAMPLES, 2)
        self.y = 3 * self.x[:, :1] - self.x[:, 1:] ** 2 + 0.5

    def train_batches(self, epoch, generator):
        order = torch.randperm(N_SAMPLES, generator=generator)
        if self.shard:  # the DistributedSampler equivalent
            return distributed.shard_indices(order, GLOBAL_BATCH)
        # a task that knows nothing about DDP: the loop splits its batches
        return [
            (self.x[b], self.y[b])
            for b in (order[i : i + GLOBAL_BATCH] for i in range(0, N_SAMPLES, GLOBAL_BATCH))
        ]

    def wrap_ddp(self, wrap):
        if self.net is not None:  # the listed variant wraps nothing: gradients are averaged at the step
            self.net = wrap(self.net)

    def train_step(self, batch):
        x, y = (self.x[batch], self.y[batch]) if isinstance(batch, torch.Tensor) else batch
        net = self.nets[0] if self.nets else self.net
        loss = nn.functional.mse_loss(net(x), y)
        self.optimizers["opt"].zero_grad()
        loss.backward()
        self.optimizers["opt"].step()
        return {"loss": loss.item()}

    def validate(self):
        net = self.nets[0] if self.nets else self.net
        return {"val_loss": nn.functional.mse_loss(net(self.x), self.y).item()}


# DDP-wrapped with shard_indices; DDP-wrapped with batches split by the loop; gradients averaged at the step
VARIANTS = {"sharded": {}, "split": {"shard": False}, "listed": {"in_list": True}}


def _ddp_worker(rank: int, world: int, port: int, root: str) -> None:
    """One torchrun-like process: the variables torchrun would set, then the same fit as one process."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        MICROMETRY_QUIET="1",
    )
    torch.set_num_threads(1)
    returned = {}
    with distributed.session(True):
        assert distributed.world_size() == world
        for name, options in VARIANTS.items():
            run = RunDir.for_training(os.path.join(root, f"ddp-{name}"))
            returned[name] = fit(LinearTask(**options), run, LoopConfig(epochs=EPOCHS, seed=5))
        # killed after 2 epochs, resumed by every rank from rank 0's last.pt
        fit(
            LinearTask(), RunDir.for_training(os.path.join(root, "ddp-resumed")), LoopConfig(epochs=2, seed=5)
        )
        run = RunDir.for_training(os.path.join(root, "ddp-resumed"), resume=True)
        returned["resumed"] = fit(LinearTask(seed=99), run, LoopConfig(epochs=EPOCHS, seed=5), resume=True)
        # a time budget must stop every rank at the same step
        run = RunDir.for_training(os.path.join(root, "ddp-budget"))
        returned["budget"] = fit(LinearTask(), run, LoopConfig(epochs=100, seed=5, time_budget_s=0.0))
    assert not distributed.is_active()
    with open(os.path.join(root, f"rank{rank}.json"), "w") as f:
        json.dump(returned, f)


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    # One retry, in a fresh folder on a fresh port: a spawned gloo worker has been seen to abort once
    # in about twenty suites on a 2-core machine ("terminate called without an active exception").
    for attempt in range(2):
        root = tmp_path_factory.mktemp("ddp")
        try:
            mp.start_processes(
                _ddp_worker, args=(2, free_port(), str(root)), nprocs=2, join=True, start_method="spawn"
            )
            return root
        except mp.ProcessExitedException:
            if attempt:
                raise


def _weights(run_path):
    state = load_checkpoint(run_path / "checkpoints" / "last.pt")["state"]["modules"]["net"]
    return torch.cat([v.flatten() for v in state.values()]).numpy()


@pytest.mark.slow
def test_ddp_equals_single_process(ddp_runs, tmp_path):
    single_run = RunDir.for_training(tmp_path / "single")
    single = fit(LinearTask(), single_run, LoopConfig(epochs=EPOCHS, seed=5))
    initial = LinearTask().modules["net"]
    moved = np.abs(
        _weights(tmp_path / "single")
        - torch.cat([p.detach().flatten() for p in initial.state_dict().values()]).numpy()
    )
    assert moved.max() > 1e-2  # training did change the weights: the comparison below means something
    for name in VARIANTS:
        ddp_path = ddp_runs / f"ddp-{name}"
        np.testing.assert_allclose(_weights(ddp_path), _weights(tmp_path / "single"), rtol=1e-4, atol=1e-6)
        ddp = json.loads((ddp_path / "metrics.json").read_text())
        for ours, theirs in zip(ddp["history"], single["history"], strict=False):
            assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-4)
            # the logged training loss is the mean over ranks = the global batch's loss
            assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
            assert ours["steps"] == theirs["steps"] == N_SAMPLES // GLOBAL_BATCH


@pytest.mark.slow
def test_ddp_resume_equals_uninterrupted(ddp_runs):
    np.testing.assert_array_equal(_weights(ddp_runs / "ddp-resumed"), _weights(ddp_runs / "ddp-sharded"))
    resumed = json.loads((ddp_runs / "rank1.json").read_text())["resumed"]
    assert len(resumed["history"]) == EPOCHS


@pytest.mark.slow
def test_only_rank_zero_writes_and_all_ranks_agree(ddp_runs):
    log = (ddp_runs / "ddp-sharded" / "log.txt").read_text()
    assert log.count("epoch=") == EPOCHS  # one line per epoch, not one per rank
    rank0, rank1 = (json.loads((ddp_runs / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0 == rank1  # fit returns the same metrics on every rank
    assert len(rank0["budget"]["history"]) == 1  # both ranks stopped after the first step of epoch 1
    assert rank0["budget"]["final"]["steps"] == 1


def test_shard_indices_single_process_is_plain_batching():
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    batches = distributed.shard_indices(order, 4)
    assert [b.tolist() for b in batches] == [order[:4].tolist(), order[4:8].tolist(), order[8:].tolist()]


def test_split_batch_covers_every_sample_once():
    x, y = torch.arange(10), np.arange(10) * 2
    batch = {"pair": (x, y), "names": [f"s{i}" for i in range(10)], "scale": 0.5}
    parts = [distributed.split_batch(batch, 3, r) for r in range(3)]
    assert torch.cat([p["pair"][0] for p in parts]).tolist() == list(range(10))
    assert sum((p["names"] for p in parts), []) == batch["names"]
    assert all(p["scale"] == 0.5 and np.array_equal(p["pair"][1], p["pair"][0].numpy() * 2) for p in parts)
    assert distributed.split_batch(torch.arange(2), 3, 0) is None  # fewer samples than ranks: skipped by all
    # members of different lengths (e.g. 4 simulated and 8 real images) are each cut in even parts
    sim, real = distributed.split_batch((torch.arange(4), torch.arange(8)), 2, 1)
    assert sim.tolist() == [2, 3] and real.tolist() == [4, 5, 6, 7]


def test_torchrun_without_ddp_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="without --ddp"):
        with distributed.session(False):
            pass
    with pytest.raises(InputError, match="without --ddp"):
        fit(LinearTask(), RunDir.for_training(tmp_path / "r"), LoopConfig(epochs=1))
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_ddp_without_torchrun_trains_in_one_process(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.warns(UserWarning, match="without torchrun"):
        with distributed.session(True):
            metrics = fit(LinearTask(), RunDir.for_training(tmp_path / "r"), LoopConfig(epochs=1))
    assert len(metrics["history"]) == 1


def test_run_folder_of_other_ranks_writes_nothing(tmp_path, monkeypatch):
    earlier = RunDir.for_training(tmp_path / "r")
    earlier.write_config({"method": "earlier"})
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    run = RunDir.for_training(tmp_path / "r", overwrite=True)  # rank 0 clears it, not rank 1
    run.write_config({"method": "rank 1"})
    run.log("rank 1 was here")
    assert json.loads(run.config_path.read_text()) == {"method": "earlier"}
    assert not run.log_path.exists() or "rank 1" not in run.log_path.read_text()


@pytest.mark.slow
def test_torchrun_depth_train_ddp(tmp_path):
    """The documented launch: `torchrun --nproc_per_node 2 -m micrometry depth train ... --ddp`."""
    from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset

    write_sem_dataset(
        tmp_path / "data",
        tmp_path / "truth",
        SemSynthConfig(seed=2, n_structures=6, n_sites=4, images_per_site=3, n_test=4),
    )
    train = ["depth", "train", str(tmp_path / "data"), "--out", str(tmp_path / "run"), *TINY_UNET_OPTIONS]
    done = torchrun_micrometry(*train, "--epochs", "2", "--ddp", timeout=120)
    assert done.returncode == 0, torchrun_failure(done)
    assert done.stdout.count("-> ") == 1  # the summary comes from rank 0 only
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2] and metrics["best"]["val_rmse"] > 0
    assert (tmp_path / "run" / "log.txt").read_text().count("epoch=") == 2
    # the run folder is an ordinary one: predict reads it
    assert run_cli(depth_predict_argv(tmp_path / "data", tmp_path / "run", tmp_path / "pred")) == 0
    assert len(list((tmp_path / "pred").glob("*.png"))) == 4
