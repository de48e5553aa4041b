"""The GAN-based depth methods (cyclegan, lookup) and their parts: networks, NN search, background snap."""

import numpy as np
import pytest
import torch

from micrometry.depth.background import background_levels, snap_background
from micrometry.depth.gan import CycleGan, GanWeights, TinyGenerator, gradient_penalty, PatchCritic
from micrometry.depth.nn_search import ShiftedNeighbourSearch, shift_grid, unit_zscore


# -- networks -------------------------------------------------------------------------------------


def test_generator_keeps_image_shape_and_range():
    x = torch.rand(3, 1, 72, 48) * 2 - 1
    y = TinyGenerator(width=8, n_blocks=1)(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1


def test_gradient_penalty_is_zero_for_unit_gradient_critic():
    class Linear(torch.nn.Module):  # critic(x) = <w, x> with |w| = 1 has gradient norm 1 everywhere
        def __init__(self):
            super().__init__()
            w = torch.randn(1, 1, 72, 48)
            self.w = torch.nn.Parameter(w / w.norm())

        def forward(self, x):
            return (x * self.w).flatten(1).sum(1)

    real, fake = torch.rand(4, 1, 72, 48), torch.rand(4, 1, 72, 48)
    assert gradient_penalty(Linear(), real, fake).item() == pytest.approx(0, abs=1e-8)
    assert gradient_penalty(PatchCritic(8), real, fake).item() > 0


def test_cyclegan_losses_backpropagate_to_their_own_networks():
    gan = CycleGan(width=8, n_blocks=1, critic_width=8)
    a, b = torch.rand(2, 1, 72, 48), torch.rand(2, 1, 72, 48)
    gan.critic_loss(a, b, GanWeights()).backward()
    assert all(p.grad is not None for p in gan.critic_parameters())
    assert all(p.grad is None for p in gan.generator_parameters())
    gan.zero_grad(set_to_none=True)
    loss, parts = gan.generator_loss(a, b, GanWeights())
    loss.backward()
    assert all(p.grad is not None for p in gan.generator_parameters())
    assert parts["fake_b"].shape == b.shape


# -- nearest-neighbour search ---------------------------------------------------------------------


def _random_bank(n=40, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 72, 48)).astype(np.uint8)
    depth = rng.integers(30, 171, size=(n, 72, 48)).astype(np.uint8)
    return images, depth


def test_unit_zscore_gives_cosine_of_zscored_images():
    images = torch.rand(2, 72, 48)
    z = unit_zscore(images).flatten(1)
    a, b = [(x - x.mean()) / x.std() for x in images.flatten(1)]
    assert float(z[0] @ z[1]) == pytest.approx(float(a @ b / a.norm() / b.norm()), abs=1e-5)
    assert float(z[0] @ z[0]) == pytest.approx(1.0, abs=1e-5)


def test_shift_grid_has_25_shifts_with_no_shift_first():
    grid = shift_grid(2)
    assert len(grid) == 25 and len({tuple(s) for s in grid.tolist()}) == 25
    assert grid[0].tolist() == [0, 0]


@pytest.mark.parametrize("shift", [(0, 0), (2, -1), (-2, 2), (1, 0)])
def test_search_finds_a_shifted_bank_image_and_its_shifted_depth(shift):
    images, depth = _random_bank()
    search = ShiftedNeighbourSearch(images, depth, max_shift=2)
    rows = np.array([7, 3, 31])
    # Brightness and contrast change on top of the shift: z-scoring must ignore them.
    queries = 0.5 * np.roll(images[rows].astype(np.float32), shift, axis=(1, 2)) + 40
    matches = search.search(queries, k=3)
    assert matches.index[:, 0].tolist() == rows.tolist()
    assert (matches.shift[:, 0] == np.array(shift)).all()
    assert matches.score[:, 0] == pytest.approx(1.0, abs=1e-4)
    assert (matches.score[:, 1] < 0.5).all()  # random images: the runner-up is far worse
    np.testing.assert_array_equal(search.predict(queries), np.roll(depth[rows], shift, axis=(1, 2)))


def test_search_chunks_give_the_same_answer_as_one_chunk():
    images, depth = _random_bank(30, seed=1)
    queries = _random_bank(17, seed=2)[0]
    whole = ShiftedNeighbourSearch(images, depth).search(queries, k=2)
    tiny = ShiftedNeighbourSearch(images, depth, chunk_bytes=1)  # one query per chunk
    assert tiny._chunk_size() == 1
    chunked = tiny.search(queries, k=2)
    np.testing.assert_array_equal(whole.index, chunked.index)
    np.testing.assert_array_equal(whole.shift, chunked.shift)


def test_top_k_depth_is_the_mean_of_the_matches():
    images, depth = _random_bank(10, seed=3)
    search = ShiftedNeighbourSearch(images, depth)
    matches = search.search(images[:2], k=2)
    expected = np.stack([
        (np.roll(depth[m.index[0]], tuple(m.shift[0]), axis=(0, 1)).astype(np.float32)
         + np.roll(depth[m.index[1]], tuple(m.shift[1]), axis=(0, 1))) / 2
        for m in (type("M", (), {"index": matches.index[i], "shift": matches.shift[i]}) for i in range(2))
    ])
    np.testing.assert_allclose(search.depth_of(matches), expected)


# -- background post-processing -------------------------------------------------------------------


def test_snap_background_sets_near_background_pixels_to_the_level():
    level = 150.0
    pred = np.full((2, 72, 48), 149.4, dtype=np.float32)
    pred[:, 20:50, 10:38] = 60.0  # the hole
    pred[0, 5, 5] = 148.2  # an isolated dip below level-1 inside the flat top: closed over
    pred[1, 0, 0] = 151.0  # above the level: snapped down
    out = snap_background(pred, np.array([level, level]))
    assert out.dtype == np.float32
    assert (out[:, 20:50, 10:38] == 60.0).all()  # the hole is untouched
    flat = np.ones((72, 48), bool)
    flat[20:50, 10:38] = False
    assert (out[:, flat] == level).all()


def test_snap_background_leaves_pixels_well_below_the_level():
    pred = np.full((1, 72, 48), 150.0, dtype=np.float32)
    pred[0, 30:33, 20:23] = 140.0  # a 3x3 dip is not a gap: closing keeps it
    out = snap_background(pred, 150.0)
    assert (out[0, 30:33, 20:23] == 140.0).all()


def test_background_levels_is_the_flat_top_of_each_case():
    depth = np.full((4, 72, 48), 30, dtype=np.uint8)
    depth[:2] = 140
    depth[2:] = 170
    depth[:, 30:40, 20:30] = 30
    assert background_levels(depth, np.array([1, 1, 4, 4])) == {1: 140.0, 4: 170.0}


def test_two_stage_search_finds_shifted_bank_images_among_its_candidates():
    images, depth = _random_bank(60, seed=4)
    search = ShiftedNeighbourSearch(images, depth, candidates=5)
    rows = np.array([0, 59, 22])
    queries = np.roll(images[rows], (-2, 1), axis=(1, 2))
    matches = search.search(queries, k=1)
    assert matches.index[:, 0].tolist() == rows.tolist()
    assert (matches.shift[:, 0] == np.array([-2, 1])).all()
