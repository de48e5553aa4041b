"""The GAN-based depth methods (cyclegan, lookup) and their parts: networks, NN search, background snap."""

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from micrometry.cli import run
from micrometry.depth.background import background_levels, snap_background
from micrometry.depth.gan import CycleGan, GanWeights, PatchCritic, TinyGenerator, gradient_penalty
from micrometry.depth.methods import DEPTH_METHODS, DepthData, load_depth_model, train_method
from micrometry.depth.methods.per_case_gan import case_batches, classify_cases, trainable_cases
from micrometry.depth.nn_search import ShiftedNeighbourSearch, shift_grid, unit_zscore
from micrometry.errors import DatasetError
from micrometry.io.image import read_gray_u8
from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset
from micrometry.train import RunDir

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
    expected = np.stack(
        [
            (
                np.roll(depth[m.index[0]], tuple(m.shift[0]), axis=(0, 1)).astype(np.float32)
                + np.roll(depth[m.index[1]], tuple(m.shift[1]), axis=(0, 1))
            )
            / 2
            for m in (type("M", (), {"index": matches.index[i], "shift": matches.shift[i]}) for i in range(2))
        ]
    )
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
    assert search.candidates == 5 and ShiftedNeighbourSearch(images, depth, candidates=8).candidates is None
    rows = np.array([0, 59, 22])
    queries = np.roll(images[rows], (-2, 1), axis=(1, 2))
    matches = search.search(queries, k=1)
    assert matches.index[:, 0].tolist() == rows.tolist()
    assert (matches.shift[:, 0] == np.array([-2, 1])).all()


# -- the methods, trained a few steps on tiny data ------------------------------------------------

# Tiny networks: a step takes a fraction of a second.
TINY = {"width": 4, "n_blocks": 1, "batch_size": 16, "classifier_width": 4, "val_fraction": 0.25}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("gandata")
    write_sem_dataset(
        root / "data",
        root / "truth",
        SemSynthConfig(seed=3, n_structures=6, n_sites=8, images_per_site=3, n_test=5),
    )
    return root


def _train(name, tiny, out, **cfg):
    method = DEPTH_METHODS.create(name, **{**TINY, **cfg})
    data = DepthData.load(tiny / "data", method.uses)
    metrics = train_method(method, data, RunDir.for_training(out), epochs=1, seed=0, device="cpu")
    return method, data, metrics


@pytest.mark.slow
def test_cyclegan_trains_predicts_and_snaps_the_background(tiny, tmp_path):
    method, data, metrics = _train("cyclegan", tiny, tmp_path / "run")
    final = metrics["final"]
    assert final["steps"] > 0 and np.isfinite(final["val_rmse"]) and 0 <= final["val_case_acc"] <= 1
    loaded = load_depth_model(tmp_path / "run", device="cpu")
    assert loaded.background == {1: 140.0, 2: 150.0, 3: 160.0, 4: 170.0}
    images = data.real.images[:6]
    pred = loaded.predict(images)
    assert pred.shape == (6, 72, 48) and pred.dtype == np.float32
    assert (pred >= 0).all() and (pred <= 255).all()
    np.testing.assert_allclose(pred, method.predict(images), atol=1e-3)
    # no pixel is left just below its case's background level: the snap set those to the level
    levels = np.array([140.0, 150.0, 160.0, 170.0])[classify_cases(loaded.modules["classifier"], images) - 1]
    gap = levels[:, None, None] - pred
    assert not ((gap > 0) & (gap <= 1)).any()


@pytest.fixture(scope="module")
def lookup_run(tiny):
    """A lookup run trained through the CLI (single best match, exact search, every render in the bank)."""
    out = tiny / "lookup-run"
    args = ["depth", "train", tiny / "data", "--method", "lookup", "--out", out, "--epochs", "1"]
    args += [
        x
        for k, v in {**TINY, "top_k": 1, "candidates": 0, "bank": "both"}.items()
        for x in ("--param", f"{k}={v}")
    ]
    assert run([str(a) for a in args]) == 0
    return out


@pytest.mark.slow
def test_lookup_returns_shifted_simulated_depth_maps(tiny, lookup_run):
    data = DepthData.load(tiny / "data")
    loaded = load_depth_model(lookup_run, device="cpu")
    assert sorted(loaded.banks) == [1, 2, 3, 4]
    assert sum(len(b) for b in loaded.banks.values()) == 2 * len(data.sim.depth)  # both renders of every pair
    pred = loaded.predict(data.real.images[:5])
    assert pred.shape == (5, 72, 48) and pred.dtype == np.float32
    # top_k=1: every prediction is one simulated depth map, circularly shifted by at most 2 px
    sims = data.sim.depth.astype(np.float32)
    for p in pred:
        assert any(
            (np.roll(sims, (dy, dx), axis=(1, 2)) == p).all(axis=(1, 2)).any()
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )


@pytest.mark.slow
def test_lookup_mean_bank_holds_one_image_per_depth_map(tiny, lookup_run):
    data = DepthData.load(tiny / "data")
    method = load_depth_model(lookup_run, device="cpu")
    method.cfg.bank = "mean"
    method.after_training(SimpleNamespace(cases=(1, 2, 3, 4)), data)  # needs only the trained cases
    assert sum(len(b) for b in method.banks.values()) == len(data.sim.depth)
    assert method.predict(data.real.images[:3]).shape == (3, 72, 48)


@pytest.mark.slow
def test_lookup_without_translation_trains_only_the_classifier(tiny, tmp_path):
    method, data, metrics = _train("lookup", tiny, tmp_path / "run", translate=False, classifier_epochs=2)
    assert set(method.modules) == {"classifier"} and "val_acc" in metrics["final"]
    loaded = load_depth_model(tmp_path / "run", device="cpu")
    # the bank holds the simulated renders themselves: a render is its own best match at no shift
    case1 = np.flatnonzero(data.sim.case == 1)
    matches = loaded.banks[1].search(data.sim.sem[case1, 0], k=1)
    assert matches.score[:, 0].min() > 0.9 and (matches.shift == 0).all()
    np.testing.assert_array_equal(loaded.banks[1].depth[matches.index[:, 0]], data.sim.depth[case1])


@pytest.mark.slow
def test_lookup_predict_cli_writes_one_png_per_image(tiny, lookup_run, tmp_path):
    assert (
        run(
            ["depth", "predict", str(tiny / "data"), "--model", str(lookup_run), "--out", str(tmp_path / "p")]
        )
        == 0
    )
    names = sorted(p.name for p in (tiny / "data/test/SEM").glob("*.png"))
    assert sorted(p.name for p in (tmp_path / "p").glob("*.png")) == names
    assert read_gray_u8(tmp_path / "p" / names[0]).shape == (72, 48)


def test_gan_methods_need_real_images(tmp_path, capsys):
    write_sem_dataset(
        tmp_path / "data",
        tmp_path / "truth",
        SemSynthConfig(seed=1, n_structures=2, n_sites=4, images_per_site=1, n_test=1),
    )
    shutil.rmtree(tmp_path / "data" / "train")
    for name in ("cyclegan", "lookup"):
        code = run(
            ["depth", "train", str(tmp_path / "data"), "--method", name, "--out", str(tmp_path / name)]
        )
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and "real images" in err[0]
        assert not (tmp_path / name).exists()


def test_cases_without_both_domains_get_no_model():
    assert trainable_cases(np.array([1, 2, 3, 4]), np.array([2, 4, 4])) == (2, 4)
    with pytest.raises(DatasetError, match="no case has both"):
        trainable_cases(np.array([1, 1]), np.array([3]))


def test_case_batches_take_one_case_each_and_cover_every_sample_once():
    sim_case = np.array([1, 1, 1, 2, 2, 4, 4, 4, 4, 0])
    batches = case_batches(sim_case, 2, torch.Generator().manual_seed(0), skip=0)
    seen = np.concatenate([rows.numpy() for _, rows in batches])
    assert sorted(seen.tolist()) == list(range(9))  # the skipped case (0) is left out
    assert all((sim_case[rows.numpy()] == case).all() for case, rows in batches)
    again = case_batches(sim_case, 2, torch.Generator().manual_seed(0), skip=0)
    assert [(c, r.tolist()) for c, r in batches] == [(c, r.tolist()) for c, r in again]
