"""Mask R-CNN trains data-parallel through the shared loop (torchrun, two CPU processes, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from particle_scenes import make_scene, write_coco_folder


@pytest.mark.slow
def test_torchrun_maskrcnn_train_ddp(tmp_path):
    from micrometry.particles.models import load_particle_model

    data = write_coco_folder(tmp_path / "coco", n_images=2, height=96, width=128, n=8)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "micrometry",
        "particles",
        "train",
        str(data),
        "--model",
        "maskrcnn",
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "2",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "4",
        "--crop",
        "64",
        "--scale",
        "1",
        "--ddp",
    ]
    env = {**os.environ, "MICROMETRY_QUIET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in metrics["history"])
    found = load_particle_model(tmp_path / "run").segment(make_scene(np.random.default_rng(2), 96, 128)[0])
    assert found.labels.shape == (96, 128)
