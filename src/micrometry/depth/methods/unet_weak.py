"""``unet-weak``: ``unet`` plus weak labels, the real images' site average depths.

Each real image's predicted etch depth is pulled towards its site's average
depth during training; afterwards a calibration fitted on every real image
(:mod:`micrometry.depth.calibration`) corrects what bias remains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from micrometry.config import param
from micrometry.depth.batchnorm import recompute_batchnorm, set_batchnorm_statistics
from micrometry.depth.calibration import (
    apply_ridge,
    calibration_features,
    fit_ridge,
    fit_site_affine,
    site_conformal_halfwidth,
)
from micrometry.depth.dataset import site_split
from micrometry.depth.methods.base import DEPTH_METHODS, DepthData, input_tensor
from micrometry.depth.methods.unet import UNetMethod
from micrometry.depth.ood import fit_feature_gaussian
from micrometry.train import LoopConfig, RunDir, TrainTask


class WeakUNetMethod(UNetMethod):
    """``unet`` plus weak supervision from the real images' site average depths.

    Extra parameters
    ----------------
    real_weight : float
        Weight of the L1 loss between a real image's predicted etch depth and its
        site's average depth.
    real_batch_size : int
        Real images per step, next to each simulated batch.
    val_site_fraction : float
        Real sites held out for ``val_real_mae`` (reported) and, after training, for the
        interval and the OOD threshold. The model is the last epoch's.
    calibration : str
        After training, correct the predicted depth with the real sites' averages:
        ``"affine"`` (one line through the site means), ``"ridge"`` (a ridge
        regression of the site average on the predicted depth and the image's
        brightness statistics, fitted on every real image) or ``"none"``.
    adabn : bool
        After training, recompute BatchNorm statistics on the real images (AdaBN); off by
        default (better depth, worse shapes: docs/depth.md, "Why unet-weak's defaults").
    depth_statistics : str
        After training, which statistics the depth head's input BatchNorm uses for real images:
        ``"real"`` (default): those of the real training images' pooled features, as in training,
        where the real images' depth loss normalised them by their own batch statistics;
        ``"simulated"``: the simulation's running statistics.
    imaging : str
        ``"fixed"`` (default): the blur and noise augmentations of ``blur_aug``/``noise_aug``;
        ``"auto"``: widen them to the probe blur and noise read off the real images, never
        below those (:func:`~micrometry.depth.photometry.augmentation_ranges`).
    geometry : str
        ``"auto"`` (default): if most real images lie outside the simulated images' range of
        :func:`~micrometry.depth.nets.top_level` (their holes take more or less of the crop than any
        simulated hole), and ``shape_aug`` is 0, train with the shape warps of the simulated holes
        (``shape_aug=0.5``, profile only), with a warning; ``"fixed"``: ``shape_aug`` as given.
    real_bn : str
        How BatchNorm normalises the real images in training: ``"batch"`` by their own batch
        statistics (the simulation's running statistics stay untouched; at inference those are
        used, so the depth head meets real images normalised differently from training) or
        ``"running"`` by the simulation's running statistics, as at inference.
    consistency : float
        Weight of a mean-teacher loss on real images: the shape of an augmented real
        image is pulled towards the averaged network's shape of the plain image; 0: off.
    select, select_from, select_margin : str, float, float
        Which epoch's averaged weights become the model: ``"last"``, or ``"excess"``: of the
        epochs after ``select_from`` of the schedule, the one whose predicted real shapes have
        the least excess variation (:func:`~micrometry.depth.profiles.excess_variation`:
        dips and bumps no hole has; reads no label), if that is at least ``select_margin`` below
        the last epoch's (else the last epoch: a smaller difference is the measure's noise).

    After training it also fits, on the real images: the 90 % interval of a hole's
    depth (split conformal on the held-out sites, widened for their small number:
    :func:`~micrometry.depth.calibration.site_conformal_halfwidth`, :attr:`interval_nm`) and a
    Gaussian model of the networks' features that flags images unlike the
    training data (:attr:`ood`); :meth:`predict_report` returns both per image.

    Why each default is what it is, with the measurements: docs/depth.md, "Why unet-weak's defaults".
    """

    name = "unet-weak"
    uses = ("sim", "real")

    # epochs, tta, depth_statistics: chosen on bench/depth.py (docs/depth.md, "Why unet-weak's defaults")
    @dataclass
    class Config(UNetMethod.Config):
        epochs: int = param(60, ge=1)
        tta: int = param(4, choices=(1, 2, 4))
        real_weight: float = param(1.0, ge=0)
        real_batch_size: int = param(32, ge=1)
        val_site_fraction: float = param(0.2, ge=0, lt=1)
        calibration: str = param("ridge", choices=("affine", "ridge", "none"))
        adabn: bool = param(False)
        depth_statistics: str = param("real", choices=("real", "simulated"))
        imaging: str = param("fixed", choices=("fixed", "auto"))
        geometry: str = param("auto", choices=("fixed", "auto"))
        consistency: float = param(0.0, ge=0)
        real_bn: str = param("batch", choices=("batch", "running"))
        # the median centre and the render loss: what real holes' shapes need (docs/depth.md, "Issue 27")
        centre: str = param("median", choices=("mean", "median"))
        render_weight: float = param(1.0, ge=0)
        # closed dips on the predicted top surface: what real holes of an unseen shape get (issue 27)
        fill_dips: float = param(0.5, ge=0, lt=1)
        select: str = param("last", choices=("last", "excess"))
        select_from: float = param(0.5, ge=0, le=1)
        select_margin: float = param(0.1, ge=0, lt=1)

    former_defaults = {"centre": "mean", "render_weight": 0.0, "fill_dips": 0.0, "geometry": "fixed"}

    use_real = True
    # The model is the last epoch's averaged weights: the simulated validation RMSE measures the wrong
    # domain and swings between epochs (docs/depth.md, "Why unet-weak's defaults").
    monitor, monitor_mode = "epoch", "max"

    def loop_config(self) -> LoopConfig:
        config = super().loop_config()
        if self.cfg.select == "excess":
            config.monitor, config.mode = "val_real_excess_nm", "min"
        return config

    def kept_checkpoint(self, run: RunDir) -> Path:
        """With ``select="excess"``, the chosen epoch unless the last one is within the margin of it."""
        chosen = run.best_checkpoint()
        if self.cfg.select != "excess":
            return chosen
        metrics = run.read_metrics()
        key = "val_real_excess_nm"
        best, last = metrics["best"].get(key), metrics["final"].get(key)
        if best is not None and last is not None and best > (1 - self.cfg.select_margin) * last:
            run.log(
                f"kept the last epoch: the least excess variation ({best:.3f} nm/px, epoch "
                f"{metrics['best']['epoch']}) is within {self.cfg.select_margin:.0%} of the last's ({last:.3f})"
            )
            return run.checkpoint_path("last")
        return chosen

    def adapt_batchnorm(self, images: np.ndarray) -> None:
        """AdaBN: BatchNorm statistics of the real images, for which the model predicts."""
        x = input_tensor(images, self.device)
        for net in self.modules.values():
            recompute_batchnorm(net, x)
        self._fused = None

    @torch.no_grad()
    def adapt_depth_head(self, images: np.ndarray) -> None:
        """The depth heads' input BatchNorm on the statistics of ``images``' pooled features."""
        x = input_tensor(images, self.device)
        for net in self.modules.values():
            pooled = torch.cat([net.forward_features(x[i : i + 1024])[2] for i in range(0, len(x), 1024)])
            set_batchnorm_statistics(net.depth_head[0], pooled)
        self._fused = None

    def after_training(self, task: TrainTask, data: DepthData) -> None:
        """Fit the depth calibration, the 90 % interval of a hole's depth and the OOD model on real images."""
        self.affine, self.ridge, self.interval_nm, self.ood = (1.0, 0.0), None, None, None
        real = data.real
        if self.cfg.adabn:
            self.adapt_batchnorm(real.images)
        elif self.cfg.depth_statistics == "real":
            self.adapt_depth_head(real.images)
        depth, features, pooled = self.real_outputs(real.images)
        # The sites the networks never saw labels of (UNetTask's split) are the honest reference.
        train_rows, val_rows = site_split(real, self.cfg.val_site_fraction, getattr(self, "_seed", 0))
        self.ood = fit_feature_gaussian(pooled[train_rows], pooled[val_rows])
        if len(val_rows):
            held = self.fit_calibration(
                depth[train_rows], features[train_rows], real.site[train_rows], real.site_depth[train_rows]
            )
            residual = (
                apply_calibration(held, depth[val_rows], features[val_rows]) - real.site_depth[val_rows]
            )
            self.interval_nm = site_conformal_halfwidth(residual, real.site[val_rows], 0.9)
        self.affine, self.ridge = self.fit_calibration(depth, features, real.site, real.site_depth)

    @torch.no_grad()
    def real_outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Uncalibrated network depth, calibration features and depth-head input of ``images``."""
        depths, features, pooled = [], [], []
        for i in range(0, len(images), 1024):
            x = input_tensor(images[i : i + 1024], self.device)
            _, depth, first = self.predict_parts(x, features=True)  # calibration is the identity now
            depths.append(depth.cpu().numpy())
            features.append(calibration_features(depth, x).cpu().numpy())
            pooled.append(first.cpu().numpy())
        return (
            np.concatenate(depths).astype(np.float64),
            np.concatenate(features).astype(np.float64),
            np.concatenate(pooled).astype(np.float64),
        )

    def fit_calibration(
        self, depth: np.ndarray, features: np.ndarray, site: np.ndarray, site_depth: np.ndarray
    ) -> tuple[tuple[float, float], tuple | None]:
        """``(affine, ridge)`` of the configured calibration fitted on these real images."""
        if self.cfg.calibration == "affine":
            return fit_site_affine(depth, site, site_depth), None
        if self.cfg.calibration == "ridge":
            return (1.0, 0.0), fit_ridge(features, site_depth.astype(np.float64))
        return (1.0, 0.0), None


def apply_calibration(
    fitted: tuple[tuple[float, float], tuple | None], depth: np.ndarray, features: np.ndarray
) -> np.ndarray:
    """Corrected depths from :meth:`WeakUNetMethod.fit_calibration`'s ``(affine, ridge)``."""
    (a, b), ridge = fitted
    if ridge is not None:
        return apply_ridge(ridge, torch.from_numpy(features)).numpy()
    return a * depth + b


DEPTH_METHODS.register("unet-weak")(WeakUNetMethod)
