"""``unet`` and ``unet-weak``: a convolutional encoder-decoder, with and without weak labels.

``unet`` learns the simulated pairs only (flip augmentation, optionally the
mean of the two renders as input, no brightness normalisation: brightness
carries depth). ``unet-weak`` adds the real images: each one's predicted etch
depth is pulled towards its site's average depth, and after training an
affine map from the predicted to the measured site averages corrects what
bias remains. Both use :class:`~micrometry.depth.nets.HoleUNet` (height =
bottom + depth x shape), support small ensembles and flip test-time
augmentation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from micrometry.depth.dataset import RealArrays
from micrometry.depth.methods.base import DEPTH_METHODS, DepthData, DepthMethod
from micrometry.depth.methods.sim_task import sim_tensors
from micrometry.depth.nets import HoleUNet, fused_for_inference, image_statistics
from micrometry.train import LoopConfig, TrainTask

FLIP_DIMS = ([], [3], [2], [2, 3])  # identity, left-right, up-down, both


def site_split(real: RealArrays, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation rows of real images split by site (images of one site are alike)."""
    sites = np.unique(real.site)
    n_val = int(round(len(sites) * val_fraction)) if len(sites) > 1 else 0
    val_sites = np.random.default_rng(seed).choice(sites, size=n_val, replace=False)
    is_val = np.isin(real.site, val_sites)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _gaussian_kernel(sigma: float, dtype, device) -> torch.Tensor:
    r = torch.arange(-3, 4, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (r / max(sigma, 1e-3)) ** 2)
    return k / k.sum()


def random_blur(x: torch.Tensor, generator: torch.Generator, max_sigma: float) -> torch.Tensor:
    """Blur the batch with one random astigmatic Gaussian (sigma_x, sigma_y in [0, max_sigma]):
    a wider, astigmatic real probe on top of the simulator's."""
    sy, sx = (torch.rand(2, generator=generator) * max_sigma).tolist()
    if sy > 0.2:
        k = _gaussian_kernel(sy, x.dtype, x.device).view(1, 1, 7, 1)
        x = nn.functional.conv2d(nn.functional.pad(x, (0, 0, 3, 3), mode="replicate"), k)
    if sx > 0.2:
        k = _gaussian_kernel(sx, x.dtype, x.device).view(1, 1, 1, 7)
        x = nn.functional.conv2d(nn.functional.pad(x, (3, 3, 0, 0), mode="replicate"), k)
    return x


def line_jitter(x: torch.Tensor, generator: torch.Generator, max_px: float) -> torch.Tensor:
    """Shift every image row by its own random sub-pixel amount (scan-line jitter), linearly interpolated."""
    b, _, h, w = x.shape
    sd = torch.rand(b, 1, generator=generator) * max_px
    shift = (torch.randn(b, h, generator=generator) * sd).to(x.device, x.dtype)  # (B, H) pixels
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w) - shift[:, :, None]
    x0 = cols.floor().clamp(0, w - 1)
    frac = (cols - cols.floor()).clamp(0, 1)
    x1 = (x0 + 1).clamp(max=w - 1)
    rows = x[:, 0]
    out = rows.gather(2, x0.long()) * (1 - frac) + rows.gather(2, x1.long()) * frac
    return out.unsqueeze(1)


def charging_ramp(x: torch.Tensor, generator: torch.Generator, max_drift: float) -> torch.Tensor:
    """Multiply by a brightness drift along the slow scan axis (rows), as charging does."""
    b, _, h, _ = x.shape
    drift = ((torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * max_drift).to(x.device, x.dtype)
    ramp = torch.linspace(0, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    return x * (1 + drift * (1 - torch.exp(-3 * ramp)))


class UNetTask(TrainTask):
    """Train an ensemble of :class:`HoleUNet` on simulated pairs and, optionally, real site averages.

    Every member sees the same batches; members differ by initialisation.
    """

    def __init__(self, nets: list[HoleUNet], data: DepthData, device: torch.device, cfg: dict, seed: int,
                 use_real: bool):
        self.nets = nets
        self.cfg = cfg
        sim = data.sim
        train_rows, val_rows = sim.split(cfg["val_fraction"], seed)
        self.x, self.y = sim_tensors(sim, train_rows, cfg["mean_itr"], device)
        self.val_x, self.val_y = sim_tensors(sim, val_rows, False, device)
        self.real_x = None
        if use_real:
            real = data.real
            tr, va = site_split(real, cfg["val_site_fraction"], seed)
            images = torch.from_numpy(real.images.astype(np.float32) / 255.0).unsqueeze(1).to(device)
            depth = torch.from_numpy(real.site_depth.astype(np.float32)).to(device)
            self.real_x, self.real_d = images[tr], depth[tr]
            self.real_val_x, self.real_val_d = images[va], depth[va]
            self.real_val_site = torch.from_numpy(real.site[va]).to(device)
        self.modules = {f"net{i}": net for i, net in enumerate(nets)}
        params = [p for net in nets for p in net.parameters()]
        self.optimizers = {"opt": torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])}
        self.schedulers = {"lr": torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizers["opt"],
                                                                             T_max=max(int(cfg["epochs"]), 1))}
        self._aug = torch.Generator().manual_seed(seed + 1)

    def train_batches(self, epoch: int, generator: torch.Generator):
        self._aug.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
        order = torch.randperm(len(self.x), generator=generator)
        bs = int(self.cfg["batch_size"])
        real_order = None
        if self.real_x is not None and len(self.real_x):
            n_batches = (len(order) + bs - 1) // bs
            rbs = int(self.cfg["real_batch_size"])
            real_order = torch.randint(0, len(self.real_x), (n_batches, rbs), generator=generator)
        return [(order[i:i + bs], None if real_order is None else real_order[k])
                for k, i in enumerate(range(0, len(order), bs))]

    def _augment(self, x: torch.Tensor, y: torch.Tensor | None = None, imaging: bool = True):
        """Flips (input and target alike); with ``imaging``, also a wider probe and more noise."""
        if self.cfg["flips"]:
            dims = FLIP_DIMS[int(torch.randint(0, 4, (1,), generator=self._aug))]
            if dims:
                x = x.flip(dims)
                y = None if y is None else y.flip(dims)
        if imaging and self.cfg["blur_aug"] > 0:
            x = random_blur(x, self._aug, self.cfg["blur_aug"])
        if imaging and self.cfg["jitter_aug"] > 0:
            x = line_jitter(x, self._aug, self.cfg["jitter_aug"])
        if imaging and self.cfg["charging_aug"] > 0:
            x = charging_ramp(x, self._aug, self.cfg["charging_aug"])
        if imaging and self.cfg["noise_aug"] > 0:
            sd = torch.rand(len(x), 1, 1, 1, generator=self._aug).to(x.device) * self.cfg["noise_aug"]
            x = x + sd * torch.randn(x.shape, generator=self._aug).to(x.device)
        return x, y

    def train_step(self, batch) -> dict[str, float]:
        idx, real_idx = batch
        x, y = self._augment(self.x[idx.to(self.x.device)], self.y[idx.to(self.x.device)])
        true_depth = y.flatten(1).amax(1) - self.nets[0].bottom
        losses = {"map": 0.0, "depth": 0.0, "real": 0.0}
        total = 0.0
        if real_idx is not None:
            rx, _ = self._augment(self.real_x[real_idx.to(self.x.device)], imaging=False)
            real_d = self.real_d[real_idx.to(self.x.device)]
            # One pass over simulated and real images together: BatchNorm statistics then see the
            # same mixture in training as its running averages hold at inference.
            x = torch.cat([x, rx])
        n_sim = len(y)
        for net in self.nets:
            shape, depth = net.forward_parts(x)
            pred = net.bottom + depth[:n_sim].view(-1, 1, 1, 1) * shape[:n_sim]
            map_loss = nn.functional.l1_loss(pred, y)
            depth_loss = nn.functional.l1_loss(depth[:n_sim], true_depth)
            loss = map_loss + self.cfg["depth_weight"] * depth_loss
            losses["map"] += map_loss.item() / len(self.nets)
            losses["depth"] += depth_loss.item() / len(self.nets)
            if real_idx is not None:
                real_loss = nn.functional.l1_loss(depth[n_sim:], real_d)
                loss = loss + self.cfg["real_weight"] * real_loss
                losses["real"] += real_loss.item() / len(self.nets)
            total = total + loss
        opt = self.optimizers["opt"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return {k: v for k, v in losses.items() if k != "real" or real_idx is not None}

    def _ensemble_parts(self, x: torch.Tensor):
        shapes, depths = zip(*(net.forward_parts(x) for net in self.nets))
        return torch.stack(shapes).mean(0), torch.stack(depths).mean(0)

    def validate(self) -> dict[str, float]:
        metrics = {}
        if len(self.val_x):
            sq = 0.0
            for start in range(0, len(self.val_x), 1024):
                shape, depth = self._ensemble_parts(self.val_x[start:start + 1024])
                pred = self.nets[0].bottom + depth.view(-1, 1, 1, 1) * shape
                sq += float(((pred - self.val_y[start:start + 1024]) ** 2).sum())
            metrics["val_rmse"] = (sq / self.val_y.numel()) ** 0.5
        if self.real_x is not None and len(self.real_val_x):
            _, depth = self._ensemble_parts(self.real_val_x)
            metrics["val_real_mae"] = float((depth - self.real_val_d).abs().mean())
        return metrics


class UNetMethod(DepthMethod):
    """Convolutional encoder-decoder trained on simulated pairs.

    Parameters
    ----------
    width, unshuffle : int
        Network size (see :class:`HoleUNet`).
    ensemble : int
        Networks trained side by side; predictions are averaged.
    mean_itr : bool
        Train on the mean of each pair's two renders (less noise) instead of each render.
    flips : bool
        Random flip augmentation (holes look the same mirrored).
    blur_aug : float
        Largest sigma (px) of a random Gaussian blur applied to simulated training
        inputs, to cover a real tool's wider probe; 0 turns it off.
    jitter_aug : float
        Largest standard deviation (px) of random per-row shifts (scan-line jitter).
    charging_aug : float
        Largest relative brightness drift along the rows (charging).
    noise_aug : float
        Largest standard deviation (of [0, 1] brightness) of Gaussian noise added to
        simulated training inputs: real tools often image at a lower dose.
    normalize : bool
        Standardise each image before the shape encoder (see :class:`HoleUNet`).
    tta : int
        Test-time flips averaged at prediction: 1 (none), 2 (left-right) or 4.
    lr, weight_decay, batch_size, epochs : training schedule (AdamW, cosine decay).
    depth_weight : float
        Weight of the L1 loss on the per-image etch depth next to the per-pixel L1.
    val_fraction : float
        Simulated base structures held out for ``val_rmse``.
    """

    name = "unet"
    uses: tuple[str, ...] = ("sim",)
    defaults = {"width": 8, "unshuffle": 2, "ensemble": 1, "mean_itr": False, "flips": True, "blur_aug": 1.5,
                "jitter_aug": 0.5, "charging_aug": 0.04, "noise_aug": 0.04, "normalize": True,
                "tta": 1, "lr": 3e-3, "weight_decay": 1e-4, "batch_size": 64, "epochs": 12, "depth_weight": 1.0,
                "val_fraction": 0.1}
    use_real = False
    monitor = "val_rmse"

    def __init__(self, **cfg):
        super().__init__(**cfg)
        if self.cfg["tta"] not in (1, 2, 4):
            from micrometry.errors import InputError

            raise InputError(f"tta must be 1, 2 or 4, got {self.cfg['tta']}")
        self.affine = (1.0, 0.0)  # predicted depth -> corrected depth (unet-weak fits it)
        self.ridge: tuple | None = None  # (mean, scale, coef, intercept) of a ridge calibration

    def build_modules(self) -> dict[str, nn.Module]:
        return {f"net{i}": HoleUNet(int(self.cfg["width"]), int(self.cfg["unshuffle"]),
                                    normalize=bool(self.cfg["normalize"]))
                for i in range(int(self.cfg["ensemble"]))}

    def loop_config(self) -> LoopConfig:
        return LoopConfig(epochs=int(self.cfg["epochs"]), monitor=self.monitor, mode="min", description=self.name)

    def build_task(self, data: DepthData, device: torch.device, seed: int) -> UNetTask:
        data.require(*self.uses)
        self._fused = None
        return UNetTask(list(self.modules.values()), data, device, self.cfg, seed, self.use_real)

    def extra_state(self) -> dict:
        ridge = None if self.ridge is None else [np.asarray(v).tolist() for v in self.ridge]
        return {"affine": list(self.affine), "ridge": ridge}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._fused = None

    def to(self, device):
        self._fused = None
        return super().to(device)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """As :meth:`DepthMethod.predict`, with BatchNorm folded into the convolutions (faster)."""
        if getattr(self, "_fused", None) is None:
            self._fused = {k: fused_for_inference(m) for k, m in self.modules.items()}
        trained, self.modules = self.modules, self._fused
        try:
            return super().predict(images)
        finally:
            self.modules = trained

    def load_extra_state(self, state: dict) -> None:
        self.affine = tuple(state.get("affine", (1.0, 0.0)))
        ridge = state.get("ridge")
        self.ridge = None if ridge is None else tuple(np.asarray(v, dtype=np.float32) for v in ridge)

    def predict_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shape and corrected depth, averaged over the ensemble and the test-time flips."""
        shapes, depths = [], []
        for dims in FLIP_DIMS[: int(self.cfg["tta"])]:
            xf = x.flip(dims) if dims else x
            for net in self.modules.values():
                shape, depth = net.forward_parts(xf)
                shapes.append(shape.flip(dims) if dims else shape)
                depths.append(depth)
        depth = torch.stack(depths).mean(0)
        return torch.stack(shapes).mean(0), self.calibrate(depth, x)

    def calibrate(self, depth: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Corrected depth: the fitted calibration of (network depth, brightness statistics)."""
        if self.ridge is not None:
            features = calibration_features(depth, x)
            mean, scale, coef, intercept = (torch.as_tensor(v, dtype=x.dtype, device=x.device)
                                            for v in self.ridge)
            return ((features - mean) / scale) @ coef + intercept
        return self.affine[0] * depth + self.affine[1]

    def predict_tensor(self, x: torch.Tensor) -> torch.Tensor:
        shape, depth = self.predict_parts(x)
        bottom = next(iter(self.modules.values())).bottom
        return bottom + depth.view(-1, 1, 1, 1) * shape


def calibration_features(depth: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(B, 6)``: the network's depth and the image's brightness statistics."""
    return torch.cat([depth[:, None], image_statistics(x)], dim=1)


def fit_ridge(features: np.ndarray, target: np.ndarray, alpha: float = 1.0) -> tuple:
    """Ridge regression on standardised features; returns ``(mean, scale, coef, intercept)``."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    z = (features - mean) / scale
    intercept = float(target.mean())
    coef = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (target - intercept))
    return (mean.astype(np.float32), scale.astype(np.float32), coef.astype(np.float32), np.float32(intercept))


def fit_site_affine(pred_depth: np.ndarray, site: np.ndarray, site_depth: np.ndarray) -> tuple[float, float]:
    """Least-squares ``a, b`` with ``a * mean_pred(site) + b ~ site average``, one point per site.

    With fewer than 3 sites, or predicted site means that barely vary, only the
    offset is fitted (a slope from two points is noise).
    """
    sites = np.unique(site)
    pred_mean = np.array([pred_depth[site == s].mean() for s in sites])
    true_mean = np.array([site_depth[site == s][0] for s in sites])
    if len(sites) >= 3 and pred_mean.std() > 1e-3:
        a, b = np.polyfit(pred_mean, true_mean, 1)
        return float(a), float(b)
    return 1.0, float((true_mean - pred_mean).mean())


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
    """

    name = "unet-weak"
    uses = ("sim", "real")
    calibrations = ("affine", "ridge", "none")

    def __init__(self, **cfg):
        super().__init__(**cfg)
        if self.cfg["calibration"] not in self.calibrations:
            from micrometry.errors import InputError

            raise InputError(f"calibration must be one of {', '.join(self.calibrations)}, "
                             f"got {self.cfg['calibration']!r}")
    defaults = {**UNetMethod.defaults, "real_weight": 1.0, "real_batch_size": 32, "val_site_fraction": 0.2,
                "calibration": "ridge"}
    use_real = True

    def after_training(self, task: TrainTask, data: DepthData) -> None:
        self.affine, self.ridge = (1.0, 0.0), None
        if self.cfg["calibration"] == "none":
            return
        real = data.real
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


DEPTH_METHODS.register("unet")(UNetMethod)
DEPTH_METHODS.register("unet-weak")(WeakUNetMethod)
