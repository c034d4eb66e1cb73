"""Training: patch sampling, targets, losses, hard patch mining (and the training loop)."""

from os2d.train.losses import LossConfig, Os2dObjective
from os2d.train.mining import MiningConfig, mine_hard_patches
from os2d.train.sampler import MinedPatch, PatchSampler, SamplerConfig, TrainBatch
from os2d.train.targets import assign, remap

__all__ = [
    "LossConfig",
    "MinedPatch",
    "MiningConfig",
    "Os2dObjective",
    "PatchSampler",
    "SamplerConfig",
    "TrainBatch",
    "assign",
    "mine_hard_patches",
    "remap",
]

# the training loop (config, trainer)
from os2d.train.config import TrainConfig, load_train_config  # noqa: E402
from os2d.train.trainer import Trainer, TrainSummary, train  # noqa: E402

__all__ += ["TrainConfig", "TrainSummary", "Trainer", "load_train_config", "train"]
