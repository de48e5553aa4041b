"""The depth model shipped with micrometry, so that prediction works without training.

It is an exported model folder (``micrometry export`` of a run written by
``micrometry depth train`` on the project's synthetic data; see the README for
the exact commands), stored in the package's ``assets/models/depth-default``.
``--model shipped`` (or no ``--model``) names it.
"""

from __future__ import annotations

from pathlib import Path

from micrometry.depth.methods.base import SHIPPED, load_method, shipped_model_dir


def shipped_model() -> Path:
    """Path of the shipped exported model folder.

    Raises
    ------
    CheckpointError
        The package was installed without it.
    """
    return shipped_model_dir()


def load_default_method(device: str = "auto"):
    """Load the shipped depth model."""
    return load_method(SHIPPED, device=device)
