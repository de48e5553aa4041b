"""Loading SEM datasets into memory and serving them to PyTorch."""

import numpy as np
import pytest

from micrometry.depth.dataset import index_dataset, load_real, load_sim, load_test
from micrometry.depth.torch_data import ImageDataset, RealSiteDataset, SimPairDataset
from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("semds")
    write_sem_dataset(root / "d", root / "t", SemSynthConfig(seed=1, n_structures=20, n_sites=4, images_per_site=3,
                                                             n_test=4))
    return index_dataset(root / "d")


def test_split_by_base_structure_never_leaks(index):
    sim = load_sim(index)
    train, val = sim.split(val_fraction=0.25, seed=0)
    assert len(train) + len(val) == 80 and len(val) == 5 * 4
    assert not set(sim.base[train]) & set(sim.base[val])
    # every validation structure is present in all four cases
    for base in set(sim.base[val]):
        assert sorted(sim.case[sim.base == base]) == [1, 2, 3, 4]


def test_sim_dataset_items(index):
    sim = load_sim(index)
    train, _ = sim.split(0.25)
    ds = SimPairDataset(sim, train)
    assert len(ds) == 2 * len(train)
    sem, depth, case = ds[0]
    assert sem.shape == (1, 72, 48) and 0 <= sem.min() and sem.max() <= 1
    assert depth.shape == (1, 72, 48) and depth.max() in (140, 150, 160, 170)
    assert depth.max().item() == 140 + 10 * case.item()
    averaged = SimPairDataset(sim, train, mean_itr=True)
    assert len(averaged) == len(train)
    expected = (sim.sem[train[0]].astype(np.float32).mean(axis=0)) / 255
    assert np.allclose(averaged[0][0][0].numpy(), expected, atol=1e-6)


def test_real_and_test_datasets(index):
    real = load_real(index)
    ds = RealSiteDataset(real)
    image, case, site, site_depth = ds[0]
    assert image.shape == (1, 72, 48) and len(ds) == 12
    assert 100 + 10 * (case.item() + 1) - 6 <= site_depth.item() <= 100 + 10 * (case.item() + 1) + 3
    assert len(np.unique(real.site)) == 4
    test = load_test(index)
    assert len(ImageDataset(test)) == 4 and test.names[0] == "000000.png"
