"""Depth methods behind one interface: each trains a few steps on tiny data and predicts maps;
the case classifier, the affine site correction and the hole measurements on known geometry."""

import json

import numpy as np
import pytest

from micrometry.depth.calibration import fit_site_affine
from micrometry.depth.measure import measure_hole
from micrometry.depth.methods import DEPTH_METHODS, DepthData, load_depth_model, train_method
from micrometry.depth.methods.classifier import train_case_classifier
from micrometry.errors import InputError
from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset
from micrometry.synth.sem_geometry import HoleParams, heights, hole_shapes
from micrometry.train import RunDir

# Small networks so that a few steps take well under a second each.
TINY = {
    "ae": {"batch_size": 32},
    "unet": {"width": 4, "batch_size": 16, "ensemble": 2, "tta": 2},
    "unet-weak": {"width": 4, "batch_size": 16, "real_batch_size": 8, "tta": 4},
    "classifier": {"width": 4, "batch_size": 8},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("depthdata")
    write_sem_dataset(
        root / "data",
        root / "truth",
        SemSynthConfig(seed=1, n_structures=6, n_sites=8, images_per_site=3, n_test=5),
    )
    return root / "data"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_method_trains_and_predicts_maps(name, tiny, tmp_path):
    method = DEPTH_METHODS.create(name, **TINY[name])
    data = DepthData.load(tiny, method.uses)
    metrics = train_method(
        method, data, RunDir.for_training(tmp_path / "run"), epochs=2, seed=0, device="cpu"
    )
    assert len(metrics["history"]) == 2 and metrics["history"][0]["steps"] > 0
    loaded = load_depth_model(tmp_path / "run", device="cpu")
    assert type(loaded) is type(method) and loaded.config() == method.config()
    images = data.real.images[:7] if data.real is not None else data.sim.sem[:7, 0]
    pred = loaded.predict(images)
    assert pred.shape == (7, 72, 48) and pred.dtype == np.float32 and np.isfinite(pred).all()
    # the reloaded model predicts what the trained one does
    np.testing.assert_allclose(pred, method.predict(images), atol=1e-3)


def test_registry_lists_core_methods_and_rejects_unknown_parameters():
    assert {"ae", "unet", "unet-weak", "classifier"} <= set(DEPTH_METHODS.list())  # imports the built-ins
    with pytest.raises(InputError, match="no parameter"):
        DEPTH_METHODS.create("unet", depth_of_field=3)
    with pytest.raises(InputError, match="unknown depth method"):
        DEPTH_METHODS.create("nope")


@pytest.mark.slow
def test_case_classifier_is_reusable(tiny, tmp_path):
    data = DepthData.load(tiny, ("real",))
    classifier, accuracy = train_case_classifier(
        data.real, RunDir.for_training(tmp_path / "c"), epochs=2, width=4
    )
    # the accuracy returned is that of the best epoch the run folder recorded (held-out sites exist: not NaN)
    history = json.loads((tmp_path / "c" / "metrics.json").read_text())["history"]
    assert accuracy == max(h["val_acc"] for h in history)
    cases = classifier.predict_case(data.real.images)
    assert cases.shape == (len(data.real.images),) and set(cases.tolist()) <= {1, 2, 3, 4}
    assert classifier.predict_proba(data.real.images[:3]).sum(axis=1) == pytest.approx(np.ones(3), abs=1e-5)


def test_site_affine_recovers_a_known_map():
    rng = np.random.default_rng(0)
    site = np.repeat(np.arange(6), 5)
    true = np.repeat(rng.uniform(105, 142, 6), 5)
    pred = (true - 4.0) / 1.1 + rng.normal(scale=0.3, size=true.size)  # biased and compressed
    a, b = fit_site_affine(pred, site, true)
    site_means = np.array([pred[site == s].mean() for s in range(6)])
    assert np.abs(a * site_means + b - true[::5]).max() < 0.5
    # two sites: only an offset
    assert fit_site_affine(pred[:10], site[:10], true[:10])[0] == 1.0


def _hole(cx=24.0, cy=36.0, ax=14.0, ay=20.0, taper=0.6, depth=120.0):
    params = HoleParams(
        family=np.array([80]),
        cx=np.array([cx]),
        cy=np.array([cy]),
        ax=np.array([ax]),
        ay=np.array([ay]),
        taper=np.array([taper]),
        rounding=np.array([0.0]),
        rough_coef=np.zeros((1, 6, 2)),
        neighbours=np.array([False]),
        neighbour_offsets=np.zeros((1, 4, 2)),
    )
    return heights(hole_shapes(params), np.array([depth]))[0]


@pytest.mark.parametrize("ax,ay,taper,depth", [(14.0, 20.0, 0.6, 120.0), (11.0, 17.0, 0.5, 137.0)])
def test_measure_recovers_known_geometry(ax, ay, taper, depth):
    nm = 2.0
    m = measure_hole(_hole(ax=ax, ay=ay, taper=taper, depth=depth), nm_per_px=nm)
    assert m["depth_nm"] == pytest.approx(depth, abs=0.01)
    assert m["top_level_nm"] == pytest.approx(30 + depth, abs=0.01) and m["bottom_level_nm"] == pytest.approx(
        30, abs=0.01
    )
    # a linear wall from radius taper*a (floor) to a (rim): the width at fraction f of the depth
    width = lambda a, f: 2 * a * (taper + f * (1 - taper)) * nm  # noqa: E731
    assert m["top_cd_x_nm"] == pytest.approx(width(ax, 0.9), abs=0.5 * nm)
    assert m["top_cd_y_nm"] == pytest.approx(width(ay, 0.9), abs=0.5 * nm)
    assert m["bottom_cd_x_nm"] == pytest.approx(width(ax, 0.1), abs=0.5 * nm)
    assert m["bottom_cd_y_nm"] == pytest.approx(width(ay, 0.1), abs=0.5 * nm)
    angle_x = np.degrees(np.arctan(depth / (ax * (1 - taper) * nm)))
    assert m["sidewall_angle_x_deg"] == pytest.approx(angle_x, abs=1.0)


def test_measure_flat_map_has_no_hole():
    m = measure_hole(np.full((72, 48), 150.0))
    assert m["depth_nm"] == 0 and np.isnan(m["top_cd_x_nm"])


def test_predict_rejects_wrong_shapes(tiny, tmp_path):
    method = DEPTH_METHODS.create("unet", width=4)
    with pytest.raises(InputError, match="72, 48"):
        method.predict(np.zeros((2, 64, 64), np.uint8))
    assert method.predict(np.zeros((1, 72, 48), np.uint8)).shape == (1, 72, 48)


def test_inference_copy_keeps_the_outputs():
    import torch

    from micrometry.depth.nets import HoleUNet, fused_for_inference

    torch.manual_seed(0)
    net = HoleUNet(8, 2)
    net.train()
    with torch.no_grad():
        net(torch.rand(32, 1, 72, 48) * 0.5)  # BatchNorm statistics other than the initial ones
    net.eval()
    x = torch.rand(5, 1, 72, 48)
    fused = fused_for_inference(net)
    with torch.no_grad():
        (shape, depth), (shape_f, depth_f) = net.forward_parts(x), fused.forward_parts(x)
    assert torch.allclose(shape, shape_f, atol=1e-5) and torch.allclose(depth, depth_f, atol=1e-3)
    assert fused.encoder.enc1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())


@pytest.mark.parametrize("tta", [1, 2, 4])
def test_flip_tta_makes_a_mirrored_image_predict_the_mirrored_map(tta):
    images = np.random.default_rng(0).integers(0, 256, (3, 72, 48), dtype=np.uint8)
    method = DEPTH_METHODS.create("unet-weak", tta=tta)  # untrained: nothing in its weights is symmetric
    pred = method.predict(images)
    for axis, symmetric in ((2, tta >= 2), (1, tta == 4)):  # left-right, then up-down
        mirrored = method.predict(np.ascontiguousarray(np.flip(images, axis)))
        difference = np.abs(mirrored - np.flip(pred, axis)).max()
        assert (difference < 1e-3) if symmetric else (difference > 1e-2)
    assert DEPTH_METHODS.create("unet-weak").cfg.tta == 4  # the default averages all four mirror images


@pytest.mark.parametrize("statistics", ["real", "simulated"])
def test_depth_head_normalises_real_images_by_their_own_statistics(statistics, tiny, tmp_path):
    import torch

    method = DEPTH_METHODS.create("unet-weak", **TINY["unet-weak"], depth_statistics=statistics)
    data = DepthData.load(tiny, method.uses)
    train_method(method, data, RunDir.for_training(tmp_path / "run"), epochs=1, seed=0, device="cpu")
    net = next(iter(method.modules.values())).eval()
    with torch.no_grad():
        pooled = net.forward_features(torch.from_numpy(data.real.images / 255.0).float().unsqueeze(1))[2]
    matches = torch.allclose(net.depth_head[0].running_mean, pooled.mean(0), atol=1e-4)
    assert matches == (statistics == "real")  # "simulated" keeps the simulation's running statistics
    with pytest.raises(InputError, match="depth_statistics"):
        DEPTH_METHODS.create("unet-weak", depth_statistics="test")


def test_an_epochs_override_is_the_schedule_the_run_records(tiny, tmp_path):
    from micrometry.train import load_checkpoint

    method = DEPTH_METHODS.create("unet", width=4, batch_size=16)  # 12 epochs by default
    data = DepthData.load(tiny, method.uses)
    run = RunDir.for_training(tmp_path / "run")
    train_method(method, data, run, epochs=2, seed=0, device="cpu")
    assert run.read_config()["method_config"]["epochs"] == 2
    schedule = load_checkpoint(run.best_checkpoint())["state"]["schedulers"]["lr"]
    assert schedule["T_max"] == 2 and schedule["_last_lr"][0] < 1e-9  # annealed to zero by the last epoch


@pytest.mark.slow
def test_ensemble_members_train_as_independent_runs(tiny, tmp_path):
    """Each member has its own batches, augmentations and renderer; member 0 is the one-network run."""
    import torch

    cfg = {**TINY["unet-weak"], "render_epochs": 1.0}
    data = DepthData.load(tiny, ("sim", "real"))
    pair = DEPTH_METHODS.create("unet-weak", **cfg, ensemble=2)
    single = DEPTH_METHODS.create("unet-weak", **cfg)
    for method, name in ((pair, "pair"), (single, "single")):
        train_method(method, data, RunDir.for_training(tmp_path / name), epochs=1, seed=3, device="cpu")

    task = pair.build_task(data, torch.device("cpu"), seed=3)
    steps = task.train_batches(0, torch.Generator().manual_seed(7))
    assert all(len(step) == 2 for step in steps)
    first, second = (torch.cat([step[k][0] for step in steps]) for k in (0, 1))
    assert sorted(first.tolist()) == sorted(second.tolist()) and not torch.equal(first, second)
    assert task.renderers[0] is not task.renderers[1]

    weights = {name: m.modules["net0"].state_dict() for name, m in (("pair", pair), ("single", single))}
    for key, value in weights["single"].items():
        torch.testing.assert_close(weights["pair"][key], value, msg=key)
    other = pair.modules["net1"].state_dict()
    assert any(not torch.equal(other[k], v) for k, v in weights["pair"].items() if v.is_floating_point())
