"""The task protocol: what a trainable method hands to :func:`micrometry.train.fit`.

A task owns its networks and optimisers and knows how to do one step;
:func:`~micrometry.train.fit` owns everything else (epochs, checkpoints,
resume, time budget, data parallelism). This module imports nothing of the
loop, so methods, the loop and the distributed helpers all depend on it and
never on each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

#: What :meth:`TrainTask.wrap_ddp` receives: network in, the network to call in ``train_step`` out.
Wrap = Callable[[nn.Module], nn.Module]


class TrainTask:
    """What a method hands to :func:`~micrometry.train.fit`.

    Subclasses fill ``modules`` and ``optimizers`` (and optionally
    ``schedulers``) in ``__init__`` and implement :meth:`train_batches`,
    :meth:`train_step` and :meth:`validate`; a task whose ``train_step`` calls a
    network through an attribute overrides :meth:`wrap_ddp` for data-parallel
    training.
    """

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterable[Any]:
        """The batches of one epoch; shuffle with ``generator`` (seeded per epoch)."""
        raise NotImplementedError

    def train_step(self, batch: Any) -> dict[str, float]:
        """Forward, backward and optimiser step on one batch; return loss values."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Validation metrics after an epoch (may be empty)."""
        return {}

    def wrap_ddp(self, wrap: Wrap) -> None:
        """Replace each network that ``train_step`` calls by ``wrap(network)``.

        The loop calls this with a function that returns the network's
        ``DistributedDataParallel`` wrapper (gradients are then averaged during
        the backward pass), and again with one that returns the plain network
        (to validate, and after training). A typical task writes
        ``self.net = wrap(self.net)``; ``train_step`` must then only call the
        wrapped network (its forward), never read its attributes.

        The default wraps nothing: the gradients of every network in
        ``modules`` are then averaged just before each optimiser step, which is
        correct for any use of the networks (an ensemble kept in a list, say),
        only without DDP's overlap of communication and backward.
        """

    def end_epoch(self, epoch: int) -> None:
        """Called after each epoch: steps the schedulers by default."""
        for scheduler in getattr(self, "schedulers", {}).values():
            scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in getattr(self, "schedulers", {}).items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, m in self.modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in getattr(self, "schedulers", {}).items():
            s.load_state_dict(state["schedulers"][k])
        self.load_extra_state(state.get("extra", {}))

    def extra_state(self) -> dict[str, Any]:
        """Non-tensor state a method keeps between epochs (e.g. a fitted calibration)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def train(self, mode: bool = True) -> None:
        for m in self.modules.values():
            m.train(mode)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Row indices ``0..n-1`` in a random order (from ``generator``), cut into batches of ``batch_size``."""
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]
