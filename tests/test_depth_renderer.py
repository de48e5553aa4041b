"""The renderer learned from simulated pairs and the analysis-by-synthesis loss on real images."""

import numpy as np
import pytest
import torch

from micrometry.depth.renderer import RENDERERS, LocalSemRenderer, fit_renderer, render_loss
from micrometry.synth.sem_geometry import GeometryConfig, heights, hole_shapes, sample_holes
from micrometry.synth.sem_physics import SemPhysics, blur, secondary_yield


def _pairs(n, seed, geometry=None):
    """Height maps (nm) and their noiseless simulator renders in [0, 1], ``(n, 1, 72, 48)`` each."""
    rng = np.random.default_rng(seed)
    maps = heights(hole_shapes(sample_holes(n, rng, geometry or GeometryConfig())), rng.uniform(110, 140, n))
    physics = SemPhysics()
    signal = blur(secondary_yield(maps.astype(np.float32), physics), physics.psf_sigma)
    images = np.clip(physics.offset + physics.gain * signal, 0, 255) / 255.0
    as_tensor = lambda a: torch.from_numpy(a[:, None].astype(np.float32))  # noqa: E731
    return as_tensor(maps), as_tensor(images)


@pytest.fixture(scope="module", params=sorted(RENDERERS))
def renderer(request):
    torch.manual_seed(0)
    maps, images = _pairs(96, seed=0)
    generator = torch.Generator().manual_seed(0)
    return fit_renderer(images, maps, steps=250, generator=generator, batch_size=16, kind=request.param)


def test_the_local_renderer_sees_only_a_pixels_neighbourhood():
    renderer = LocalSemRenderer()
    maps, _ = _pairs(2, seed=4)
    changed = maps.clone()
    changed[:, :, 40:, :] += 50.0  # rows 40 and below
    with torch.no_grad():
        before, after = renderer(maps), renderer(changed)
    assert torch.equal(before[:, :, :24], after[:, :, :24])  # 16 rows away: untouched
    assert not torch.equal(before[:, :, 36:40], after[:, :, 36:40])  # next to the change: not


def test_the_renderer_learns_the_simulator_on_holes_it_never_saw(renderer):
    maps, images = _pairs(24, seed=1)
    with torch.no_grad():
        error = (renderer(maps) - images).pow(2).mean().sqrt().item()
    assert error < 0.5 * images.std().item()  # most of the image's variation is reproduced
    assert not any(p.requires_grad for p in renderer.parameters())  # returned frozen


def test_render_loss_prefers_the_true_shape_and_ignores_gain_and_offset(renderer):
    maps, images = _pairs(16, seed=2)
    true_loss = render_loss(renderer, maps, images).item()
    # the tool's detector: another gain and offset change nothing
    assert render_loss(renderer, maps, 0.7 * images + 0.1).item() == pytest.approx(
        true_loss, rel=0.05, abs=1e-3
    )
    dipped = maps.clone()
    dipped[:, :, :12, :] -= 40.0  # a dip of 40 nm into the flat top the image does not show
    assert render_loss(renderer, dipped, images).item() > true_loss + 0.05


def test_render_loss_passes_gradients_to_the_heights(renderer):
    maps, images = _pairs(4, seed=3)
    maps.requires_grad_(True)
    render_loss(renderer, maps, images).backward()
    assert maps.grad is not None and maps.grad.abs().sum() > 0


@pytest.mark.slow
def test_unet_weak_trains_with_the_render_loss(tmp_path):
    from micrometry.depth.methods import DEPTH_METHODS, DepthData, load_depth_model, train_method
    from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset
    from micrometry.train import RunDir

    write_sem_dataset(
        tmp_path / "data",
        tmp_path / "truth",
        SemSynthConfig(seed=2, n_structures=4, n_sites=8, images_per_site=2, n_test=2),
    )
    method = DEPTH_METHODS.create(
        "unet-weak", width=4, batch_size=16, real_batch_size=8, render_weight=1.0, render_epochs=2
    )
    data = DepthData.load(tmp_path / "data", method.uses)
    metrics = train_method(
        method, data, RunDir.for_training(tmp_path / "run"), epochs=1, seed=0, device="cpu"
    )
    assert metrics["history"][0]["steps"] > 0 and "render" in metrics["history"][0]
    loaded = load_depth_model(tmp_path / "run", device="cpu")
    assert loaded.cfg.render_weight == 1.0 and np.isfinite(loaded.predict(data.real.images[:3])).all()


def test_models_saved_before_the_new_defaults_load_with_the_values_they_were_trained_with():
    from micrometry.depth.methods import DEPTH_METHODS, load_depth_model
    from micrometry.depth.methods.base import method_from_export
    from micrometry.modelfile import ExportedModel

    new = DEPTH_METHODS.create("unet-weak", width=4)
    assert (new.cfg.centre, new.cfg.render_weight, new.cfg.fill_dips) == ("median", 1.0, 0.5)  # issue 27
    saved = {k: v for k, v in new.config().items() if k not in ("centre", "render_weight", "fill_dips")}
    old = ExportedModel(
        job="depth", model="unet-weak", settings={"method_config": saved}, state=new.state_dict()
    )
    loaded = method_from_export(old, device="cpu")
    assert (loaded.cfg.centre, loaded.cfg.render_weight, loaded.cfg.fill_dips) == ("mean", 0.0, 0.0)
    shipped = load_depth_model("shipped", device="cpu").cfg  # trained before the changes
    assert (shipped.centre, shipped.fill_dips) == ("mean", 0.0)
    again = method_from_export(
        ExportedModel(
            job="depth", model="unet-weak", settings={"method_config": new.config()}, state=new.state_dict()
        ),
        device="cpu",
    )
    assert again.cfg.centre == "median"
