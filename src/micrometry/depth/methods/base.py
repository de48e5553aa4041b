"""What every depth-from-SEM method is, and how one is trained and reloaded.

A method (:class:`DepthMethod`) turns 72x48 SEM images into height maps. It is
registered by name in :data:`DEPTH_METHODS` (every module of this package is
imported on the first look-up); its constructor takes only hyper-parameters
(its :attr:`DepthMethod.Config` dataclass), so
``DEPTH_METHODS.create(name, **config)`` rebuilds it.

Training goes through the shared loop once for all methods::

    method = DEPTH_METHODS.create("unet", width=8)
    data = DepthData.load("DATA", method.uses)
    metrics = train_method(method, data, RunDir.for_training("RUN"))
    ...
    method = load_depth_model("RUN")       # config.json + checkpoints/best.pt
    heights = method.predict(images)       # (N, 72, 48) uint8 -> float32 nm

:func:`train_method` calls :meth:`DepthMethod.build_task` (networks, optimisers,
batches for :func:`micrometry.train.fit`), trains, reloads the best epoch,
calls :meth:`DepthMethod.after_training` (e.g. to fit a calibration or build a
lookup bank) and stores :meth:`DepthMethod.state_dict` in ``best.pt`` under
``"model"``: everything :meth:`DepthMethod.predict` needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from micrometry.config import Config, make_config
from micrometry.depth.dataset import IMAGE_SHAPE, RealArrays, SimArrays, index_dataset, load_real, load_sim
from micrometry.errors import CheckpointError, DatasetError, InputError
from micrometry.modelfile import ExportedModel
from micrometry.registry import Registry
from micrometry.train import (
    LoopConfig,
    RunDir,
    TrainTask,
    fit,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)
from micrometry.train.loop import select_device

DEPTH_METHODS = Registry("depth method", package="micrometry.depth.methods")

# The method ``micrometry depth train`` uses when none is named (the best on bench/depth.py).
DEFAULT_METHOD = "unet-weak"


@dataclass
class DepthData:
    """What a method trains on; either part may be missing.

    Attributes
    ----------
    sim : SimArrays or None
        Paired simulated SEM renders and depth maps.
    real : RealArrays or None
        Real SEM images with their Depth_* folder and their site's average depth.
    """

    sim: SimArrays | None = None
    real: RealArrays | None = None

    @classmethod
    def load(cls, root: str | Path, parts: Iterable[str] = ("sim", "real")) -> DepthData:
        """Read the parts a method uses (``"sim"``, ``"real"``) from a dataset folder.

        Raises
        ------
        DatasetError
            The dataset breaks its layout or lacks a part that is asked for.
        """
        index = index_dataset(root)
        index.raise_for_errors()
        parts = set(parts)
        if "sim" in parts and not index.sim:
            raise DatasetError("this method needs simulation_data/ (paired SEM and depth maps)", index.root)
        if "real" in parts and not index.real:
            raise DatasetError(
                "this method needs train/SEM real images with train/average_depth.csv", index.root
            )
        return cls(
            sim=load_sim(index) if "sim" in parts else None,
            real=load_real(index) if "real" in parts else None,
        )

    def require(self, *parts: str) -> None:
        for part in parts:
            if getattr(self, part) is None:
                raise DatasetError(f"this method needs the {part!r} part of the dataset")


class DepthMethod:
    """Base class of depth methods.

    Subclasses set :attr:`name`, :attr:`Config` (a :class:`~micrometry.config.Config`
    dataclass: every hyper-parameter with its type, default and range; the
    constructor refuses unknown names and bad values) and :attr:`uses`, and
    implement :meth:`build_modules`, :meth:`build_task` and :meth:`predict_tensor`
    (or :meth:`predict`). Networks live in :attr:`modules`, built from the
    hyper-parameters alone, so that :meth:`state_dict` and
    :meth:`load_state_dict` work without data.
    """

    name: str = "depth-method"
    Config: type[Config] = Config
    uses: tuple[str, ...] = ("sim",)
    #: Hyper-parameters whose default has changed, with the value that every model saved before the
    #: change was trained with: a saved configuration without the key is read with it.
    former_defaults: dict[str, Any] = {}

    def __init__(self, **cfg: Any):
        self.cfg = make_config(self.Config, cfg, f"method {self.name!r}")
        self.device = torch.device("cpu")
        self.modules: dict[str, torch.nn.Module] = self.build_modules()

    def build_modules(self) -> dict[str, torch.nn.Module]:
        """Freshly initialised networks; :func:`train_method` calls it again after seeding."""
        return {}

    # -- what a run folder records ---------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-able hyper-parameters; ``DEPTH_METHODS.create(name, **config())`` rebuilds the method."""
        return self.cfg.to_dict()

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`predict` needs (network weights and any fitted extras)."""
        return {"modules": {k: m.state_dict() for k, m in self.modules.items()}, "extra": self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, m in self.modules.items():
            m.load_state_dict(state["modules"][k])
        self.load_extra_state(state.get("extra", {}))

    def extra_state(self) -> dict[str, Any]:
        """Fitted non-network state (e.g. a calibration) that :meth:`predict` uses."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def to(self, device: torch.device | str) -> DepthMethod:
        self.device = torch.device(device)
        for m in self.modules.values():
            m.to(self.device)
        return self

    # -- training --------------------------------------------------------
    def build_task(self, data: DepthData, device: torch.device, seed: int) -> TrainTask:
        """A task for :func:`micrometry.train.fit` that trains this method's :attr:`modules`."""
        raise NotImplementedError

    def loop_config(self) -> LoopConfig:
        """Default epochs, time budget and monitored metric of this method."""
        return LoopConfig(epochs=10, monitor="val_rmse", mode="min", description=self.name)

    def kept_checkpoint(self, run: RunDir) -> Path:
        """The checkpoint whose weights become the model (the monitored metric's best epoch)."""
        return run.best_checkpoint()

    def after_training(self, task: TrainTask, data: DepthData) -> None:
        """Called once with the kept epoch's weights loaded: fit whatever comes after the networks."""

    # -- inference -------------------------------------------------------
    batch_size: int = 2048

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Height maps of SEM images.

        Parameters
        ----------
        images : ndarray
            ``(N, 72, 48)`` uint8.

        Returns
        -------
        ndarray
            ``(N, 72, 48)`` float32 heights (nm, the depth-map pixel scale).
        """
        images = np.asarray(images)
        if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            raise InputError(f"expected images of shape (N, 72, 48), got {images.shape}")
        out = np.empty(images.shape, dtype=np.float32)
        for m in self.modules.values():
            m.eval()
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + self.batch_size]))
                x = chunk.to(self.device).float().div_(255.0).unsqueeze(1)
                out[start : start + len(chunk)] = self.predict_tensor(x).squeeze(1).float().cpu().numpy()
        return out

    def predict_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 72, 48)`` images in [0, 1] -> ``(B, 1, 72, 48)`` heights in nm."""
        raise NotImplementedError


def input_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(N, 72, 48)`` uint8 images -> the networks' ``(N, 1, 72, 48)`` float input in [0, 1]."""
    return torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0).unsqueeze(1).to(device)


# -- training and reloading ------------------------------------------------


def train_method(
    method: DepthMethod,
    data: DepthData,
    run: RunDir,
    resume: bool = False,
    time_budget_s: float | None = None,
    epochs: int | None = None,
    seed: int = 0,
    device: str = "auto",
    extra_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``method`` on ``data`` into the run folder ``run`` with the shared loop.

    Parameters
    ----------
    method : DepthMethod
    data : DepthData
    run : RunDir
        From :meth:`RunDir.for_training`; ``config.json`` is written here.
    resume : bool
        Continue from ``run``'s last checkpoint (same seed: same result).
    time_budget_s, epochs : optional
        Override the method's :meth:`DepthMethod.loop_config`.
    seed : int
        Seeds initialisation and shuffling.
    device : str
        ``auto`` (CUDA if present), ``cpu``, ``cuda``...
    extra_config : dict, optional
        More entries for ``config.json`` (e.g. the dataset path).

    Returns
    -------
    dict
        ``metrics.json``'s content.
    """
    device_ = select_device(device)
    if epochs is not None and not resume and hasattr(method.cfg, "epochs"):
        # A fresh run's epoch count is the method's own: its learning-rate schedule spans it (a cosine
        # schedule for 36 epochs run for 60 would climb back up after epoch 36).
        method.cfg.epochs = int(epochs)
    loop = method.loop_config()
    loop.seed = seed
    if epochs is not None:
        loop.epochs = epochs
    if time_budget_s is not None:
        loop.time_budget_s = time_budget_s
    config = {
        "method": method.name,
        "method_config": method.config(),
        "seed": seed,
        "epochs": loop.epochs,
        "time_budget_s": loop.time_budget_s,
        **(extra_config or {}),
    }
    if not resume:
        run.write_config(config)
    seed_everything(seed)
    if type(method).build_modules is not DepthMethod.build_modules:
        method.modules = method.build_modules()  # initialisation depends on the seed only
    method.to(device_)
    task = method.build_task(data, device_, seed)
    payload = {"method": method.name, "method_config": method.config()}
    fit(task, run, loop, resume=resume, extra_payload=payload)

    # Predict from the best epoch (or the one the method keeps): reload it, let the method finish,
    # store what predict needs where loaders look for it.
    best_path = run.best_checkpoint()
    best = load_checkpoint(method.kept_checkpoint(run), map_location=device_)
    task.load_state_dict(best["state"])
    task.train(False)
    with torch.no_grad():
        method.after_training(task, data)
    best["model"] = method.state_dict()
    best.pop("format", None)
    best.pop("saved_at", None)
    save_checkpoint(best_path, best)
    run.log(f"saved predict-ready model to {best_path.name}")
    return run.read_metrics()


#: What ``--model shipped`` (and no ``--model``) means for depth: this exported folder in the package.
SHIPPED = "shipped"
SHIPPED_DIR = ("assets", "models", "depth-default")
#: What the shared DepthMethod.predict does to an image before the networks see it.
PREPROCESSING = {"input": "72x48 gray SEM image, uint8", "normalise": "divide by 255"}


def shipped_model_dir() -> Path:
    """The exported depth model that ships with the package (``--model shipped``)."""
    from importlib import resources

    from micrometry.modelfile import is_model_folder

    path = Path(str(resources.files("micrometry").joinpath(*SHIPPED_DIR)))
    if not is_model_folder(path):
        raise CheckpointError(
            "micrometry was installed without its shipped depth model; pass a run folder", path
        )
    return path


def export_run(run_dir: str | Path) -> ExportedModel:
    """A finished depth run as an exported model (in memory): what ``micrometry export`` writes.

    Raises
    ------
    CheckpointError
        Missing or corrupt run folder or checkpoint (a hostile pickle is refused
        unread), a particle run, an unknown method, or a run whose training did not finish.
    """
    from micrometry.modelfile import ExportedModel, provenance, refuse_other_job

    run = RunDir.existing(run_dir)
    config = run.read_config()
    name = config.get("method")
    if not isinstance(name, str):
        refuse_other_job(run.path, "depth")
        raise CheckpointError("config.json names no 'method'", run.config_path)
    if name not in DEPTH_METHODS:
        raise CheckpointError(f"run was trained with unknown method {name!r}", run.config_path)
    ckpt_path = run.best_checkpoint()
    ckpt = load_checkpoint(ckpt_path)
    if "model" not in ckpt:
        raise CheckpointError(
            "training did not finish (pass --resume to `depth train` to finish it)", ckpt_path
        )
    method_config = ckpt.get("method_config", config.get("method_config", {}))
    return ExportedModel(
        job="depth",
        model=name,
        settings={"method_config": method_config},
        state=ckpt["model"],
        preprocessing=PREPROCESSING,
        provenance=provenance(run.path, run.read_metrics()),
        source=ckpt_path,
    )


def method_from_export(exported: ExportedModel, device: str = "auto") -> DepthMethod:
    """Rebuild a depth method from an exported model (a folder, or a run exported in memory).

    Raises
    ------
    CheckpointError
        An unknown method, or settings and weights that do not fit it.
    """
    if exported.model not in DEPTH_METHODS:
        raise CheckpointError(f"unknown depth method {exported.model!r}", exported.source)
    try:
        saved = exported.settings.get("method_config", {})
        former = DEPTH_METHODS.get(exported.model).former_defaults
        method = DEPTH_METHODS.create(exported.model, **{**former, **saved})
        method.load_state_dict(exported.state)
    except (
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        RuntimeError,
    ) as exc:  # e.g. a particle model's weights
        detail = " ".join(str(exc).split())[:160]
        raise CheckpointError(
            f"model does not fit method {exported.model!r} ({type(exc).__name__}: {detail})", exported.source
        ) from None
    return method.to(select_device(device))


def load_depth_model(name_or_path: str | Path = SHIPPED, device: str = "auto") -> DepthMethod:
    """A trained method from a run folder, an exported model folder, or ``"shipped"``.

    A run folder (``config.json`` and the best checkpoint) is exported in memory
    and goes the same way as an exported folder.

    Raises
    ------
    CheckpointError
        Missing or corrupt run, model or checkpoint, a hostile file ("not a
        micrometry model"), a model of the particle job, an unknown method, or a
        run whose training did not finish.
    """
    from micrometry.modelfile import is_model_folder, read_model

    path = shipped_model_dir() if str(name_or_path) == SHIPPED else Path(name_or_path)
    if is_model_folder(path):
        return method_from_export(read_model(path, job="depth"), device=device)
    return method_from_export(export_run(path), device=device)
