"""The one training loop both jobs use, and the run folders it writes."""

from micrometry.train import distributed
from micrometry.train.loop import LoopConfig, fit, seed_everything, select_device
from micrometry.train.run import RunDir, load_checkpoint, save_checkpoint
from micrometry.train.task import TrainTask

__all__ = [
    "LoopConfig",
    "RunDir",
    "TrainTask",
    "distributed",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
    "seed_everything",
    "select_device",
]
