"""How much of a hole's depth one real SEM image tells, on a bench data set.

    PYTHONPATH=src .venv/bin/python bench/depth_limit.py [--variant other] [--n 20000] [--epochs 15]

No user has what this uses: ``--n`` real-domain images rendered by the bench data set's own
generator (same physics, real tool and geometry ranges as its test images, other seeds), each
with its exact hole depth. A CNN depth regressor (the depth head of ``HoleUNet`` on the raw
image: pooled encoder features and brightness statistics) is trained on them and scored on the
bench's test images (``bench/depth.py`` writes and caches them; run it first). Its per-image
depth error is an estimate of the floor of the *level* part of any method's RMSE on that data
set: a method trained on site averages has fewer and weaker labels. The table prints the
depth error (RMS, bias, per case) and the level part of the map RMSE it implies (the true
shape at the predicted depth, as ``bench/depth.py`` splits the error).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from depth import VARIANTS, default_cache, ensure_dataset, level_shape, read_hole_depths, variant_config
from micrometry.depth.augment import random_flip
from micrometry.depth.dataset import index_dataset, load_test
from micrometry.depth.evaluate import read_case_column
from micrometry.depth.nets import Encoder, image_statistics
from micrometry.io.image import read_gray_u8
from micrometry.synth.sem_dataset import simulate_real
from micrometry.train.loop import configure_threads


class DepthRegressor(nn.Module):
    """One hole depth (nm) per raw image in [0, 1]: :class:`HoleUNet`'s depth head without the shape."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.encoder = Encoder(width, 2)
        _, w2, w3 = self.encoder.channels
        self.head = nn.Sequential(
            nn.BatchNorm1d(w3 + w2 + 5), nn.Linear(w3 + w2 + 5, 64), nn.ReLU(inplace=True), nn.Linear(64, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, f2, f3 = self.encoder(x)
        pooled = torch.cat([f3.mean((2, 3)), f2.mean((2, 3)), image_statistics(x)], dim=1)
        return 125.0 + 20.0 * self.head(pooled).squeeze(1)


def labelled_images(variant: str, n: int, seed: int, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """``n`` real-domain images of the variant's generator and their exact hole depths (cached)."""
    path = cache / f"depth-limit-{variant}-{n}-{seed}.npz"
    if not path.is_file():
        real = simulate_real(variant_config(variant), n, 1, np.random.default_rng(seed))
        np.savez(path, images=real.images, depth=real.hole_depth.astype(np.float32))
    z = np.load(path)
    return z["images"], z["depth"]


def train_regressor(
    images: np.ndarray, depth: np.ndarray, width: int, epochs: int, seed: int
) -> DepthRegressor:
    """MSE, AdamW with a one-cycle schedule, random flips; the last epoch's weights."""
    torch.manual_seed(seed)
    net = DepthRegressor(width)
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(depth)
    batch = 64
    steps = epochs * (len(x) // batch)
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x) - batch + 1, batch):
            rows = order[i : i + batch]
            xb, _ = random_flip(x[rows], None, generator)
            loss = nn.functional.mse_loss(net(xb), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=VARIANTS, default="other")
    parser.add_argument("--n", type=int, default=20000, help="labelled real-domain training images")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument(
        "--seed", type=int, default=123, help="seed of the labelled images (the bench's test uses 0)"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    configure_threads(args.threads)
    root = default_cache(args.variant)
    data_dir, truth_dir = ensure_dataset(
        root, variant_config(args.variant, n_structures=800, n_sites=40, images_per_site=25, n_test=1000)
    )
    test = load_test(index_dataset(data_dir))
    truth = np.stack([read_gray_u8(truth_dir / "test_depth" / n) for n in test.names]).astype(np.float64)
    cases = read_case_column(truth_dir / "test_truth.csv")
    case = np.array([cases[n] for n in test.names])
    holes = read_hole_depths(truth_dir / "test_truth.csv")
    hole_depth = np.array([holes[n] for n in test.names])

    t0 = time.perf_counter()
    images, depth = labelled_images(args.variant, args.n, args.seed, root.parent)
    rendered = time.perf_counter() - t0
    net = train_regressor(images, depth, args.width, args.epochs, args.seed)
    trained = time.perf_counter() - t0 - rendered
    with torch.no_grad():
        pred = net(torch.from_numpy(test.images.astype(np.float32) / 255.0).unsqueeze(1)).numpy()
    error = pred - hole_depth
    # The map this depth implies with the true shape: the level part of the RMSE alone.
    bottom = 30.0
    true_top = truth.reshape(len(truth), -1).max(1)
    shape = (truth - bottom) / np.maximum(true_top - bottom, 1.0)[:, None, None]
    maps = bottom + np.rint(true_top - bottom + (pred - hole_depth))[:, None, None] * shape
    level = level_shape(np.rint(maps), truth, case, bottom)

    table = Table(
        title=f"Depth from one image with exact labels: {args.variant} data, {args.n} labelled "
        f"real-domain images, {args.epochs} epochs (render {rendered:.0f} s, train {trained:.0f} s)"
    )
    for col in (
        "",
        "depth error RMS nm",
        "bias nm",
        "case 1",
        "case 2",
        "case 3",
        "case 4",
        "map level RMSE nm",
    ):
        table.add_column(col, justify="right")
    per = [
        f"{np.sqrt(np.mean(error[case == c] ** 2)):.2f} ({error[case == c].mean():+.1f})"
        for c in (1, 2, 3, 4)
    ]
    table.add_row(
        "CNN depth regressor",
        f"{np.sqrt(np.mean(error**2)):.2f}",
        f"{error.mean():+.2f}",
        *per,
        f"{level['level']:.2f}",
    )
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
