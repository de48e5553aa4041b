"""Mask R-CNN trains data-parallel through the shared loop (torchrun, two CPU processes, gloo)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import particles_train_argv, torchrun_failure, torchrun_micrometry
from particle_scenes import make_scene, write_coco_folder


@pytest.mark.slow
def test_torchrun_maskrcnn_train_ddp(tmp_path):
    from micrometry.particles.models import load_particle_model

    data = write_coco_folder(tmp_path / "coco", n_images=2, height=96, width=128, n=8)
    options = {
        "model": "maskrcnn",
        "epochs": 2,
        "steps_per_epoch": 2,
        "batch_size": 4,
        "crop": 64,
        "scale": 1,
    }
    done = torchrun_micrometry(
        *particles_train_argv(data, tmp_path / "run", **options, ddp=True), timeout=600
    )
    assert done.returncode == 0, torchrun_failure(done)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in metrics["history"])
    found = load_particle_model(tmp_path / "run").segment(make_scene(np.random.default_rng(2), 96, 128)[0])
    assert found.labels.shape == (96, 128)
