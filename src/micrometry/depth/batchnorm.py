"""BatchNorm statistics across two domains (simulated and real SEM images).

A network trained on simulation keeps the simulation's running statistics;
:func:`frozen_batchnorm_statistics` lets real images pass through it in training
mode without changing them, :func:`running_batchnorm_statistics` lets them pass
normalised as at inference, :func:`recompute_batchnorm` swaps in the real
domain's statistics (AdaBN), :func:`set_batchnorm_statistics` sets one layer's from features.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def batchnorm_layers(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def frozen_batchnorm_statistics(net: nn.Module):
    """BatchNorm layers normalise with batch statistics but leave their running averages alone."""
    norms = batchnorm_layers(net)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta, strict=False):
            m.momentum = momentum


@contextlib.contextmanager
def running_batchnorm_statistics(net: nn.Module):
    """BatchNorm layers normalise with their running statistics (as at inference) and leave them
    alone, while gradients still flow: a second domain trains under the normalisation it will be
    predicted with."""
    norms = [m for m in batchnorm_layers(net) if m.training]
    for m in norms:
        m.train(False)
    try:
        yield
    finally:
        for m in norms:
            m.train(True)


@torch.no_grad()
def recompute_batchnorm(net: nn.Module, images: torch.Tensor, batch_size: int = 256) -> None:
    """Replace BatchNorm running statistics by those of ``images`` (AdaBN: adapt to the real domain).

    ``net`` must have a ``forward_parts`` method (:class:`~micrometry.depth.nets.HoleUNet`).
    """
    norms = batchnorm_layers(net)
    if not norms or len(images) < 2:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes below
    net.train(True)
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        if len(chunk) > 1:
            net.forward_parts(chunk)
    net.train(False)
    for m, momentum in zip(norms, momenta, strict=False):
        m.momentum = momentum


@torch.no_grad()
def set_batchnorm_statistics(norm: nn.modules.batchnorm._BatchNorm, features: torch.Tensor) -> None:
    """Set the running statistics of the 1-d BatchNorm ``norm`` to those of ``features`` ``(N, C)``:
    the layer then normalises such inputs as a training batch of them was normalised."""
    if len(features) < 2:
        return
    norm.running_mean.copy_(features.mean(0))
    norm.running_var.copy_(features.var(0))  # unbiased, as BatchNorm keeps it
