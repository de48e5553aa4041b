"""Small helpers the tests share (argument lists, set-ups); no test lives here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def options_argv(**options: object) -> list[str]:
    """Command-line options from keywords, in the order given.

    ``n_train=2`` is ``--n-train 2``; ``resume=True`` is the flag ``--resume``.
    """
    argv: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def synth_particles_argv(out: str | Path, truth: str | Path, *extra: str, **options: object) -> list[str]:
    """The arguments of ``micrometry synth particles OUT --truth TRUTH`` with ``options``, then ``extra``."""
    return ["synth", "particles", str(out), "--truth", str(truth), *options_argv(**options), *extra]


def particles_train_argv(data: str | Path, out: str | Path, **options: object) -> list[str]:
    """The arguments of ``micrometry particles train DATA --out OUT`` with ``options``."""
    return ["particles", "train", str(data), "--out", str(out), *options_argv(**options)]


def depth_predict_argv(
    images: str | Path, model: str | Path, out: str | Path, **options: object
) -> list[str]:
    """The arguments of ``micrometry depth predict IMAGES --model MODEL --out OUT`` with ``options``."""
    where = [str(images), "--model", str(model), "--out", str(out)]
    return ["depth", "predict", *where, *options_argv(**options)]


#: ``depth train`` options of a tiny U-Net that trains in seconds
TINY_UNET_OPTIONS = ["--method", "unet", "--param", "width=4", "--param", "batch_size=16"]


def torchrun_micrometry(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """``micrometry ARGS`` launched by torchrun as two local processes (quiet, one thread each), its output captured."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "MICROMETRY_QUIET": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*launcher, "-m", "micrometry", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
