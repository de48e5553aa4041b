"""The shape augmentation of simulated pairs: each hole warped about its centre, image and height
map alike, to opening sizes and radial profiles the simulation's geometry prior does not draw."""

import dataclasses

import numpy as np
import pytest
import torch

from micrometry.depth.augment import hole_frames, radial_warp_grid, random_shape_warp
from micrometry.depth.measure import measure_hole
from micrometry.errors import InputError
from micrometry.synth.sem_geometry import GeometryConfig, HoleParams, heights, hole_shapes, sample_holes
from test_depth_frames import SHIFTED_CROPS  # bench/depth.py --variant geometry's real holes


def _holes(cx, cy, ax, ay, taper, depth=120.0, neighbours=False):
    n = len(cx)
    signs = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=float)
    params = HoleParams(
        family=np.full(n, 80),
        cx=np.asarray(cx, float),
        cy=np.asarray(cy, float),
        ax=np.asarray(ax, float),
        ay=np.asarray(ay, float),
        taper=np.asarray(taper, float),
        rounding=np.zeros(n),
        rough_coef=np.zeros((n, 6, 2)),
        neighbours=np.full(n, neighbours),
        neighbour_offsets=np.repeat(signs[None] * [24.0, 36.0], n, axis=0),
    )
    return torch.from_numpy(heights(hole_shapes(params), depth)[:, None].astype(np.float32))


def _warp(maps, frames, scale, slope):
    grid = radial_warp_grid(frames, torch.tensor(scale), torch.tensor(slope), (72, 48))
    return torch.nn.functional.grid_sample(
        maps, grid, mode="bilinear", padding_mode="border", align_corners=True
    )


def test_hole_frames_find_the_opening_of_known_holes_beside_their_neighbours():
    cx, cy, ax, ay = [22.0, 25.3, 23.5], [35.5, 33.0, 38.2], [14.0, 11.0, 16.5], [20.0, 16.5, 22.0]
    frames = hole_frames(_holes(cx, cy, ax, ay, [0.6, 0.4, 0.7], neighbours=True)).numpy()
    np.testing.assert_allclose(frames[:, 0], cx, atol=0.3)
    np.testing.assert_allclose(frames[:, 1], cy, atol=0.3)
    # the 5 % level lies just inside the rim: the opening read there is at most a few % small
    np.testing.assert_allclose(frames[:, 2], ax, rtol=0.05)
    np.testing.assert_allclose(frames[:, 3], ay, rtol=0.05)


@pytest.mark.parametrize("scale, slope", [((0.85, 0.85), 3.0), ((1.1, 0.95), 0.5), ((1.0, 1.0), 1.0)])
def test_warp_scales_the_opening_and_moves_the_floor_as_the_profile_slope_says(scale, slope):
    ax, ay, taper, depth = 14.0, 20.0, 0.6, 120.0
    hole = _holes([23.5], [35.5], [ax], [ay], [taper], depth)
    frames = torch.tensor([[23.5, 35.5, ax, ay]])  # the true opening: only the warp is under test here
    warped = _warp(hole, frames, [scale], [slope])[0, 0].numpy().astype(np.float64)
    m = measure_hole(warped, nm_per_px=1.0)
    assert m["depth_nm"] == pytest.approx(depth, abs=0.5)  # a warp moves heights, it makes none
    # a linear wall from taper*a to a: at fraction f of the depth the radius is taper + f (1 - taper);
    # in the output that radius r is reached at F^-1(r) = r / (k - (k - 1) r), on the scaled opening
    radius = lambda f: taper + f * (1 - taper)  # noqa: E731
    width = lambda a, s, f: 2 * a * s * radius(f) / (slope - (slope - 1) * radius(f))  # noqa: E731
    for axis, a, s in (("x", ax, scale[0]), ("y", ay, scale[1])):
        assert m[f"top_cd_{axis}_nm"] == pytest.approx(width(a, s, 0.9), abs=1.0)
        assert m[f"bottom_cd_{axis}_nm"] == pytest.approx(width(a, s, 0.1), abs=1.0)


def test_warp_leaves_the_top_surface_and_neighbours_beyond_its_outer_radius():
    hole = _holes([23.5], [35.5], [13.0], [18.0], [0.5], neighbours=True)
    frames = hole_frames(hole)
    warped = _warp(hole, frames, [(0.8, 0.85)], [3.0])
    yy, xx = np.mgrid[0:72, 0:48]
    r = np.hypot((xx - 23.5) / (0.8 * 13.0), (yy - 35.5) / (0.85 * 18.0))
    far = r > 1.65  # the identity from 1.6 output radii on (frames are estimates: a little margin)
    np.testing.assert_allclose(warped[0, 0].numpy()[far], hole[0, 0].numpy()[far], atol=1e-3)
    assert (warped != hole).any()


def test_random_shape_warp_moves_image_and_map_alike_and_only_the_chosen_share():
    maps = _holes(
        [23.5] * 8, [35.5] * 8, np.linspace(11, 16, 8), np.linspace(16, 22, 8), np.linspace(0.45, 0.75, 8)
    )
    images = maps / 200.0  # any image that is a pixelwise linear function of the map
    frames = hole_frames(maps)
    g = torch.Generator().manual_seed(0)
    x, y, warped = random_shape_warp(images, maps, frames, g, 1.0, 0.25, 1.5)
    assert warped.all()
    torch.testing.assert_close(x, y / 200.0)
    assert all((y[i] != maps[i]).any() for i in range(8))
    x0, y0, none = random_shape_warp(images, maps, frames, g, 0.0, 0.25, 1.5)
    assert not none.any()
    assert x0 is images and y0 is maps
    counts = [
        int(((random_shape_warp(images, maps, frames, g, 0.5, 0.25, 1.5)[1] != maps).flatten(1).any(1)).sum())
        for _ in range(40)
    ]
    assert 2.5 < np.mean(counts) < 5.5  # about half of the 8


def test_warps_reach_holes_outside_the_simulation_prior():
    """The bench's shifted real holes (bench/depth.py, ``--variant geometry``: smaller, more tapered,
    rounder bottoms) have bottom-to-top CD ratios no simulated hole has; warped ones do."""
    rng = np.random.default_rng(0)
    sim = _from_config(GeometryConfig(), 40, rng)
    shifted = _from_config(
        GeometryConfig(
            semi_axis_x=(11.8, 0.45),
            semi_axis_y=(16.8, 0.65),
            taper=(0.28, 0.40),
            bottom_rounding=(0.14, 0.24),
        ),
        40,
        rng,
    )
    g = torch.Generator().manual_seed(1)
    warped = torch.cat(
        [random_shape_warp(sim, sim, hole_frames(sim), g, 1.0, 0.25, 1.5)[1] for _ in range(2)]
    )
    cds = lambda maps: np.array(  # noqa: E731
        [
            [measure_hole(m[0].numpy().astype(np.float64))[k] for k in ("top_cd_x_nm", "bottom_cd_x_nm")]
            for m in maps
        ]
    )
    ratio = lambda maps: cds(maps)[:, 1] / cds(maps)[:, 0]  # noqa: E731
    target = np.percentile(ratio(shifted), 90)
    assert target < ratio(sim).min()  # outside the simulation's prior ...
    assert np.mean(ratio(warped) < target) > 0.05  # ... but not outside the warped holes'


def _from_config(config, n, rng):
    params = sample_holes(n, rng, config)
    return torch.from_numpy(
        heights(hole_shapes(params), rng.uniform(110, 140, n))[:, None].astype(np.float32)
    )


@pytest.mark.slow
def test_unet_weak_trains_with_the_shape_augmentation(tmp_path):
    from micrometry.depth.methods import DEPTH_METHODS, DepthData, load_depth_model, train_method
    from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset
    from micrometry.train import RunDir

    write_sem_dataset(
        tmp_path / "data",
        tmp_path / "truth",
        SemSynthConfig(seed=2, n_structures=4, n_sites=8, images_per_site=2, n_test=2),
    )
    method = DEPTH_METHODS.create("unet-weak", width=4, batch_size=16, real_batch_size=8, shape_aug=1.0)
    data = DepthData.load(tmp_path / "data", method.uses)
    metrics = train_method(
        method, data, RunDir.for_training(tmp_path / "run"), epochs=1, seed=0, device="cpu"
    )
    assert metrics["history"][0]["steps"] > 0
    loaded = load_depth_model(tmp_path / "run", device="cpu")
    assert loaded.cfg.shape_aug == 1.0 and np.isfinite(loaded.predict(data.real.images[:3])).all()
    with pytest.raises(InputError, match="shape_aug"):
        DEPTH_METHODS.create("unet-weak", shape_aug=1.5)  # a share of the pairs


def test_median_centre_keeps_the_top_surface_at_zero_however_large_the_hole():
    """Smaller, brighter-walled holes raise an image's mean above its flat top surface: centred on
    the mean the top then reads as darker than any training image's; on the median it stays put."""
    from micrometry.depth.nets import HoleUNet

    yy, xx = np.mgrid[0:72, 0:48]
    images = []
    for a, wall in ((14.0, 0.75), (10.0, 0.95)):  # a large hole; a small one with a broad bright wall
        r = np.hypot((xx - 23.5) / a, (yy - 35.5) / (a * 1.4))
        image = np.where(r < 1, 0.15, 0.45) + np.where((r > 0.6) & (r < 1.0), wall - 0.15, 0.0)
        images.append(image)
    x = torch.tensor(np.stack(images)[:, None], dtype=torch.float32)
    seen = {}
    for centre in ("mean", "median"):
        net = HoleUNet(width=4, centre=centre).eval()
        captured = []
        hook = net.encoder.register_forward_pre_hook(lambda _, inp, out=captured: out.append(inp[0]))
        with torch.no_grad():
            net(x)
        hook.remove()
        seen[centre] = [float(captured[0][i, 0, 0, 0]) for i in range(2)]  # a top-surface corner pixel
    assert min(abs(v) for v in seen["mean"]) > 0.1  # the mean lies off the top surface
    assert seen["median"] == pytest.approx([0.0, 0.0], abs=1e-6)
    with pytest.raises(InputError, match="centre"):
        from micrometry.depth.methods import DEPTH_METHODS

        DEPTH_METHODS.create("unet-weak", centre="mode")


def _gap(real_config, n_real=64):
    from micrometry.depth.methods.unet import geometry_gap
    from micrometry.synth.sem_dataset import SemSynthConfig, simulate_pairs, simulate_real

    _, _, sem = simulate_pairs(SemSynthConfig(n_structures=40), np.random.default_rng(0))
    real = simulate_real(real_config, n_sites=8, per_site=n_real // 8, rng=np.random.default_rng(1))
    sim = torch.from_numpy(sem.reshape(-1, 1, 72, 48) / 255.0)
    return geometry_gap(sim, torch.from_numpy(real.images[:, None] / 255.0))


def test_real_holes_outside_the_simulation_prior_are_told_by_the_top_surface_level():
    from micrometry.synth.sem_dataset import SemSynthConfig

    inside = _gap(SemSynthConfig())
    assert inside["top_level_outside"] < 0.2
    shifted = _gap(SHIFTED_CROPS)
    assert shifted["top_level_outside"] > 0.9
    assert shifted["top_level_real"] < shifted["top_level_sim_low"] < inside["top_level_real"]


def _task(tmp_path, real_geometry, **cfg):
    from micrometry.depth.methods import DEPTH_METHODS, DepthData
    from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset

    config = SemSynthConfig(seed=2, n_structures=12, n_sites=8, images_per_site=4, n_test=1)
    if real_geometry is not None:
        config = dataclasses.replace(config, real_geometry=real_geometry)
    write_sem_dataset(tmp_path / "data", tmp_path / "truth", config)
    method = DEPTH_METHODS.create("unet-weak", width=4, render_weight=0.0, **cfg)
    return method.build_task(DepthData.load(tmp_path / "data", method.uses), torch.device("cpu"), 0)


def test_unet_weak_warps_the_simulated_holes_when_the_real_ones_lie_outside_their_prior(tmp_path):
    with pytest.warns(UserWarning, match="training with shape warps"):
        task = _task(tmp_path / "shifted", SHIFTED_CROPS.real_geometry)
    assert (task.shape_aug, task.shape_scale) == (0.5, 0.0) and task.frames is not None
    assert task.imaging_measured["top_level_outside"] > 0.5
    # real holes like the simulated ones: no warp; a warp asked for is kept; "fixed" never warps
    plain = _task(tmp_path / "plain", None)
    assert plain.shape_aug == 0 and plain.frames is None and plain.imaging_measured["top_level_outside"] < 0.5
    asked = _task(tmp_path / "asked", SHIFTED_CROPS.real_geometry, shape_aug=0.3)
    assert (asked.shape_aug, asked.shape_scale) == (0.3, 0.25)
    fixed = _task(tmp_path / "fixed", SHIFTED_CROPS.real_geometry, geometry="fixed")
    assert fixed.shape_aug == 0 and fixed.frames is None and "top_level_outside" not in fixed.imaging_measured
