"""Tell images unlike a model's training data: a Gaussian model of their features.

A network's pooled features (and the brightness statistics beside them) of the
real training images are modelled as one Gaussian; an image's squared
Mahalanobis distance to it, divided by the feature count, is its *OOD score*
(about 1 for images like the training data). Images of another tool, another
magnification or with a defect land far outside. The threshold is set on
images the model was not fitted to (held-out sites), with a margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FeatureGaussian:
    """Mean and precision (inverse covariance) of training features, and the flag threshold."""

    mean: np.ndarray  # (F,)
    precision: np.ndarray  # (F, F)
    threshold: float  # OOD score above which an image is flagged

    def score(self, features: np.ndarray) -> np.ndarray:
        """``(N,)`` squared Mahalanobis distance per feature (about 1 in distribution)."""
        z = np.asarray(features, dtype=np.float64) - self.mean
        return np.einsum("nf,fg,ng->n", z, self.precision, z) / len(self.mean)

    def to_state(self) -> dict:
        """Tensors (stored as weights, not as JSON numbers) and the threshold."""
        import torch

        return {
            "mean": torch.from_numpy(self.mean.copy()),
            "precision": torch.from_numpy(self.precision.copy()),
            "threshold": float(self.threshold),
        }

    @classmethod
    def from_state(cls, state: dict) -> FeatureGaussian:
        as_array = lambda v: np.asarray(v.numpy() if hasattr(v, "numpy") else v, dtype=np.float64)  # noqa: E731
        return cls(as_array(state["mean"]), as_array(state["precision"]), float(state["threshold"]))


def fit_feature_gaussian(
    train: np.ndarray,
    held_out: np.ndarray,
    shrinkage: float = 0.1,
    quantile: float = 0.995,
    margin: float = 1.5,
) -> FeatureGaussian:
    """Fit on ``train`` features; flag above ``margin`` x the ``quantile`` of the ``held_out`` scores.

    The covariance is shrunk towards its diagonal (``shrinkage``): with a few
    hundred images and tens of features the plain estimate is noisy in its
    smallest directions, where unseen in-distribution images would then score high.
    """
    train = np.asarray(train, dtype=np.float64)
    mean = train.mean(axis=0)
    cov = np.cov(train, rowvar=False)
    cov = (1 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov)) + 1e-6 * np.eye(len(mean))
    model = FeatureGaussian(mean, np.linalg.inv(cov), float("inf"))
    reference = held_out if len(held_out) else train
    model.threshold = float(margin * np.quantile(model.score(reference), quantile))
    return model
