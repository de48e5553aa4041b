"""The depth model shipped with micrometry, so that prediction works without training.

It is an ordinary run folder written by ``micrometry depth train`` on the
project's synthetic data (see the README for the exact command), stored in the
package's ``assets/depth_default``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from micrometry.errors import CheckpointError


def shipped_run() -> Path:
    """Path of the shipped run folder (it may be missing in a development checkout)."""
    return Path(str(resources.files("micrometry").joinpath("assets", "depth_default")))


def load_default_method(device: str = "auto"):
    """Load the shipped depth model.

    Raises
    ------
    CheckpointError
        The package was installed without it.
    """
    from micrometry.depth.methods import load_method

    run = shipped_run()
    if not (run / "config.json").is_file():
        raise CheckpointError("micrometry was installed without its shipped depth model; pass a run folder", run)
    return load_method(run, device=device)
