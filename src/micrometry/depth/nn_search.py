"""Shift-tolerant nearest-neighbour search of SEM images (the 1st place's lookup).

A query matches a bank image by the cosine similarity of their z-scored
pixels, maximised over circular shifts of up to ``max_shift`` pixels in both
axes (25 shifts for +-2). Z-scoring commutes with a circular shift, so the
queries are z-scored once, rolled 25 times and scored against the whole bank
with one matrix product per chunk of queries::

    scores[q, s, b] = <roll(zq, shift_s), zb>        (unit-norm rows: cosine)

If ``roll(query, t)`` matches bank image ``b``, the query looks like
``roll(b, -t)``, so its depth map is ``roll(depth_b, -t)``.

That exact search costs ``25 * bank size * 3456`` multiply-adds per query. With
``candidates=K`` a cheap first stage keeps the K bank images whose 2-D Fourier
magnitudes are most similar to the query's (the magnitude of a DFT is exactly
invariant to circular shifts, so a shifted copy of a bank image scores 1), and
only those K are scored at all 25 shifts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def unit_zscore(images: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` -> ``(N, H, W)`` float32, each image centred and scaled to unit L2 norm.

    The dot product of two such images is the cosine similarity (equivalently
    the correlation) of their z-scored pixels. A flat image becomes all zeros.
    """
    x = images.float()
    x = x - x.mean(dim=(1, 2), keepdim=True)
    norm = x.flatten(1).norm(dim=1).clamp_min(1e-6)
    return x / norm[:, None, None]


def shift_invariant_features(z: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` unit-z-scored images -> ``(N, F)`` unit rows: centred DFT magnitudes (shift-invariant)."""
    magnitude = torch.fft.rfft2(z).abs().flatten(1)
    magnitude = magnitude - magnitude.mean(dim=1, keepdim=True)
    return magnitude / magnitude.norm(dim=1, keepdim=True).clamp_min(1e-6)


def shift_grid(max_shift: int) -> torch.Tensor:
    """All (dy, dx) with |dy|, |dx| <= max_shift: ``(S, 2)`` int, (0, 0) first so that ties prefer no shift."""
    r = range(-max_shift, max_shift + 1)
    shifts = sorted(((dy, dx) for dy in r for dx in r), key=lambda s: (abs(s[0]) + abs(s[1]), s))
    return torch.tensor(shifts, dtype=torch.long)


@dataclass
class Matches:
    """The ``k`` best bank images of each query, best first."""

    index: np.ndarray  # (M, k) bank rows
    shift: np.ndarray  # (M, k, 2) (dy, dx): the query is roll(bank image, shift)
    score: np.ndarray  # (M, k) cosine similarity


class ShiftedNeighbourSearch:
    """A bank of (image, depth map) pairs searched by shifted cosine similarity.

    Parameters
    ----------
    images : array or Tensor, (N, H, W)
        Bank images (e.g. simulated SEM translated into the real style).
    depth : array, (N, H, W)
        The depth map of each bank image.
    max_shift : int
        Largest circular shift tried in each axis.
    candidates : int or None
        Score only this many first-stage candidates at every shift (None: the whole bank, exact).
        Ignored for banks smaller than ``8 * candidates``, where the exact search is as fast.
    chunk_bytes : int
        Memory bound for one chunk's score matrix and rolled queries.
    """

    def __init__(
        self, images, depth, max_shift: int = 2, candidates: int | None = None, chunk_bytes: int = 96 * 2**20
    ):
        images = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images
        z = unit_zscore(images)
        self.bank = z.flatten(1).contiguous()  # (N, D)
        # Two stages pay off only on a bank much larger than the candidate list (measured: not below ~8x).
        self.candidates = candidates if candidates and 8 * candidates <= len(self.bank) else None
        self.bank_features = shift_invariant_features(z) if self.candidates else None
        self.depth = np.asarray(depth)
        if len(self.depth) != len(self.bank):
            raise ValueError("bank images and depth maps differ in number")
        self.shape = tuple(images.shape[1:])
        self.shifts = shift_grid(max_shift)
        # rolled[:, s] = flat[:, roll_index[s]]: all shifts of a batch in one gather.
        grid = torch.arange(self.bank.shape[1]).view(self.shape)
        self.roll_index = torch.stack(
            [torch.roll(grid, (int(dy), int(dx)), dims=(0, 1)).flatten() for dy, dx in self.shifts]
        )
        self.chunk_bytes = chunk_bytes

    def __len__(self) -> int:
        return len(self.bank)

    def _chunk_size(self) -> int:
        n_scored = (
            self.candidates * (1 + self.bank.shape[1] / len(self.shifts))
            if self.candidates
            else len(self.bank)
        )
        per_query = 4 * len(self.shifts) * (n_scored + self.bank.shape[1])
        return max(1, int(self.chunk_bytes // per_query))

    def search(self, queries, k: int = 1) -> Matches:
        """The ``k`` best matches of each ``(M, H, W)`` query (each bank image once, at its best shift)."""
        q = torch.as_tensor(np.asarray(queries)) if not torch.is_tensor(queries) else queries
        k = min(k, len(self.bank))
        n_shift = len(self.shifts)
        index, shift, score = [], [], []
        for start in range(0, len(q), self._chunk_size()):
            zq = unit_zscore(q[start : start + self._chunk_size()])
            rolled = zq.flatten(1)[:, self.roll_index]  # (m, S, D)
            if self.candidates:
                first = shift_invariant_features(zq) @ self.bank_features.T  # (m, N)
                cand = first.topk(max(self.candidates, k), dim=1).indices  # (m, K)
                scores = rolled @ self.bank[cand].transpose(1, 2)  # (m, S, K)
            else:
                scores = (rolled @ self.bank.T).view(len(zq), n_shift, -1)  # (m, S, N)
            best_over_shifts, best_shift = scores.max(dim=1)
            top_score, top_pos = best_over_shifts.topk(k, dim=1)
            top_shift = best_shift.gather(1, top_pos)
            top_index = cand.gather(1, top_pos) if self.candidates else top_pos
            index.append(top_index)
            # roll(query, t) ~ bank  =>  query ~ roll(bank, -t)
            shift.append(-self.shifts[top_shift])
            score.append(top_score)
        return Matches(torch.cat(index).numpy(), torch.cat(shift).numpy(), torch.cat(score).numpy())

    def depth_of(self, matches: Matches) -> np.ndarray:
        """``(M, H, W)`` float32: the mean of each query's matched depth maps, each rolled by its shift."""
        out = np.zeros((len(matches.index), *self.shape), dtype=np.float32)
        k = matches.index.shape[1]
        for j in range(k):
            for dy, dx in np.unique(matches.shift[:, j], axis=0):
                rows = np.flatnonzero((matches.shift[:, j, 0] == dy) & (matches.shift[:, j, 1] == dx))
                out[rows] += np.roll(self.depth[matches.index[rows, j]], (int(dy), int(dx)), axis=(1, 2))
        return out / k

    def predict(self, queries, k: int = 1) -> np.ndarray:
        """Depth maps of ``(M, H, W)`` queries: the (mean of the ``k``) best matches' depth, shifted."""
        return self.depth_of(self.search(queries, k))
