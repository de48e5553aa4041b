"""The shared training loop: seeded, device-agnostic, resumable, time-budgeted.

Every trainable method of both jobs is a :class:`~micrometry.train.task.TrainTask`: it owns its
networks and optimisers and knows how to do one step. :func:`fit` owns the
rest, once: epochs, progress bar, logging, validation, checkpoints, resume,
time budget. A plain loop in the spirit of torchvision's
``references/detection``; no framework. Under ``torchrun ... --ddp`` the same
loop trains data-parallel; the distributed pieces live in
:mod:`micrometry.train.distributed` and do nothing in a single process.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from micrometry.errors import CheckpointError, InputError
from micrometry.progress import make_progress
from micrometry.train import distributed
from micrometry.train.run import RunDir, load_checkpoint, save_checkpoint
from micrometry.train.task import TrainTask


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU.

    Raises
    ------
    InputError
        ``name`` is no device, or CUDA is asked for and there is none (torch
        would only fail at the first tensor moved, with an assertion).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"--device {name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available (use cpu or auto)")
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"--device {name}: micrometry runs on cpu or cuda")
    return device


def configure_threads(n: int | None = None) -> None:
    """Use all cores for intra-op work; without a GPU that is where the time goes.

    Under torchrun the cores are shared by the ``LOCAL_WORLD_SIZE`` processes of this machine.
    """
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    torch.set_num_threads(n or max(1, (os.cpu_count() or 1) // processes))


def clipped_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, parameters, max_norm: float) -> None:
    """Backward, clip the gradient norm to ``max_norm`` and step: one guarded update."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    optimizer.step()


@dataclass
class LoopConfig:
    """How long and how to train.

    Attributes
    ----------
    epochs : int
        Maximum number of epochs.
    seed : int
        Seeds model initialisation (done by the caller) and every epoch's shuffle.
    time_budget_s : float or None
        Stop once this much training time has passed (checked after every step);
        the epoch in progress is then validated and checkpointed.
    monitor, mode : str
        The validation metric that picks ``best.pt`` and whether lower or higher is better.
    """

    epochs: int = 10
    seed: int = 0
    time_budget_s: float | None = None
    monitor: str = "val_loss"
    mode: str = "min"
    description: str = "train"


def fit(
    task: TrainTask,
    run: RunDir,
    cfg: LoopConfig,
    resume: bool = False,
    extra_payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``task``, writing checkpoints and metrics into ``run``.

    Parameters
    ----------
    task : TrainTask
        The method to train, already on its device.
    run : RunDir
        Where checkpoints, metrics and the log go.
    cfg : LoopConfig
        Epochs, seed, budget and the metric to monitor.
    resume : bool
        Continue from ``run``'s ``last.pt``; with the same seed the result equals an
        uninterrupted run.
    extra_payload : dict, optional
        Stored in every checkpoint (e.g. the method name and its configuration), so
        that a checkpoint alone is enough to rebuild the model.

    Returns
    -------
    dict
        The metrics written to ``metrics.json``: ``history``, ``best`` and ``final``.

    Notes
    -----
    In a DDP process group (:func:`micrometry.train.distributed.session`) the
    task's networks are DDP-wrapped, each rank trains on its share of every
    batch, the logged training losses are averaged over the ranks, and only
    rank 0 writes the run folder.
    """
    distributed.refuse_unmanaged_launch()
    main = distributed.is_main_process()
    history: list[dict[str, Any]] = []
    start_epoch = 0
    best_value = math.inf if cfg.mode == "min" else -math.inf
    best_metrics: dict[str, Any] = {}
    elapsed_before = 0.0
    if resume:
        ckpt = load_checkpoint(run.checkpoint_path("last"), require=("state", "rng", "loop"))
        try:  # a checkpoint of another model or method fails here in many ways
            task.load_state_dict(ckpt["state"])
            _set_rng_state(ckpt["rng"])
            loop_state = ckpt["loop"]
            history = list(loop_state["history"])
            start_epoch = int(loop_state["epoch"]) + 1
            best_value = loop_state["best_value"]
            best_metrics = loop_state["best_metrics"]
            elapsed_before = float(loop_state["elapsed_s"])
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise CheckpointError(
                f"checkpoint does not fit this training ({type(exc).__name__}: "
                f"{(str(exc).splitlines() or [''])[0][:160]})",
                run.checkpoint_path("last"),
            ) from None
        run.log(f"resumed from epoch {start_epoch}")
        if start_epoch >= cfg.epochs:  # nothing left: no empty progress display either
            run.log(f"nothing to resume: all {cfg.epochs} epochs are done")
            return run.read_metrics()
    else:
        run.log(f"start: {asdict(cfg)}")

    started = time.perf_counter() - elapsed_before
    out_of_time = False
    progress = make_progress()
    progress.disable = progress.disable or not main
    with progress, distributed.data_parallel(task):
        for epoch in range(start_epoch, cfg.epochs):
            generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            batches = distributed.rank_batches(task.train_batches(epoch, generator))
            total = len(batches) if hasattr(batches, "__len__") else None
            bar = progress.add_task(f"{cfg.description} epoch {epoch + 1}/{cfg.epochs}", total=total, info="")
            task.train(True)
            sums: dict[str, float] = {}
            steps = 0
            for batch in batches:
                losses = task.train_step(batch)
                steps += 1
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                progress.update(bar, advance=1, info=" ".join(f"{k}={v:.4g}" for k, v in losses.items()))
                if cfg.time_budget_s is not None and distributed.any_rank(
                    time.perf_counter() - started > cfg.time_budget_s
                ):
                    out_of_time = True
                    break
            task.end_epoch(epoch)
            task.train(False)
            sums = distributed.mean_over_ranks(sums)
            with torch.no_grad(), distributed.plain_modules(task):
                val = task.validate()
            record = {
                "epoch": epoch + 1,
                "steps": steps,
                **{k: v / max(steps, 1) for k, v in sums.items()},
                **val,
                "elapsed_s": round(time.perf_counter() - started, 2),
            }
            history.append(record)
            run.log(
                " ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
            )
            value = val.get(cfg.monitor, record.get(cfg.monitor))
            improved = value is not None and (value < best_value if cfg.mode == "min" else value > best_value)
            if improved:
                best_value, best_metrics = value, record
            payload = {
                **(extra_payload or {}),
                "state": task.state_dict(),
                "rng": _get_rng_state(),
                "loop": {
                    "epoch": epoch,
                    "history": history,
                    "best_value": best_value,
                    "best_metrics": best_metrics,
                    "elapsed_s": time.perf_counter() - started,
                },
            }
            # Without a monitored metric the latest state is the best one we know.
            # (Under DDP only rank 0 writes: the run folder and save_checkpoint ignore the other ranks.)
            if improved or value is None:
                best_metrics = best_metrics or record
                save_checkpoint(run.checkpoint_path("best"), payload)
            save_checkpoint(run.checkpoint_path("last"), payload)
            metrics = {"history": history, "best": best_metrics, "final": record, "monitor": cfg.monitor}
            run.write_metrics(metrics)
            distributed.check_in_sync(task.modules)
            distributed.barrier()
            if out_of_time:
                run.log(f"time budget of {cfg.time_budget_s:.0f} s reached after epoch {epoch + 1}")
                break
    return run.read_metrics()


def _get_rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
