"""The SEM simulator: layout, determinism and physics sanity."""

import csv
import hashlib
import re

import numpy as np
import pytest
from PIL import Image

from micrometry.synth.sem_dataset import SemSynthConfig, simulate_real, write_sem_dataset
from micrometry.synth.sem_geometry import GeometryConfig, heights, hole_shapes, sample_holes
from micrometry.synth.sem_physics import SemPhysics, render_simulated, secondary_yield

SMALL = dict(n_structures=6, n_sites=8, images_per_site=3, n_test=5)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sem")
    write_sem_dataset(root / "data", root / "truth", SemSynthConfig(seed=7, **SMALL))
    return root / "data", root / "truth"


def _tree_digest(folder):
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_layout_and_naming_match_the_competition(dataset):
    data, truth = dataset
    depth = sorted(p.relative_to(data).as_posix() for p in (data / "simulation_data/Depth").rglob("*.png"))
    sem = sorted(p.relative_to(data).as_posix() for p in (data / "simulation_data/SEM").rglob("*.png"))
    assert len(depth) == 6 * 4 and len(sem) == 6 * 4 * 2
    assert all(re.fullmatch(r"simulation_data/Depth/Case_[1-4]/8[0-4]/S\d{6}\.png", p) for p in depth)
    assert all(re.fullmatch(r"simulation_data/SEM/Case_[1-4]/8[0-4]/S\d{6}_itr[01]\.png", p) for p in sem)
    # each depth map has exactly its two renders
    stems = {p.replace("/Depth/", "/SEM/")[:-4] for p in depth}
    assert {p.rsplit("_itr", 1)[0] for p in sem} == stems

    real = sorted(p.relative_to(data).as_posix() for p in (data / "train/SEM").rglob("*.png"))
    assert len(real) == 8 * 3
    assert all(re.fullmatch(r"train/SEM/Depth_(110|120|130|140)/site_\d{5}/SEM_\d{6}\.png", p) for p in real)
    rows = (data / "train/average_depth.csv").read_text().splitlines()
    assert rows[0] == "0,1" and len(rows) == 1 + 8
    for row in rows[1:]:
        assert re.fullmatch(r"depth_(110|120|130|140)_site_\d{5},\d+\.\d{6}", row)
        nominal, value = int(row.split("_")[1]), float(row.split(",")[1])
        assert nominal - 6 <= value <= nominal + 3

    tests = sorted(p.name for p in (data / "test/SEM").iterdir())
    assert tests == [f"{i:06d}.png" for i in range(5)]
    # truth lives outside the dataset, with one depth map per test image
    assert sorted(p.name for p in (truth / "test_depth").iterdir()) == tests
    assert not list(data.rglob("*truth*"))


def test_images_are_72x48_and_real_ones_sometimes_rgb(dataset):
    data, _ = dataset
    sim = Image.open(next((data / "simulation_data/SEM").rglob("*.png")))
    assert sim.size == (48, 72) and sim.mode == "L"
    modes = [Image.open(p).mode for p in (data / "train/SEM").rglob("*.png")]
    assert "RGB" in modes and "L" in modes


def test_case_depths_share_one_geometry(dataset):
    data, _ = dataset
    base = next((data / "simulation_data/Depth/Case_1").rglob("*.png")).relative_to(
        data / "simulation_data/Depth/Case_1"
    )
    maps = [
        np.array(Image.open(data / f"simulation_data/Depth/Case_{c}" / base)).astype(int) for c in range(1, 5)
    ]
    assert [m.max() for m in maps] == [140, 150, 160, 170]
    assert all(28 <= m.min() <= 32 for m in maps)
    # same hole outline in every case
    outlines = [m < m.max() - 1 for m in maps]
    assert all((o == outlines[0]).mean() > 0.98 for o in outlines)


def test_deterministic_per_seed(tmp_path):
    for name in ("a", "b"):
        write_sem_dataset(tmp_path / name, tmp_path / f"{name}-truth", SemSynthConfig(seed=3, **SMALL))
    write_sem_dataset(tmp_path / "c", tmp_path / "c-truth", SemSynthConfig(seed=4, **SMALL))
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert _tree_digest(tmp_path / "a-truth") == _tree_digest(tmp_path / "b-truth")
    assert _tree_digest(tmp_path / "a") != _tree_digest(tmp_path / "c")


def test_truth_csv_matches_depth_maps(dataset):
    _, truth = dataset
    with open(truth / "test_truth.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        depth_map = np.array(Image.open(truth / "test_depth" / row["file"])).astype(float)
        assert depth_map.max() - depth_map.min() == pytest.approx(float(row["hole_depth"]), abs=1.0)
        assert int(row["nominal_depth"]) == 100 + 10 * int(row["case"])


def test_rim_is_brighter_than_bottom():
    rng = np.random.default_rng(0)
    shapes = hole_shapes(sample_holes(20, rng))
    sem = render_simulated(heights(shapes, 120), SemPhysics(), rng).astype(float)
    rim = (shapes > 0.9) & (shapes < 0.999)
    bottom = shapes < 0.05
    for image, r, b in zip(sem, rim, bottom, strict=False):
        assert image[r].mean() > image[b].mean() + 40


def test_deeper_holes_are_darker():
    shapes = hole_shapes(sample_holes(10, np.random.default_rng(1)))
    shallow = secondary_yield(heights(shapes, 110), SemPhysics()).mean(axis=(1, 2))
    deep = secondary_yield(heights(shapes, 140), SemPhysics()).mean(axis=(1, 2))
    assert np.all(deep < shallow)


@pytest.mark.slow  # a long end-to-end check; `make test` runs it
def test_site_brightness_tracks_depth_on_the_real_domain():
    real = simulate_real(SemSynthConfig(), n_sites=80, per_site=15, rng=np.random.default_rng(11))
    sites = np.unique(real.site)
    brightness = np.array([real.images[real.site == s].mean() for s in sites])
    depth = np.array([real.site_depth[real.site == s][0] for s in sites])
    assert np.corrcoef(brightness, depth)[0, 1] < -0.9


def test_sim_and_real_domains_differ(dataset):
    from scipy import stats

    from micrometry.depth.dataset import index_dataset, load_real, load_sim

    index = index_dataset(dataset[0])
    sim, real = load_sim(index).sem[:, 0].astype(float), load_real(index).images.astype(float)
    # a different detector: black level and contrast differ between the domains
    black = lambda x: np.percentile(x, 2, axis=(1, 2))  # noqa: E731
    assert stats.ks_2samp(black(sim), black(real)).pvalue < 0.01
    assert stats.ks_2samp(sim.std(axis=(1, 2)), real.std(axis=(1, 2))).pvalue < 0.01


def test_geometry_families_widen_holes():
    rng = np.random.default_rng(0)
    narrow = sample_holes(200, rng, GeometryConfig(), families=np.full(200, 80))
    wide = sample_holes(200, rng, GeometryConfig(), families=np.full(200, 84))
    assert wide.ax.mean() > narrow.ax.mean() * 1.08
