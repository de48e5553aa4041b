"""PyTorch views of SEM datasets held in memory (see :mod:`micrometry.depth.dataset`).

Images become float tensors in [0, 1] (pixel / 255) of shape (1, 72, 48); depth
maps stay in their native units (height in nm = pixel value) so that losses and
metrics read in the competition's units.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from micrometry.depth.dataset import ImageArrays, RealArrays, SimArrays


def image_tensor(images: np.ndarray) -> torch.Tensor:
    """``(N, 72, 48)`` uint8 -> ``(N, 1, 72, 48)`` float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).unsqueeze(1)


class SimPairDataset(Dataset):
    """Simulated (SEM, depth, case) samples for the rows of one split.

    Parameters
    ----------
    sim : SimArrays
    rows : ndarray of int
        Rows of ``sim`` to serve, from :meth:`SimArrays.split` (split by base structure).
    mean_itr : bool
        Serve the mean of the two noisy renders as one input (less noise), instead
        of each render as its own sample.
    """

    def __init__(self, sim: SimArrays, rows: np.ndarray, mean_itr: bool = False):
        self.mean_itr = mean_itr
        sem = sim.sem[rows]
        if mean_itr:
            self.sem = image_tensor(sem.astype(np.float32).mean(axis=1))
            self.depth = torch.from_numpy(sim.depth[rows]).float().unsqueeze(1)
            self.case = torch.from_numpy(sim.case[rows] - 1).long()
        else:
            self.sem = image_tensor(sem.reshape(-1, *sem.shape[2:]))
            self.depth = torch.from_numpy(np.repeat(sim.depth[rows], 2, axis=0)).float().unsqueeze(1)
            self.case = torch.from_numpy(np.repeat(sim.case[rows] - 1, 2)).long()

    def __len__(self) -> int:
        return len(self.sem)

    def __getitem__(self, i: int):
        return self.sem[i], self.depth[i], self.case[i]


class RealSiteDataset(Dataset):
    """Real (image, case, site code, site average depth) samples: weak labels only."""

    def __init__(self, real: RealArrays):
        self.images = image_tensor(real.images)
        self.case = torch.from_numpy(real.case - 1).long()
        self.site = torch.from_numpy(real.site).long()
        self.site_depth = torch.from_numpy(real.site_depth).float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.case[i], self.site[i], self.site_depth[i]


class ImageDataset(Dataset):
    """Images alone (test sets, prediction inputs), with their position for naming outputs."""

    def __init__(self, arrays: ImageArrays):
        self.images = image_tensor(arrays.images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], i
