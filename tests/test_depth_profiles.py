"""Dips that no hole has: the excess variation that measures them and the fill that removes them."""

import numpy as np
import pytest
import torch

from micrometry.depth.profiles import closed_dip_depth, excess_variation, fill_dips


def hole_row(n: int = 48, depth: float = 50.0) -> torch.Tensor:
    """One line across a hole: flat top, a tapered wall down, the floor, a wall back up."""
    x = torch.arange(n, dtype=torch.float32)
    return 100.0 - depth * ((x > 10) & (x < 38)).float() * torch.clamp(
        torch.minimum(x - 10, 38 - x) / 6, 0, 1
    )


def test_walls_of_any_profile_cost_nothing_and_a_dip_costs_twice_its_depth():
    plain = hole_row().expand(72, 48).clone()
    assert float(excess_variation(plain[None])) == pytest.approx(0.0, abs=1e-4)
    steep = hole_row().clone()
    steep[11:16] = 50.0  # a vertical wall instead of a tapered one: still one fall and one rise
    assert float(excess_variation(steep.expand(72, 48)[None])) == pytest.approx(0.0, abs=1e-4)
    dipped = plain.clone()
    dipped[:, 3] -= 4.0  # a 4-nm dip on the flat top, in every row (a column along the dip stays flat)
    expected = 72 * 2 * 4.0 / (72 * 48)  # each row: twice the dip's depth
    assert float(excess_variation(dipped[None])) == pytest.approx(expected, rel=1e-4)


def hole_map(depth: float = 100.0) -> torch.Tensor:
    """A 72x48 crop: an elliptical tapered hole in the middle and a quarter of a neighbour at each corner."""
    y, x = torch.meshgrid(torch.arange(72.0), torch.arange(48.0), indexing="ij")

    def hole(cy, cx):
        r = torch.sqrt(((y - cy) / 14) ** 2 + ((x - cx) / 10) ** 2)
        return torch.clamp((r - 0.4) / 0.6, 0, 1)  # 0 on the floor, 1 from the rim out

    shape = torch.minimum(
        hole(36, 24), torch.stack([hole(cy, cx) for cy in (0, 72) for cx in (0, 48)]).amin(0)
    )
    return 30.0 + depth * shape


def test_dips_on_the_top_are_filled_and_holes_are_kept():
    plain = hole_map()
    dipped = plain.clone()
    dipped[20:24, 6:10] -= 6.0  # a closed dip on the top surface, between the hole and a neighbour
    dipped[0:3, 22:27] -= 6.0  # a dip cut by the crop's edge: it could be a neighbour's hole
    filled = fill_dips(dipped[None], 20.0)[0]
    assert torch.allclose(filled[20:24, 6:10], plain[20:24, 6:10])
    assert torch.equal(filled[0:3, 22:27], dipped[0:3, 22:27])
    rest = torch.ones_like(plain, dtype=torch.bool)
    rest[20:24, 6:10] = False
    assert torch.equal(filled[rest], dipped[rest])  # the holes, their walls and floors: untouched
    # a dip deeper than the threshold is a hole: kept
    assert torch.equal(fill_dips(dipped[None], 5.0)[0][20:24, 6:10], dipped[20:24, 6:10])
    assert torch.equal(fill_dips(dipped[None], 0.0), dipped[None])


def test_fill_leaves_true_hole_maps_unchanged_and_is_turned_off_where_they_have_dips(tmp_path):
    from micrometry.depth.methods import DEPTH_METHODS, DepthData
    from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset

    config = SemSynthConfig(seed=3, n_structures=6, n_sites=2, images_per_site=1, n_test=1)
    write_sem_dataset(tmp_path / "data", tmp_path / "truth", config)
    sim = DepthData.load(tmp_path / "data", ("sim",)).sim.depth.astype(np.float32)
    maps = torch.from_numpy(sim)
    assert len(maps) >= 20 and float(maps.amax() - maps.amin()) > 50
    assert torch.equal(fill_dips(maps, 20.0), maps)
    assert float(closed_dip_depth(maps).amax()) == 0.0

    method = DEPTH_METHODS.create("unet-weak", fill_dips=0.5)
    method.check_fill_dips(sim)
    assert method.cfg.fill_dips == 0.5
    dipped = sim.copy()
    dipped[:, 34:38, 2:5] -= 20.0  # beside the hole, off the edge: a shape some simulators draw
    assert float(closed_dip_depth(torch.from_numpy(dipped)).amin()) > 0.1
    with pytest.warns(UserWarning, match="fill_dips is off"):
        method.check_fill_dips(dipped)
    assert method.cfg.fill_dips == 0.0


def test_noisy_maps_settle_and_never_go_down():
    generator = torch.Generator().manual_seed(0)
    noisy = hole_map().expand(8, 72, 48) + 0.5 * torch.randn(8, 72, 48, generator=generator)
    filled = fill_dips(noisy, 3.0)
    assert (filled >= noisy).all()
    assert float((filled - noisy).mean()) > 0.1  # the noise's pits on the top are filled
    assert torch.equal(filled.amin((1, 2)), noisy.amin((1, 2)))  # each hole's lowest point stays
    floor = hole_map() < 31
    assert float((filled - noisy)[:, floor].mean()) < 1.0  # the floor's pits: no deeper than the noise
    assert float(excess_variation(filled)) < float(excess_variation(noisy))


def test_unet_predicts_with_its_dips_filled():
    from micrometry.depth.methods import DEPTH_METHODS

    torch.manual_seed(0)
    method = DEPTH_METHODS.create("unet", width=4, fill_dips=0.5)
    images = np.random.default_rng(0).integers(0, 255, (6, 72, 48), dtype=np.uint8)
    filled = method.predict(images)
    method.cfg.fill_dips = 0.0
    plain = method.predict(images)
    assert (filled >= plain - 1e-3).all() and (filled > plain + 1e-2).any()  # an untrained net's dips
    assert float(closed_dip_depth(torch.from_numpy(filled)).amax()) < 1e-4
    assert float(closed_dip_depth(torch.from_numpy(plain)).amax()) > 0.01
