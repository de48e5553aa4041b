"""``unet``: a convolutional encoder-decoder trained on simulated pairs, and its training task.

``unet`` learns the simulated pairs only (flip and imaging augmentations,
optionally the mean of the two renders as input, no brightness normalisation:
brightness carries depth). :class:`UNetTask` also trains on real images' site
averages when asked: ``unet-weak`` (:mod:`.unet_weak`) does. Both use
:class:`~micrometry.depth.nets.HoleUNet` (height = bottom + depth x shape),
support small ensembles and flip test-time augmentation.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from micrometry.config import Config, param
from micrometry.depth.augment import FLIP_DIMS, hole_frames, imaging_augment, random_flip, random_shape_warp
from micrometry.depth.batchnorm import frozen_batchnorm_statistics, running_batchnorm_statistics
from micrometry.depth.calibration import apply_ridge, calibration_features, check_ridge
from micrometry.depth.dataset import site_split
from micrometry.depth.methods.base import DEPTH_METHODS, DepthData, DepthMethod, input_tensor
from micrometry.depth.nets import HoleUNet, fused_for_inference, top_level
from micrometry.depth.ood import FeatureGaussian
from micrometry.depth.photometry import augmentation_ranges
from micrometry.depth.profiles import closed_dip_depth, excess_variation, fill_dips
from micrometry.depth.renderer import RENDERERS, fit_renderer, render_loss
from micrometry.depth.sim_task import sim_tensors
from micrometry.train import LoopConfig, TrainTask

#: Real images whose predicted shapes' excess variation chooses the epoch (``select="excess"``).
SELECT_IMAGES = 600
#: Simulated pairs per step of the renderer's fit (``render_weight``).
RENDER_BATCH = 64
#: Simulated maps read, and the closed dip (a fraction of a map's depth range) that turns ``fill_dips`` off.
FILL_CHECK_MAPS, FILL_CHECK_DEPTH = 512, 0.02
#: ``geometry="auto"``: the share of real images whose top level lies outside the simulated images'
#: 1-99 % range above which the simulated holes are warped, and the warp then used (profile only).
GEOMETRY_OUTSIDE, AUTO_SHAPE_AUG = 0.5, 0.5
#: ``geometry="auto"`` decides from at least this many simulated images (fewer: no range to judge by)
GEOMETRY_MIN_SIMULATED = 64
#: Offset between ensemble members' renderer seeds (member 0's is a one-network run's ``seed + 2``).
MEMBER_SEED_STRIDE = 1_000


def ema_average(decay: float):
    """A ``multi_avg_fn`` for :class:`~torch.optim.swa_utils.AveragedModel`: an exponential moving
    average whose decay ramps up as ``(1 + n) / (10 + n)`` to ``decay`` (early weights are noise)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))

    return update


def geometry_gap(sim: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    """How far the real images' holes look from the simulated ones, by :func:`~micrometry.depth.nets.top_level`.

    Parameters
    ----------
    sim, real : Tensor
        ``(N, 1, H, W)`` simulated renders and real images in [0, 1].

    Returns
    -------
    dict
        ``top_level_sim_low``/``_high`` (the simulated images' 1st and 99th percentiles),
        ``top_level_real`` (the real images' median) and ``top_level_outside``: the share of real
        images outside the simulated range.
    """
    sim_level, real_level = top_level(sim.float()), top_level(real.float())
    low, high = torch.quantile(sim_level, torch.tensor([0.01, 0.99], dtype=sim_level.dtype))
    outside = ((real_level < low) | (real_level > high)).float().mean()
    return {
        "top_level_sim_low": float(low),
        "top_level_sim_high": float(high),
        "top_level_real": float(real_level.median()),
        "top_level_outside": float(outside),
    }


class UNetTask(TrainTask):
    """Train an ensemble of :class:`HoleUNet` on simulated pairs and, optionally, real site averages.

    Members are trained as independent runs side by side: each has its own initialisation, batch
    order, augmentations and (with ``render_weight``) its own learned renderer; they share the data
    and its held-out splits, so the calibration and the interval are fitted on their average. Member
    0 trains exactly as a one-network run with the same seed. (Members that shared batches and
    renderer did not average their errors away: docs/depth.md, "Independent members".) The
    method's networks (``ema_nets``) are exponential moving averages of the
    trained ones (:class:`~torch.optim.swa_utils.AveragedModel`): with a high
    learning rate the last weights of an epoch swing the predicted depth by
    several nm, their average does not.
    """

    def __init__(
        self,
        ema_nets: list[HoleUNet],
        data: DepthData,
        device: torch.device,
        cfg: UNetMethod.Config,
        seed: int,
        use_real: bool,
    ):
        import copy

        self.ema_nets = ema_nets
        self.nets = [copy.deepcopy(net) for net in ema_nets]
        self.averaged = []
        for ema, net in zip(ema_nets, self.nets, strict=False):
            averaged = AveragedModel(net, multi_avg_fn=ema_average(cfg.ema))
            averaged.module = ema  # average into the method's own network (same weights as ``net`` now)
            self.averaged.append(averaged)
        self.cfg = cfg
        sim = data.sim
        train_rows, val_rows = sim.split(cfg.val_fraction, seed)
        self.x, self.y = sim_tensors(sim, train_rows, cfg.mean_itr, device)
        self.val_x, self.val_y = sim_tensors(sim, val_rows, False, device)
        self.real_x = None
        self.imaging = {
            "blur": cfg.blur_aug,
            "jitter": cfg.jitter_aug,
            "charging": cfg.charging_aug,
            "noise": cfg.noise_aug,
        }
        self.imaging_measured: dict[str, float] = {}
        if use_real and cfg.imaging == "auto":
            # Widen the imaging augmentations to what the real images show (never below the fixed ones).
            sem = sim.sem[train_rows[:2000]].reshape(-1, *sim.sem.shape[2:])
            ranges = augmentation_ranges(
                sem, data.real.images, floor={"blur_aug": cfg.blur_aug, "noise_aug": cfg.noise_aug}
            )
            self.imaging.update(blur=ranges["blur_aug"], noise=ranges["noise_aug"])
            self.imaging_measured = ranges
        self.shape_aug, self.shape_scale = cfg.shape_aug, cfg.shape_scale
        images = input_tensor(data.real.images, device) if use_real else None
        if (
            use_real
            and cfg.geometry == "auto"
            and cfg.shape_aug == 0
            and len(self.x) >= GEOMETRY_MIN_SIMULATED
        ):
            gap = geometry_gap(self.x[:4000], images)  # 2,000 structures' renders, as the imaging ranges
            self.imaging_measured.update(gap)
            if gap["top_level_outside"] > GEOMETRY_OUTSIDE:
                self.shape_aug, self.shape_scale = AUTO_SHAPE_AUG, 0.0
                warnings.warn(
                    f"{gap['top_level_outside']:.0%} of the real images look unlike every simulated one (the "
                    f"top surface at {gap['top_level_real']:+.2f} SD from the mean, the simulated images at "
                    f"{gap['top_level_sim_low']:+.2f} to {gap['top_level_sim_high']:+.2f}): their holes' shape "
                    f"likely lies outside the simulation's; training with shape warps (shape_aug={AUTO_SHAPE_AUG})",
                    stacklevel=2,
                )
        # Each simulated hole's centre and opening, about which the shape augmentation warps it.
        self.frames = hole_frames(self.y) if self.shape_aug > 0 else None
        if use_real:
            real = data.real
            tr, va = site_split(real, cfg.val_site_fraction, seed)
            depth = torch.from_numpy(real.site_depth.astype(np.float32)).to(device)
            self.real_x, self.real_d = images[tr], depth[tr]
            self.real_val_x, self.real_val_d = images[va], depth[va]
            self.real_val_site = torch.from_numpy(real.site[va]).to(device)
            # images whose predicted shapes choose the epoch (select="excess"): no label is read
            self.real_probe_x = torch.cat([self.real_val_x, self.real_x])[:SELECT_IMAGES]
        self.epoch = 0
        self.modules = {
            **{f"net{i}": averaged for i, averaged in enumerate(self.averaged)},
            **{f"train{i}": net for i, net in enumerate(self.nets)},
        }
        params = [p for net in self.nets for p in net.parameters()]
        self.optimizers = {"opt": torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)}
        self.schedulers = {
            "lr": torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizers["opt"], T_max=max(int(cfg.epochs), 1)
            )
        }
        # one augmentation stream (reseeded every epoch by train_batches) and one renderer per member
        self._augs = [torch.Generator() for _ in self.nets]
        self.renderers = [None] * len(self.nets)
        if use_real and cfg.render_weight > 0:
            # learned before the depth networks, from the same simulated pairs (docs/depth.md)
            steps = math.ceil(cfg.render_epochs * len(self.x) / RENDER_BATCH)
            self.renderers = [
                fit_renderer(
                    self.x,
                    self.y,
                    steps,
                    torch.Generator().manual_seed(seed + 2 + MEMBER_SEED_STRIDE * k),
                    batch_size=RENDER_BATCH,
                    kind=cfg.renderer,
                )
                for k in range(len(self.nets))
            ]

    def train_batches(self, epoch: int, generator: torch.Generator):
        """Per step, one ``(simulated rows, real rows)`` batch for each member, from its own shuffle."""
        self.epoch = epoch
        # member 0 draws from the loop's generator as a one-network run does; the others, after it,
        # from their own generators seeded by it
        per_member = [self._member_batches(self._augs[0], generator)]
        for k in range(1, len(self.nets)):
            own = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)) + k)
            per_member.append(self._member_batches(self._augs[k], own))
        return list(zip(*per_member, strict=True))

    def _member_batches(self, aug: torch.Generator, generator: torch.Generator) -> list[tuple]:
        aug.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
        order = torch.randperm(len(self.x), generator=generator)
        bs = int(self.cfg.batch_size)
        real_order = None
        if self.real_x is not None and len(self.real_x):
            n_batches = (len(order) + bs - 1) // bs
            rbs = int(self.cfg.real_batch_size)
            real_order = torch.randint(0, len(self.real_x), (n_batches, rbs), generator=generator)
        return [
            (order[i : i + bs], None if real_order is None else real_order[k])
            for k, i in enumerate(range(0, len(order), bs))
        ]

    def _augment(
        self, aug: torch.Generator, x: torch.Tensor, y: torch.Tensor | None = None, imaging: bool = True
    ):
        """Flips (input and target alike); with ``imaging``, also a wider probe and more noise."""
        if self.cfg.flips:
            x, y = random_flip(x, y, aug)
        if imaging:
            x = imaging_augment(x, aug, **self.imaging)
        return x, y

    def train_step(self, batch) -> dict[str, float]:
        losses = {"map": 0.0, "depth": 0.0, "real": 0.0}
        total = 0.0
        members = zip(self.nets, self.ema_nets, self._augs, self.renderers, batch, strict=True)
        for net, ema, aug, renderer, (idx, real_idx) in members:
            idx = idx.to(self.x.device)
            x, y = self.x[idx], self.y[idx]
            warped = None
            if self.frames is not None:
                x, y, warped = random_shape_warp(
                    x,
                    y,
                    self.frames[idx],
                    aug,
                    self.shape_aug,
                    self.shape_scale,
                    self.cfg.shape_slope,
                )
            x, y = self._augment(aug, x, y)
            true_depth = y.flatten(1).amax(1) - net.bottom
            shape, depth = net.forward_parts(x)
            if warped is None:
                pred = net.bottom + depth.view(-1, 1, 1, 1) * shape
                depth_loss = nn.functional.l1_loss(depth, true_depth)
            else:
                # A warp moves the image's brightness (how much of it is hole, wall or floor) but not the
                # hole's depth, the brightness the depth is read from: warped pairs teach the shape only.
                pred = net.bottom + torch.where(warped, true_depth, depth).view(-1, 1, 1, 1) * shape
                plain = ~warped
                depth_loss = (
                    nn.functional.l1_loss(depth[plain], true_depth[plain])
                    if bool(plain.any())
                    else depth.sum() * 0
                )
            map_loss = nn.functional.l1_loss(pred, y)
            loss = map_loss + self.cfg.depth_weight * depth_loss
            losses["map"] += map_loss.item() / len(self.nets)
            losses["depth"] += depth_loss.item() / len(self.nets)
            if real_idx is not None:
                # A separate pass: BatchNorm normalises each domain with its own batch statistics
                # (measured: one mixed pass made the shapes of real images much worse), and the
                # running statistics stay those of the simulation (AdaBN swaps in the real ones).
                rx = self.real_x[real_idx.to(self.x.device)]
                rd = self.real_d[real_idx.to(self.x.device)]
                consistency = float(self.cfg.consistency)
                teacher = None
                if consistency > 0:
                    with torch.no_grad():  # the averaged net's shape of the plain image is the target
                        teacher = ema.forward_parts(rx)[0]
                rx, teacher = self._augment(aug, rx, teacher, imaging=consistency > 0)
                # "batch": real images normalised by their own batch statistics in training but by the
                # simulation's running statistics at inference; "running": by the latter in both.
                norm = (
                    running_batchnorm_statistics
                    if getattr(self.cfg, "real_bn", "batch") == "running"
                    else frozen_batchnorm_statistics
                )
                with norm(net):
                    real_shape, real_depth = net.forward_parts(rx)
                real_loss = nn.functional.l1_loss(real_depth, rd)
                loss = loss + self.cfg.real_weight * real_loss
                losses["real"] += real_loss.item() / len(self.nets)
                if renderer is not None:
                    # Analysis by synthesis: the shape predicted for a real image, at its site's depth,
                    # must render as that image (site averages teach the depth, never the shape).
                    heights = net.bottom + rd.view(-1, 1, 1, 1) * real_shape
                    rendered = render_loss(renderer, heights, rx)
                    loss = loss + self.cfg.render_weight * rendered
                    losses["render"] = losses.get("render", 0.0) + rendered.item() / len(self.nets)
                if teacher is not None:
                    # Mean teacher: the shape of an augmented real image should be the averaged net's
                    # shape of the plain one (in nm at the site's depth, like the map loss).
                    shape_loss = nn.functional.l1_loss(
                        rd.view(-1, 1, 1, 1) * real_shape, rd.view(-1, 1, 1, 1) * teacher
                    )
                    loss = loss + consistency * shape_loss
                    losses["consistency"] = losses.get("consistency", 0.0) + shape_loss.item() / len(
                        self.nets
                    )
            total = total + loss
        opt = self.optimizers["opt"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        for averaged, net in zip(self.averaged, self.nets, strict=False):
            averaged.update_parameters(net)
        return {k: v for k, v in losses.items() if k != "real" or real_idx is not None}

    def train(self, mode: bool = True) -> None:
        for net in self.nets:
            net.train(mode)
        for averaged in self.averaged:
            averaged.train(False)  # never updated by gradients; BatchNorm buffers are copied from the nets

    def _ensemble_parts(self, x: torch.Tensor):
        shapes, depths = zip(*(net.forward_parts(x) for net in self.ema_nets), strict=False)
        return torch.stack(shapes).mean(0), torch.stack(depths).mean(0)

    def validate(self) -> dict[str, float]:
        metrics = {}
        if len(self.val_x):
            sq = 0.0
            for start in range(0, len(self.val_x), 1024):
                shape, depth = self._ensemble_parts(self.val_x[start : start + 1024])
                pred = self.ema_nets[0].bottom + depth.view(-1, 1, 1, 1) * shape
                sq += float(((pred - self.val_y[start : start + 1024]) ** 2).sum())
            metrics["val_rmse"] = (sq / self.val_y.numel()) ** 0.5
        if self.real_x is not None and len(self.real_val_x):
            _, depth = self._ensemble_parts(self.real_val_x)
            metrics["val_real_mae"] = float((depth - self.real_val_d).abs().mean())
        if self.real_x is not None and getattr(self.cfg, "select", "last") == "excess":
            if self.epoch + 1 >= self.cfg.select_from * self.cfg.epochs:
                # the shapes as predicted (running statistics, not the training batch's)
                shape, depth = self._ensemble_parts(self.real_probe_x)
                heights = self.ema_nets[0].bottom + depth.view(-1, 1, 1) * shape.squeeze(1)
                metrics["val_real_excess_nm"] = float(excess_variation(heights))
        return metrics


class UNetMethod(DepthMethod):
    """Convolutional encoder-decoder trained on simulated pairs.

    Parameters
    ----------
    width, unshuffle : int
        Network size (see :class:`HoleUNet`).
    ensemble : int
        Networks trained side by side as independent runs (own initialisation, batch order,
        augmentations and renderer; see :class:`UNetTask`); predictions are averaged.
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
    shape_aug : float
        Share of the simulated pairs whose hole is warped about its centre, image and depth map
        alike (:func:`~micrometry.depth.augment.random_shape_warp`): other opening sizes and radial
        profiles (taper, bottom rounding, wall curvature) than the simulation's geometry prior
        draws; 0: off. A warped pair teaches the shape only (its depth loss is left out and its map
        is composed with the true depth): a warp moves the image's brightness, not the hole's depth.
    shape_scale, shape_slope : float
        Largest absolute log of the warped opening's scale and of the radial profile's slope at the
        hole's centre (see :func:`~micrometry.depth.augment.radial_warp_grid`).
    normalize : bool
        Standardise each image before the shape encoder (see :class:`HoleUNet`).
    centre : str
        What the standardisation subtracts: ``"mean"`` or ``"median"`` (see :class:`HoleUNet`).
    render_weight : float
        ``unet-weak`` only: weight of the analysis-by-synthesis loss on real images
        (:func:`~micrometry.depth.renderer.render_loss`): the shape predicted for a real image, at its
        site's depth, rendered by a renderer learned from the simulated pairs (``render_epochs`` passes
        over them, before training), must match the image up to gain, offset and blur; 0: off.
    renderer : str
        Which renderer ``render_weight`` learns: ``"unet"`` (:class:`~micrometry.depth.renderer.SemRenderer`,
        it sees the whole hole) or ``"local"`` (:class:`~micrometry.depth.renderer.LocalSemRenderer`,
        each pixel's 14-px neighbourhood).
    tta : int
        Test-time flips averaged at prediction: 1 (none), 2 (left-right) or 4.
    fill_dips : float
        At prediction, fill every closed dip of the predicted shape shallower than this fraction
        of the hole's depth (:func:`~micrometry.depth.profiles.fill_dips`; holes and basins cut by
        the crop's edge are kept as they are); 0: off.
    lr, weight_decay, batch_size, epochs : training schedule (AdamW, cosine decay).
    depth_weight : float
        Weight of the L1 loss on the per-image etch depth next to the per-pixel L1.
    ema : float
        Decay of the exponential moving average of the weights that predicts.
    val_fraction : float
        Simulated base structures held out for ``val_rmse``.
    """

    name = "unet"
    uses: tuple[str, ...] = ("sim",)

    @dataclass
    class Config(Config):
        width: int = param(8, ge=1)
        unshuffle: int = param(2, ge=1)
        ensemble: int = param(1, ge=1)
        mean_itr: bool = param(False)
        flips: bool = param(True)
        blur_aug: float = param(1.5, ge=0)
        jitter_aug: float = param(0.5, ge=0)
        charging_aug: float = param(0.04, ge=0)
        noise_aug: float = param(0.04, ge=0)
        shape_aug: float = param(0.0, ge=0, le=1)
        shape_scale: float = param(0.25, ge=0)
        shape_slope: float = param(1.5, ge=0)
        normalize: bool = param(True)
        centre: str = param("mean", choices=("mean", "median"))
        render_weight: float = param(0.0, ge=0)
        render_epochs: float = param(16.0, gt=0)
        renderer: str = param("unet", choices=tuple(RENDERERS))
        tta: int = param(1, choices=(1, 2, 4))
        fill_dips: float = param(0.0, ge=0, lt=1)
        lr: float = param(3e-3, ge=0)
        weight_decay: float = param(1e-4, ge=0)
        batch_size: int = param(64, ge=1)
        epochs: int = param(12, ge=1)
        depth_weight: float = param(1.0, ge=0)
        ema: float = param(0.995, ge=0, lt=1)
        val_fraction: float = param(0.1, ge=0, lt=1)

    use_real = False
    monitor, monitor_mode = "val_rmse", "min"

    def __init__(self, **cfg):
        super().__init__(**cfg)
        self.affine = (1.0, 0.0)  # predicted depth -> corrected depth (unet-weak fits it)
        self.ridge: tuple | None = None  # (mean, scale, coef, intercept) of a ridge calibration
        # What unet-weak fits on real images: the half-width (nm) of a 90 % interval of a hole's
        # depth, and a model of the training images' features that flags unlike images.
        self.interval_nm: float | None = None
        self.ood: FeatureGaussian | None = None
        self.imaging_measured: dict[str, float] = {}  # the augmentation ranges read off the data
        self._collect: list | None = None

    def build_modules(self) -> dict[str, nn.Module]:
        return {
            f"net{i}": HoleUNet(
                int(self.cfg.width),
                int(self.cfg.unshuffle),
                normalize=bool(self.cfg.normalize),
                centre=str(self.cfg.centre),
            )
            for i in range(int(self.cfg.ensemble))
        }

    def loop_config(self) -> LoopConfig:
        return LoopConfig(
            epochs=int(self.cfg.epochs),
            monitor=self.monitor,
            mode=self.monitor_mode,
            description=self.name,
        )

    def build_task(self, data: DepthData, device: torch.device, seed: int) -> UNetTask:
        data.require(*self.uses)
        if self.cfg.fill_dips:
            self.check_fill_dips(data.sim.depth)
        self._fused = None
        self._seed = seed
        task = UNetTask(list(self.modules.values()), data, device, self.cfg, seed, self.use_real)
        self.imaging_measured = dict(task.imaging_measured)
        return task

    def check_fill_dips(self, sim_maps: np.ndarray) -> None:
        """Turn ``fill_dips`` off, with a warning, if the user's simulated maps hold closed dips
        (:func:`~micrometry.depth.profiles.closed_dip_depth`): then a dip may be a true shape."""
        rows = np.linspace(0, len(sim_maps) - 1, min(len(sim_maps), FILL_CHECK_MAPS)).astype(int)
        depth = closed_dip_depth(torch.from_numpy(np.asarray(sim_maps[rows], np.float32)))
        share = float((depth > FILL_CHECK_DEPTH).float().mean())
        if share > 0.01:
            warnings.warn(
                f"fill_dips is off: {share:.0%} of the simulated depth maps hold a closed dip deeper than "
                f"{FILL_CHECK_DEPTH:.0%} of their depth range, so a predicted dip may be a true shape",
                stacklevel=2,
            )
            self.cfg.fill_dips = 0.0

    def extra_state(self) -> dict:
        ridge = None if self.ridge is None else [np.asarray(v).tolist() for v in self.ridge]
        return {
            "affine": list(self.affine),
            "ridge": ridge,
            "interval_nm": self.interval_nm,
            "ood": None if self.ood is None else self.ood.to_state(),
            "imaging_measured": {k: float(v) for k, v in self.imaging_measured.items()},
        }

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
        self.affine = tuple(float(v) for v in state.get("affine", (1.0, 0.0)))
        if len(self.affine) != 2 or not np.isfinite(self.affine).all():
            raise ValueError(f"affine calibration must be two finite numbers, got {self.affine}")
        ridge = state.get("ridge")
        self.ridge = None if ridge is None else check_ridge(ridge)
        self.interval_nm = state.get("interval_nm")
        self.ood = None if state.get("ood") is None else FeatureGaussian.from_state(state["ood"])
        self.imaging_measured = dict(state.get("imaging_measured", {}))

    def predict_parts(self, x: torch.Tensor, features: bool = False):
        """Shape and corrected depth, averaged over the ensemble and the test-time flips; with
        ``features``, also the first network's depth-head input of the plain image (for :attr:`ood`)."""
        shapes, depths, first = [], [], None
        for dims in FLIP_DIMS[: int(self.cfg.tta)]:
            xf = x.flip(dims) if dims else x
            for net in self.modules.values():
                shape, depth, pooled = net.forward_features(xf)
                first = pooled if first is None else first
                shapes.append(shape.flip(dims) if dims else shape)
                depths.append(depth)
        depth = torch.stack(depths).mean(0)
        parts = (torch.stack(shapes).mean(0), self.calibrate(depth, x))
        return (*parts, first) if features else parts

    def calibrate(self, depth: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Corrected depth: the fitted calibration of (network depth, brightness statistics)."""
        if self.ridge is not None:
            return apply_ridge(self.ridge, calibration_features(depth, x))
        return self.affine[0] * depth + self.affine[1]

    def predict_tensor(self, x: torch.Tensor) -> torch.Tensor:
        shape, depth, pooled = self.predict_parts(x, features=True)
        if self._collect is not None:  # predict_report: keep what the per-image report needs
            self._collect.append((depth.float().cpu().numpy(), pooled.float().cpu().numpy()))
        if self.cfg.fill_dips:
            shape = fill_dips(shape.squeeze(1), float(self.cfg.fill_dips)).unsqueeze(1)
        bottom = next(iter(self.modules.values())).bottom
        return bottom + depth.view(-1, 1, 1, 1) * shape

    def predict_report(self, images: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        """Height maps and, per image, the predicted hole depth with its 90 % interval and the OOD score.

        Returns
        -------
        maps : ndarray
            As :meth:`predict`.
        report : dict or None
            ``depth_nm``, ``depth_low_nm``, ``depth_high_nm`` (90 % interval of the
            hole's depth; NaN where the model has no calibrated interval),
            ``ood_score`` (about 1 or less for images like the training data) and
            ``ood`` (bool: unlike the training data; the interval does not hold
            there). None for a model that fitted neither (``unet``: no real images).
        """
        if self.interval_nm is None and self.ood is None:
            return self.predict(images), None
        self._collect = []
        try:
            maps = self.predict(images)
            collected, self._collect = self._collect, None
        finally:
            self._collect = None
        depth = np.concatenate([d for d, _ in collected]) if collected else np.zeros(0, np.float32)
        pooled = np.concatenate([f for _, f in collected]) if collected else np.zeros((0, 1), np.float32)
        half = float("nan") if self.interval_nm is None else float(self.interval_nm)
        score = self.ood.score(pooled) if self.ood is not None else np.full(len(depth), np.nan)
        flagged = score > self.ood.threshold if self.ood is not None else np.zeros(len(depth), bool)
        return maps, {
            "depth_nm": depth,
            "depth_low_nm": depth - half,
            "depth_high_nm": depth + half,
            "ood_score": score,
            "ood": flagged,
        }


DEPTH_METHODS.register("unet")(UNetMethod)
