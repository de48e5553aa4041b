"""bfloat16 where the CPU does it natively: the choice, the arithmetic, and training and predicting in it."""

import json

import numpy as np
import pytest
import torch

from micrometry.errors import InputError
from micrometry.modelfile import ExportedModel
from micrometry.particles.models import PARTICLE_MODELS
from micrometry.particles.models.dense.dense_segmenter import (
    DenseSegmenter,
    build_network,
    dense_segmenter,
    model_payload,
)
from micrometry.particles.models.training import TrainSettings
from micrometry.train.precision import (
    PRECISION_ENV,
    autocast,
    inference_precision,
    native_bf16,
    resolve_precision,
)


def test_auto_is_bfloat16_exactly_where_it_is_native(monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert resolve_precision("auto", "cpu") == ("bf16" if native_bf16("cpu") else "fp32")
    assert resolve_precision("auto", "cuda") == "fp32"  # GPUs: not measured, so not changed
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"


def test_the_environment_overrides_auto_and_bad_names_are_clear_errors(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    assert resolve_precision("auto") == "fp32"
    assert resolve_precision("bf16") == "bf16"  # an explicit choice wins over the variable
    monkeypatch.setenv(PRECISION_ENV, "half")
    with pytest.raises(InputError, match=PRECISION_ENV):
        resolve_precision("auto")
    with pytest.raises(InputError, match="fp16"):
        resolve_precision("fp16")
    with pytest.raises(InputError, match="precision"):
        TrainSettings(precision="fp16")


def test_predictions_are_float32_unless_the_variable_asks(monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert inference_precision("cpu") == "fp32"  # even on a CPU with AMX: bf16 predictions lose AP
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    assert inference_precision() == "bf16"
    monkeypatch.setenv(PRECISION_ENV, "auto")
    assert inference_precision() == ("bf16" if native_bf16("cpu") else "fp32")
    method, net = build_network("center-offset", (8, 16, 32))
    payload = model_payload("center-offset", (8, 16, 32), None, {}, net_diameter=20.0)
    payload["state"] = {"modules": {"net": net.state_dict()}}
    settings, state = PARTICLE_MODELS.create("center-offset").export_checkpoint(payload, "run/best.pt")
    exported = ExportedModel(job="particles", model="center-offset", settings=settings, state=state)
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    assert dense_segmenter(exported).precision == "bf16"
    monkeypatch.delenv(PRECISION_ENV)
    assert dense_segmenter(exported).precision == "fp32"


def test_autocast_rounds_the_convolutions_only_in_bf16():
    conv, x = torch.nn.Conv2d(1, 2, 3), torch.rand(1, 1, 8, 8)
    with autocast("bf16"):
        assert conv(x).dtype == torch.bfloat16
    with autocast("fp32"):
        assert conv(x).dtype == torch.float32


def _segmenter(precision: str) -> DenseSegmenter:
    torch.manual_seed(0)
    method, net = build_network("center-offset", (8, 16, 32))
    return DenseSegmenter(method, net.fused(), scale=1.0, precision=precision)


def test_bf16_maps_are_float32_and_close_to_the_float32_maps():
    image = np.random.default_rng(0).random((64, 96)).astype(np.float32)
    exact, rounded = _segmenter("fp32").predict_maps(image), _segmenter("bf16").predict_maps(image)
    assert rounded.dtype == np.float32 and rounded.shape == exact.shape
    assert not np.array_equal(rounded, exact)  # it did run in bfloat16
    np.testing.assert_allclose(rounded, exact, atol=0.05)


def test_a_bf16_training_step_keeps_float32_weights_and_learns():
    from micrometry.particles.models.dense.dense_task import DenseTrainTask

    settings = TrainSettings(precision="bf16", widths=[8, 16, 32], lr=1e-2, device="cpu")
    task = DenseTrainTask(settings, [], [])
    labels = _two_discs()
    images = torch.from_numpy(np.stack([(labels > 0).astype(np.float32)] * 2))[:, None]
    target = torch.from_numpy(np.stack([task.method.targets(labels)] * 2))
    before = [p.detach().clone() for p in task.net.parameters()]
    losses = [task.train_step((images, target))["loss"] for _ in range(5)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in task.net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, task.net.parameters(), strict=True))


def _two_discs() -> np.ndarray:
    yy, xx = np.mgrid[:64, :64]
    labels = np.zeros((64, 64), np.int32)
    labels[(yy - 20) ** 2 + (xx - 20) ** 2 < 64] = 1
    labels[(yy - 44) ** 2 + (xx - 40) ** 2 < 100] = 2
    return labels


@pytest.mark.slow
def test_a_run_records_the_precision_it_trained_in_and_its_model_does_not_predict_in_it(
    tmp_path, monkeypatch
):
    from micrometry.particles.models import load_particle_model
    from micrometry.particles.models.training import train_model
    from particle_scenes import write_coco_folder

    monkeypatch.delenv(PRECISION_ENV, raising=False)
    data = write_coco_folder(tmp_path / "coco", n_images=3, height=96, width=128, n=6)
    settings = TrainSettings(epochs=1, steps_per_epoch=2, batch_size=2, crop=64, scale=1, precision="bf16")
    train_model(data, tmp_path / "run", settings, threads=1, quantize=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["precision"] == "bf16" and config["settings"]["precision"] == "bf16"
    found = load_particle_model(tmp_path / "run").segment(np.random.default_rng(0).random((96, 128)))
    assert found.info["precision"] == "fp32"  # float32 without an int8 network (tests/test_particles_int8.py)
