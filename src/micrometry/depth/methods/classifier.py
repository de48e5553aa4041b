"""``classifier``: which case (etch depth 110/120/130/140 nm) a real SEM image shows.

Per-case methods (one model per case) need it to choose the model for a real
image. Trained on real images labelled by their ``Depth_*`` folder, validated
on held-out *sites* (images of one site are near copies). Reusable pieces:

* :class:`CaseClassifier` wraps a trained :class:`~micrometry.depth.nets.CaseNet`
  with ``predict_case(images) -> (N,) 1..4`` and ``predict_proba``;
* :class:`CaseClassifierTask` trains one with the shared loop, alone or as a
  part of another method's task (its ``train_step`` takes the same batches);
* :func:`train_case_classifier` runs that task into a run folder and returns
  the classifier and its validation accuracy.

As a depth method (``micrometry depth train DATA --method classifier``) it
predicts, for each image, its case's template map: the mean simulated hole
shape etched to the mean site depth of the predicted case. That is the
"know only the case" baseline, and makes its accuracy comparable in RMSE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from micrometry.config import Config, param
from micrometry.depth.augment import FLIP_DIMS
from micrometry.depth.dataset import CASE_DEPTHS, IMAGE_SHAPE, RealArrays, site_split
from micrometry.depth.methods.base import DEPTH_METHODS, DepthData, DepthMethod, input_tensor
from micrometry.depth.nets import CaseNet
from micrometry.train import LoopConfig, RunDir, TrainTask, fit, load_checkpoint, seed_everything
from micrometry.train.task import shuffled_batches


class CaseClassifier:
    """A trained case classifier: ``predict_case`` returns 1..4 per image.

    Parameters
    ----------
    net : CaseNet
    batch_size : int
    """

    def __init__(self, net: CaseNet, batch_size: int = 4096):
        self.net = net
        self.batch_size = batch_size

    @torch.inference_mode()
    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """``(N, 72, 48)`` uint8 -> ``(N, 4)`` probabilities of Case_1..4."""
        self.net.eval()
        device = next(self.net.parameters()).device
        out = []
        for start in range(0, len(images), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + self.batch_size])).to(device)
            out.append(torch.softmax(self.net(x.float().div_(255.0).unsqueeze(1)), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 4), np.float32)

    def predict_case(self, images: np.ndarray) -> np.ndarray:
        """``(N, 72, 48)`` uint8 -> ``(N,)`` case 1..4."""
        return self.predict_proba(images).argmax(axis=1) + 1


class CaseClassifierTask(TrainTask):
    """Cross-entropy training of a :class:`CaseNet` on real images, validated on held-out sites.

    Parameters
    ----------
    net : CaseNet
    real : RealArrays
    device : torch.device
    seed : int
        Seeds the site split.
    lr, batch_size, val_site_fraction : training settings.
    """

    def __init__(
        self,
        net: CaseNet,
        real: RealArrays,
        device: torch.device,
        seed: int = 0,
        lr: float = 3e-3,
        batch_size: int = 64,
        val_site_fraction: float = 0.2,
        epochs: int = 10,
    ):
        self.net = net
        self.batch_size = batch_size
        train_rows, val_rows = site_split(real, val_site_fraction, seed)
        images = input_tensor(real.images, device)
        labels = torch.from_numpy(real.case - 1).long().to(device)
        self.x, self.y = images[train_rows], labels[train_rows]
        self.val_x, self.val_y = images[val_rows], labels[val_rows]
        self.modules = {"classifier": net}
        self.optimizers = {"classifier_opt": torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)}
        self.schedulers = {
            "classifier_lr": torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizers["classifier_opt"], T_max=max(epochs, 1)
            )
        }
        self._aug = torch.Generator().manual_seed(seed + 2)

    def train_batches(self, epoch: int, generator: torch.Generator):
        self._aug.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
        return shuffled_batches(len(self.x), self.batch_size, generator)

    def wrap_ddp(self, wrap) -> None:
        self.net = wrap(self.net)

    def train_step(self, idx: torch.Tensor) -> dict[str, float]:
        idx = idx.to(self.x.device)
        x = self.x[idx]
        dims = FLIP_DIMS[int(torch.randint(0, 4, (1,), generator=self._aug))]
        if dims:
            x = x.flip(dims)
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, self.y[idx])
        opt = self.optimizers["classifier_opt"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"ce": loss.item(), "acc": float((logits.argmax(1) == self.y[idx]).float().mean())}

    def validate(self) -> dict[str, float]:
        if not len(self.val_x):
            return {}
        logits = torch.cat([self.net(self.val_x[i : i + 1024]) for i in range(0, len(self.val_x), 1024)])
        return {
            "val_ce": float(nn.functional.cross_entropy(logits, self.val_y)),
            "val_acc": float((logits.argmax(1) == self.val_y).float().mean()),
        }


def train_case_classifier(
    real: RealArrays,
    run: RunDir,
    epochs: int = 10,
    seed: int = 0,
    width: int = 8,
    device: str | torch.device = "cpu",
    time_budget_s: float | None = None,
    val_site_fraction: float = 0.2,
) -> tuple[CaseClassifier, float]:
    """Train a case classifier with the shared loop into ``run``; returns it (best epoch) and its val accuracy.

    Without held-out sites (``val_site_fraction=0``) the last epoch is kept and
    the accuracy is NaN.
    """
    device = torch.device(device)
    seed_everything(seed)
    net = CaseNet(width).to(device)
    task = CaseClassifierTask(net, real, device, seed, epochs=epochs, val_site_fraction=val_site_fraction)
    metrics = fit(
        task,
        run,
        LoopConfig(
            epochs=epochs,
            seed=seed,
            time_budget_s=time_budget_s,
            monitor="val_acc",
            mode="max",
            description="case classifier",
        ),
    )
    task.load_state_dict(load_checkpoint(run.best_checkpoint(), map_location=device)["state"])
    return CaseClassifier(net), float(metrics.get("best", {}).get("val_acc", float("nan")))


def mean_sim_shape(data: DepthData) -> np.ndarray:
    """The average simulated hole shape in [0, 1] (1 = top), or a centred ellipse without simulation data."""
    if data.sim is not None:
        depth = data.sim.depth.astype(np.float32)
        top = depth.reshape(len(depth), -1).max(1)[:, None, None]
        return ((depth - 30.0) / np.maximum(top - 30.0, 1.0)).mean(axis=0)
    y, x = np.mgrid[0 : IMAGE_SHAPE[0], 0 : IMAGE_SHAPE[1]]
    r = np.hypot((x - 23.5) / 14.0, (y - 35.5) / 20.0)
    return np.clip((r - 0.6) / 0.4, 0.0, 1.0).astype(np.float32)


@DEPTH_METHODS.register("classifier")
class ClassifierMethod(DepthMethod):
    """Case classifier on real images; predicts its case's template depth map.

    Parameters
    ----------
    width : int
        Network width (see :class:`CaseNet`).
    epochs, lr, batch_size : training schedule.
    val_site_fraction : float
        Real sites held out for ``val_acc`` (the monitored metric).
    """

    name = "classifier"
    uses = ("sim", "real")

    @dataclass
    class Config(Config):
        width: int = param(8, ge=1)
        epochs: int = param(40, ge=1)
        lr: float = param(3e-3, ge=0)
        batch_size: int = param(64, ge=1)
        val_site_fraction: float = param(0.2, ge=0, lt=1)

    def __init__(self, **cfg):
        super().__init__(**cfg)
        self.templates = (
            np.zeros((4, *IMAGE_SHAPE), np.float32) + 30.0 + np.asarray(CASE_DEPTHS)[:, None, None]
        )

    def build_modules(self) -> dict[str, nn.Module]:
        return {"classifier": CaseNet(int(self.cfg.width))}

    def loop_config(self) -> LoopConfig:
        return LoopConfig(
            epochs=int(self.cfg.epochs), monitor="val_acc", mode="max", description="classifier"
        )

    def build_task(self, data: DepthData, device: torch.device, seed: int) -> CaseClassifierTask:
        data.require("real")
        return CaseClassifierTask(
            self.modules["classifier"],
            data.real,
            device,
            seed,
            lr=self.cfg.lr,
            batch_size=int(self.cfg.batch_size),
            val_site_fraction=self.cfg.val_site_fraction,
            epochs=int(self.cfg.epochs),
        )

    def after_training(self, task: TrainTask, data: DepthData) -> None:
        shape = mean_sim_shape(data)
        real = data.real
        for c in range(4):
            rows = real.case == c + 1
            depth = float(real.site_depth[rows].mean()) if rows.any() else float(CASE_DEPTHS[c])
            self.templates[c] = 30.0 + depth * shape

    def extra_state(self) -> dict:
        return {"templates": self.templates.tolist()}

    def load_extra_state(self, state: dict) -> None:
        if "templates" in state:
            self.templates = np.asarray(state["templates"], dtype=np.float32)

    @property
    def classifier(self) -> CaseClassifier:
        return CaseClassifier(self.modules["classifier"], self.batch_size)

    def predict_case(self, images: np.ndarray) -> np.ndarray:
        """``(N, 72, 48)`` uint8 -> ``(N,)`` case 1..4."""
        return self.classifier.predict_case(images)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.templates[self.predict_case(np.asarray(images)) - 1].copy()
