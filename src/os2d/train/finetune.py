"""The ``os2d finetune`` recipe: a short :class:`~os2d.train.config.TrainConfig` that adapts a trained model
(the shipped default by default) to a user's few annotated photos on a CPU, in minutes.

It is the default model's own recipe (``recipes/default_model/train.yaml``: ranked-list loss with target
remapping, AdamW, cosine schedule, 2 patches and up to 6 classes per step, backbone frozen but for its last
blocks) cut down to a few hundred steps with a short warm-up, plus one change: a localisation loss (weight 0.2,
the reference's V1 value). Without it, on a few photos the TransformNet learns to move its boxes off the
objects (remapping then finds no positives, and the loss falls to zero): on the tuning brands (README
"Fine-tuning on your own photos") mAP fell from 47.2 to 8.3 in 60 steps; with it, it rose. The held-out images are
evaluated before the first and after the last step at the default inference settings (``image_size`` "auto",
one scale, as ``os2d detect`` runs), so ``best.pt`` is the better of the starting model and the fine-tuned one
on the held-out images; nothing else is chosen on them.

    >>> config = finetune_config(model_config, train_data=train_spec, val_data=heldout_spec, num_classes=3,
    ...                          output_dir="run")
    >>> summary = os2d.train.train(config)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from os2d.config import InferenceConfig, ModelConfig
from os2d.data.spec import DatasetSpec
from os2d.train.config import (
    EvalConfig,
    FreezeConfig,
    InitConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
)
from os2d.train.losses import LossConfig
from os2d.train.sampler import SamplerConfig

DEFAULT_STEPS = 200
"""Steps of a fine-tune when ``--steps`` is not given: about 2 minutes on an idle 2-core CPU (0.6 s per step), and
on the tuning brands better than 60 or 120 (README "Fine-tuning on your own photos")."""


@dataclass(frozen=True)
class FinetunePreset:
    """The fixed part of the recipe (the run's data, length, seed and output folder come as arguments)."""

    patch_size: int = 512  # training patches P x P (the default model: 560)
    batch_size: int = 2  # patches per step
    max_class_batch: int = 6  # class images per step: the classes present plus random others, at most this many
    lr: float = 1e-4  # AdamW, as the default model's stage 1
    weight_decay: float = 1e-4
    warmup_iters: int = 10  # linear warm-up (at most a fifth of the steps), then cosine down to min_lr_ratio
    min_lr_ratio: float = 0.05
    backbone_train_last: int = 3  # trained backbone blocks at its end (the TransformNet is trained too)
    loc_weight: float = 0.2  # localisation loss: keeps the TransformNet's boxes on the objects (see above)
    checkpoint_every: int = 25  # steps between resumable checkpoints
    keep_checkpoints: int = 2
    log_every: int = 25

    def __post_init__(self) -> None:
        if min(self.patch_size, self.batch_size, self.max_class_batch, self.checkpoint_every, self.log_every) < 1:
            raise ValueError("finetune preset: sizes, checkpoint_every and log_every must be positive")
        if self.warmup_iters < 0 or self.backbone_train_last < 0 or self.keep_checkpoints < 0 or self.loc_weight < 0:
            raise ValueError("finetune preset: warmup_iters, backbone_train_last, keep_checkpoints and loc_weight "
                             "must be >= 0")


def finetune_config(model: ModelConfig, *, train_data: DatasetSpec, val_data: DatasetSpec, num_classes: int,
                    output_dir: str | Path, weights: str = "default", steps: int = DEFAULT_STEPS, seed: int = 0,
                    preset: FinetunePreset = FinetunePreset()) -> TrainConfig:
    """The training config of one fine-tune.

    Args:
        model: the architecture of ``weights`` (``load_model(weights).config``): the run must build the same.
        train_data, val_data: the training images and the held-out images (evaluated at steps 0 and ``steps``).
        num_classes: classes of the dataset (the class batch is at most ``min(num_classes, max_class_batch)``).
        weights: where the model starts (an os2d weights name or file).
        steps: optimizer steps (``max_iter``); also the evaluation interval, so the held-out images are
            evaluated exactly twice.

    Raises:
        ValueError: ``steps`` or ``num_classes`` below 1, or a config the trainer would refuse.
    """
    if steps < 1 or num_classes < 1:
        raise ValueError(f"finetune: need steps >= 1 and at least one class, got steps={steps}, "
                         f"num_classes={num_classes}")
    p = preset
    return TrainConfig(
        model=model,
        init=InitConfig(pretrained_backbone=False, weights=weights),
        train_data=train_data,
        val_data=val_data,
        sampler=SamplerConfig(patch_size=p.patch_size, batch_size=p.batch_size,
                              class_batch_size=min(num_classes, p.max_class_batch), random_negatives=True,
                              class_image_size=model.class_image_size),
        loss=LossConfig(kind="rll", loc_weight=p.loc_weight, remap=True, remap_pos_iou=0.7, neg_margin=0.3),
        optim=OptimConfig(name="adamw", lr=p.lr, weight_decay=p.weight_decay, max_grad_norm=100.0),
        schedule=ScheduleConfig(kind="cosine", warmup_iters=min(p.warmup_iters, steps // 5),
                                min_lr_ratio=p.min_lr_ratio),
        freeze=FreezeConfig(backbone=True, backbone_train_last=p.backbone_train_last),
        eval=EvalConfig(inference=InferenceConfig(), at_start=True, per_class=True),
        max_iter=steps,
        eval_every=steps,
        checkpoint_every=min(p.checkpoint_every, steps),
        keep_checkpoints=p.keep_checkpoints,
        log_every=p.log_every,
        seed=seed,
        output_dir=str(output_dir),
        cache_images=True,
    )


__all__ = ["DEFAULT_STEPS", "FinetunePreset", "finetune_config"]
