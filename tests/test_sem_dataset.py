"""Loading SEM datasets into memory and serving them to PyTorch."""

import numpy as np
import pytest

from micrometry.depth.dataset import index_dataset, load_real, load_sim, load_test
from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("semds")
    write_sem_dataset(
        root / "d",
        root / "t",
        SemSynthConfig(seed=1, n_structures=20, n_sites=4, images_per_site=3, n_test=4),
    )
    return index_dataset(root / "d")


def test_split_by_base_structure_never_leaks(index):
    sim = load_sim(index)
    train, val = sim.split(val_fraction=0.25, seed=0)
    assert len(train) + len(val) == 80 and len(val) == 5 * 4
    assert not set(sim.base[train]) & set(sim.base[val])
    # every validation structure is present in all four cases
    for base in set(sim.base[val]):
        assert sorted(sim.case[sim.base == base]) == [1, 2, 3, 4]


def test_sim_arrays_pair_renders_with_their_depth(index):
    sim = load_sim(index)
    train, _ = sim.split(0.25)
    assert sim.sem[train].shape[1:] == (2, 72, 48) and sim.depth[train].shape[1:] == (72, 48)
    for row in train:
        assert sim.depth[row].max() in (140, 150, 160, 170)
        assert sim.depth[row].max() == 130 + 10 * sim.case[row]


def test_real_and_test_arrays(index):
    real = load_real(index)
    assert real.images.shape == (12, 72, 48)
    case, site_depth = real.case[0], real.site_depth[0]
    assert 100 + 10 * case - 6 <= site_depth <= 100 + 10 * case + 3
    assert len(np.unique(real.site)) == 4
    test = load_test(index)
    assert len(test.images) == 4 and test.names[0] == "000000.png"
