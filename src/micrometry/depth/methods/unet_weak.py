"""``unet-weak``: ``unet`` plus weak labels, the real images' site average depths.

Each real image's predicted etch depth is pulled towards its site's average
depth during training; afterwards a calibration fitted on every real image
(:mod:`micrometry.depth.calibration`) corrects what bias remains.
"""

from __future__ import annotations

import numpy as np
import torch

from micrometry.depth.batchnorm import recompute_batchnorm
from micrometry.depth.calibration import calibration_features, fit_ridge, fit_site_affine
from micrometry.depth.methods.base import DEPTH_METHODS, DepthData
from micrometry.depth.methods.unet import UNetMethod
from micrometry.train import TrainTask


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
        Real sites held out for ``val_real_mae`` (reported; the best epoch is
        still chosen by ``val_rmse``, which also measures the shape).
    calibration : str
        After training, correct the predicted depth with the real sites' averages:
        ``"affine"`` (one line through the site means), ``"ridge"`` (a ridge
        regression of the site average on the predicted depth and the image's
        brightness statistics, fitted on every real image) or ``"none"``.
    adabn : bool
        After training, recompute BatchNorm statistics on the real images (AdaBN).
        Measured on bench/depth.py: better depth (2.9 vs 3.2 nm) but worse shapes,
        RMSE 6.5 against 5.3 without; off by default.
    """

    name = "unet-weak"
    uses = ("sim", "real")
    calibrations = ("affine", "ridge", "none")

    def adapt_batchnorm(self, images: np.ndarray) -> None:
        """AdaBN: BatchNorm statistics of the real images, for which the model predicts."""
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1).to(self.device)
        for net in self.modules.values():
            recompute_batchnorm(net, x)
        self._fused = None

    def __init__(self, **cfg):
        super().__init__(**cfg)
        if self.cfg["calibration"] not in self.calibrations:
            from micrometry.errors import InputError

            raise InputError(f"calibration must be one of {', '.join(self.calibrations)}, "
                             f"got {self.cfg['calibration']!r}")
    defaults = {**UNetMethod.defaults, "real_weight": 1.0, "real_batch_size": 32, "val_site_fraction": 0.2,
                "calibration": "ridge", "adabn": False}
    use_real = True

    def after_training(self, task: TrainTask, data: DepthData) -> None:
        self.affine, self.ridge = (1.0, 0.0), None
        real = data.real
        if self.cfg["adabn"]:
            self.adapt_batchnorm(real.images)
        if self.cfg["calibration"] == "none":
            return
        depths, features = [], []
        for i in range(0, len(real.images), 1024):
            x = torch.from_numpy(real.images[i:i + 1024].astype(np.float32) / 255.0).unsqueeze(1).to(self.device)
            depth = self.predict_parts(x)[1]
            depths.append(depth.cpu().numpy())
            features.append(calibration_features(depth, x).cpu().numpy())
        if self.cfg["calibration"] == "affine":
            self.affine = fit_site_affine(np.concatenate(depths), real.site, real.site_depth)
        else:
            self.ridge = fit_ridge(np.concatenate(features).astype(np.float64), real.site_depth.astype(np.float64))


DEPTH_METHODS.register("unet-weak")(WeakUNetMethod)
