"""Data-parallel training with PyTorch DDP, for processes started by ``torchrun``.

``torchrun --nproc_per_node N -m micrometry ... train ... --ddp`` starts N
copies of the command and tells each one who it is through environment
variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``). Every process builds the same task from the same seed; then

- :func:`session` (entered by the training command when ``--ddp`` is given)
  joins the process group: ``nccl`` on GPUs, ``gloo`` on CPUs;
- :func:`~micrometry.train.fit` has the task wrap the networks it calls in
  :class:`~torch.nn.parallel.DistributedDataParallel` (:func:`data_parallel`
  and :meth:`~micrometry.train.task.TrainTask.wrap_ddp`), so that every
  backward pass averages the gradients of all processes (a network the task
  does not wrap has its gradients averaged at the optimiser step instead);
- each process trains on its own part of every global batch: a task that
  shuffles indices uses :func:`shard_indices` (the equivalent of
  ``DistributedSampler``); for any other task :func:`rank_batches` splits the
  batches the task builds along their first dimension;
- only rank 0 logs, shows progress and writes checkpoints and metrics (the
  run folder ignores writes from the other ranks); all ranks meet at a barrier
  after every epoch.

With a global batch that is a multiple of the number of processes, N processes
compute the same updates as one process with the same global batch (up to
floating-point summation order). Nothing here does anything unless a process
group is active: single-process training is unchanged.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from micrometry.errors import InputError
from micrometry.train.task import TrainTask


# -- who am I ------------------------------------------------------------------
def launched_by_torchrun() -> bool:
    """True in a process that ``torchrun`` (or another launcher using its variables) started."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_active() -> bool:
    """True while this process belongs to an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    if is_active():
        return dist.get_rank()
    return int(os.environ["RANK"]) if launched_by_torchrun() else 0


def world_size() -> int:
    """Number of training processes (1 when not distributed)."""
    return dist.get_world_size() if is_active() else 1


def is_main_process() -> bool:
    """Rank 0: the process that logs and writes the run folder."""
    return rank() == 0


# -- process group -----------------------------------------------------------------
@contextlib.contextmanager
def session(enabled: bool) -> Iterator[None]:
    """What a training command runs inside: the process group exists within it.

    Parameters
    ----------
    enabled : bool
        The command's ``--ddp`` flag. When set in a process started by
        ``torchrun``, join the process group on entry (``nccl`` with CUDA,
        else ``gloo``) and leave it on exit. When set without torchrun, train
        in one process (with a warning). When not set in a process that
        torchrun started as one of several, refuse: N copies of a
        single-process run would overwrite each other's run folder.

    Raises
    ------
    InputError
        Launched by torchrun with several processes but without ``--ddp``.
    """
    if not enabled:
        refuse_unmanaged_launch()
        yield
        return
    if not launched_by_torchrun():
        warnings.warn(
            "--ddp without torchrun: training in a single process "
            "(launch with `torchrun --nproc_per_node N -m micrometry ...`)"
        )
        yield
        return
    owns_group = not is_active()
    if owns_group:
        init_process_group()
    try:
        # the command's report is printed once, by rank 0 (errors still come from every rank)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull if rank() else sys.stdout):
            yield
        # nobody leaves while another rank may still talk to it (gloo aborts on a closed peer)
        barrier()
    finally:
        if owns_group and is_active():
            dist.destroy_process_group()


def init_process_group(backend: str | None = None) -> None:
    """Join the process group described by torchrun's environment variables.

    ``nccl`` when CUDA is available (each process then uses GPU ``LOCAL_RANK``,
    so that ``select_device("auto")`` gives every process its own GPU), else
    ``gloo``.
    """
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)


def refuse_unmanaged_launch() -> None:
    """Raise if torchrun started several copies of a command that was not told ``--ddp``."""
    if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1 and not is_active():
        raise InputError(
            f"started by torchrun as one of {os.environ['WORLD_SIZE']} processes "
            "but without --ddp: add --ddp (or run a single process)"
        )


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_active():
        dist.barrier()


# -- data sharding -----------------------------------------------------------------
class RankBatches(list):
    """Batches that already hold only this rank's samples (:func:`rank_batches` leaves them alone)."""


def shard_indices(order: torch.Tensor, batch_size: int) -> RankBatches:
    """This rank's part of every global batch of a shuffled index order.

    The distributed equivalent of ``[order[i:i + batch_size] for i in
    range(0, len(order), batch_size)]``: cut ``order`` (the same on every rank,
    e.g. ``torch.randperm(n, generator=generator)`` with the loop's per-epoch
    generator) into global batches of ``batch_size``, then give each rank a
    contiguous, nearly equal slice of each. Not distributed: the plain batches.

    Parameters
    ----------
    order : Tensor
        ``(n,)`` sample indices in this epoch's order.
    batch_size : int
        The global batch size (what one process would use alone).

    Returns
    -------
    RankBatches
        A list of index tensors, one per step; every rank gets the same number
        of steps. A last global batch smaller than the number of ranks is
        dropped when distributed (some rank would have nothing to train on).
    """
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if not is_active():
        return RankBatches(batches)
    n_ranks, me = world_size(), rank()
    return RankBatches(torch.tensor_split(b, n_ranks)[me] for b in batches if len(b) >= n_ranks)


def rank_batches(batches: Iterable[Any]) -> Iterable[Any]:
    """The batches this rank trains on.

    Not distributed, or batches from :func:`shard_indices`: unchanged. Any
    other batches are split along their first dimension (:func:`split_batch`),
    so a task that knows nothing about DDP still trains each sample once per
    global batch (it builds every global batch in each process, which costs
    data loading but not the forward/backward work).
    """
    if not is_active() or isinstance(batches, RankBatches):
        return batches
    if not hasattr(batches, "__len__"):
        return iter(_SplitBatches(batches, world_size(), rank()))
    return _SplitBatches(batches, world_size(), rank())


class _SplitBatches:
    """Lazily split every batch of an iterable (keeps ``len`` for the progress bar)."""

    def __init__(self, batches: Iterable[Any], n_ranks: int, me: int):
        self.batches, self.n_ranks, self.me = batches, n_ranks, me

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches:
            part = split_batch(batch, self.n_ranks, self.me)
            if part is not None:
                yield part


def split_batch(batch: Any, n_ranks: int, me: int) -> Any:
    """Rank ``me``'s contiguous slice of every per-sample member of a batch.

    Tensors, arrays and lists are per-sample sequences, each cut into
    ``n_ranks`` nearly equal slices (members may differ in length: a batch of
    16 simulated and 32 real images gives each of 2 ranks 8 and 16);
    tuples and dicts are structures whose members are split alike; anything
    else (numbers, None, strings) is shared by all ranks. Returns None when a
    member has fewer samples than there are ranks (every rank skips that
    batch, so all take the same steps).
    """
    if any(len(member) < n_ranks for member in _per_sample_members(batch)):
        return None
    return _slice(batch, n_ranks, me)


def _per_sample_members(batch: Any) -> Iterator[Any]:
    if isinstance(batch, (torch.Tensor, np.ndarray, list)):
        yield batch
    elif isinstance(batch, tuple):
        for item in batch:
            yield from _per_sample_members(item)
    elif isinstance(batch, dict):
        for item in batch.values():
            yield from _per_sample_members(item)


def _slice(batch: Any, n_ranks: int, me: int) -> Any:
    if isinstance(batch, (torch.Tensor, np.ndarray, list)):
        bounds = np.linspace(0, len(batch), n_ranks + 1).round().astype(int)
        return batch[bounds[me] : bounds[me + 1]]
    if isinstance(batch, tuple):
        parts = [_slice(item, n_ranks, me) for item in batch]
        return type(batch)(*parts) if hasattr(batch, "_fields") else tuple(parts)
    if isinstance(batch, dict):
        return {k: _slice(v, n_ranks, me) for k, v in batch.items()}
    return batch


# -- models ----------------------------------------------------------------------------
@contextlib.contextmanager
def data_parallel(task: TrainTask) -> Iterator[None]:
    """Within the block every rank's gradients are averaged (no-op when not distributed).

    The task wraps the networks its ``train_step`` calls (:meth:`TrainTask.wrap_ddp`)
    in DDP, which averages the gradients during the backward pass of every
    forward call (on GPUs their BatchNorm layers become SyncBatchNorm).
    ``task.modules`` keeps the plain networks, so checkpoints are the same as
    single-process ones; on exit the task gets its plain networks back.

    Every other trainable network of ``task.modules`` (one the task does not
    wrap, e.g. an ensemble kept in a list) has its gradients averaged instead
    just before each optimiser step (the Horovod ``DistributedOptimizer`` way):
    correct for any use of the network, without DDP's overlap of communication
    and backward.
    """
    if not is_active():
        yield
        return
    wrappers: dict[int, DistributedDataParallel] = {}

    def wrap(module: nn.Module) -> nn.Module:
        if id(module) not in wrappers:  # a network the task reaches twice gets one wrapper
            wrappers[id(module)] = _wrap(module)
        return wrappers[id(module)]

    hooks = []
    try:
        task.wrap_ddp(wrap)
        in_ddp = {id(p) for wrapper in wrappers.values() for p in wrapper.module.parameters()}
        rest = [
            p
            for module in task.modules.values()
            for p in module.parameters()
            if p.requires_grad and id(p) not in in_ddp
        ]
        if rest:
            ids = {id(p) for p in rest}
            for optimizer in task.optimizers.values():
                mine = [p for group in optimizer.param_groups for p in group["params"] if id(p) in ids]
                if mine:
                    hooks.append(optimizer.register_step_pre_hook(_averaging_hook(mine)))
        yield
    finally:
        task.wrap_ddp(_plain)
        for hook in hooks:
            hook.remove()


def _wrap(module: nn.Module) -> DistributedDataParallel:
    device = next(module.parameters()).device
    if device.type == "cuda":
        # batch statistics over the global batch, as in one process (SyncBatchNorm needs GPUs);
        # the new layers keep the old parameter and buffer tensors: optimisers and checkpoints are unaffected
        nn.SyncBatchNorm.convert_sync_batchnorm(module)  # converts the layers inside `module` in place
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def _plain(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def _averaging_hook(params: list[nn.Parameter]):
    """An optimiser pre-step hook that replaces the gradients of ``params`` by their mean over the ranks."""

    def average(optimizer: Any, args: Any, kwargs: Any) -> None:
        grads = [
            p.grad for p in params if p.grad is not None
        ]  # the same on every rank: same code, same graph
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])  # one collective call for all of them
        dist.all_reduce(flat)
        flat /= world_size()
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    return average


@contextlib.contextmanager
def plain_modules(task: TrainTask) -> Iterator[None]:
    """Within the block the task calls its plain networks again (e.g. to validate).

    Validation then makes no collective calls, so it cannot deadlock whatever
    it does; each rank validates its own (identical) copy.
    """
    if not is_active():
        yield
        return
    wrappers: dict[int, nn.Module] = {}

    def unwrap(module: nn.Module) -> nn.Module:
        plain = _plain(module)
        wrappers[id(plain)] = module
        return plain

    task.wrap_ddp(unwrap)
    try:
        yield
    finally:
        task.wrap_ddp(lambda module: wrappers.get(id(module), module))


# -- collective helpers for the loop -------------------------------------------------------
def _collective_device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any (so that all stop at the same step)."""
    if not is_active():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average a dict of numbers over the ranks (same keys on every rank)."""
    if not is_active() or not values:
        return values
    keys = sorted(values)  # the same order on every rank
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    mean = {k: float(v) / world_size() for k, v in zip(keys, tensor.tolist(), strict=False)}
    return {k: mean[k] for k in values}


def check_in_sync(modules: dict[str, nn.Module], rtol: float = 1e-5) -> None:
    """Raise if the ranks' copies of the networks have drifted apart.

    DDP keeps them equal as long as every gradient comes from a forward call
    through the wrapper; a task that calls another method of its network in
    ``train_step`` would otherwise train N unrelated copies without a word.
    """
    if not is_active():
        return
    sums = torch.tensor(
        [float(sum(p.detach().double().sum() for p in m.parameters())) for m in modules.values()],
        dtype=torch.float64,
        device=_collective_device(),
    )
    low, high = sums.clone(), sums.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    drift = (high - low).abs() > rtol * (sums.abs() + 1.0)
    if bool(drift.any()):
        names = [name for name, bad in zip(modules, drift.tolist(), strict=False) if bad]
        raise RuntimeError(
            f"DDP copies of {names} differ between ranks: train_step must call the "
            "network itself (its forward), not another of its methods, for gradients to be averaged"
        )
