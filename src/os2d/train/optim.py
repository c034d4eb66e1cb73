"""Optimiser, learning-rate schedule and parameter freezing of a training run.

The schedule is a pure function of the iteration (:func:`schedule_factor`; :func:`lr_at` for a training config),
so resuming needs only the step number. TransformNet pretraining (:mod:`os2d.pretrain.trainer`) uses it too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from os2d.model.os2d import Os2dModel
from os2d.train.config import FreezeConfig, OptimConfig, ScheduleConfig


def apply_freeze(model: Os2dModel, freeze: FreezeConfig) -> list[nn.Parameter]:
    """Set ``requires_grad`` from ``freeze`` and return the trainable parameters (in module order)."""
    for p in model.backbone.parameters():
        p.requires_grad_(not freeze.backbone)
    if freeze.backbone and freeze.backbone_train_last:
        if not hasattr(model.backbone, "blocks"):
            raise ValueError(f"{type(model.backbone).__name__} does not list its blocks "
                             "(freeze.backbone_train_last needs a backbone with blocks())")
        blocks = model.backbone.blocks()
        if freeze.backbone_train_last > len(blocks):
            raise ValueError(f"freeze.backbone_train_last={freeze.backbone_train_last} but the backbone has "
                             f"{len(blocks)} blocks")
        for block in blocks[-freeze.backbone_train_last:]:
            for p in block.parameters():
                p.requires_grad_(True)
    for p in model.transform_net.parameters():
        p.requires_grad_(not freeze.transform_net)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (check the freeze section)")
    return params


def build_optimizer(params: list[nn.Parameter], config: OptimConfig) -> torch.optim.Optimizer:
    """SGD with momentum (reference) or AdamW; weight decay on every trainable parameter, as the reference."""
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.name == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.name!r}")


def schedule_factor(step: int, total_steps: int, *, kind: str = "none", milestones: Sequence[int] = (),
                    gamma: float = 0.1, min_lr_ratio: float = 0.0, warmup_steps: int = 0, warmup_factor: float = 0.0,
                    warmup_counts_current: bool = False, decay_after_warmup: bool = False) -> float:
    """Multiplier of the base lr for the update made after ``step`` completed updates (0-based).

    Args:
        kind: ``none`` (constant), ``multistep`` (times ``gamma`` at each of ``milestones``) or ``cosine``
            (half a cosine from 1 down to ``min_lr_ratio`` at ``total_steps``).
        warmup_steps: linear warm-up from ``warmup_factor`` to 1 over the first ``warmup_steps`` updates, with
            ``alpha = step / warmup_steps`` (``(step + 1) / warmup_steps`` when ``warmup_counts_current``).
        decay_after_warmup: the warm-up alone sets the lr while it lasts and the decay starts when it ends
            (its step counted from ``warmup_steps``); otherwise the decay runs from step 0 and the warm-up
            multiplies it.
    """
    start = warmup_steps if decay_after_warmup else 0
    if kind == "multistep":
        factor = gamma ** sum(step - start >= m for m in milestones)
    elif kind == "cosine":
        t = min(max(step - start, 0) / max(total_steps - start, 1), 1.0)
        factor = min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    else:
        factor = 1.0
    if step < warmup_steps:
        alpha = (step + 1 if warmup_counts_current else step) / warmup_steps
        ramp = warmup_factor * (1 - alpha) + alpha
        factor = ramp if decay_after_warmup else factor * ramp
    return factor


def lr_factor(iteration: int, schedule: ScheduleConfig, max_iter: int) -> float:
    """:func:`schedule_factor` of a training run's ``schedule`` section over ``max_iter`` iterations."""
    return schedule_factor(iteration, max_iter, kind=schedule.kind, milestones=schedule.milestones,
                           gamma=schedule.gamma, min_lr_ratio=schedule.min_lr_ratio,
                           warmup_steps=schedule.warmup_iters, warmup_factor=schedule.warmup_factor)


def lr_at(iteration: int, optim: OptimConfig, schedule: ScheduleConfig, max_iter: int) -> float:
    """Learning rate of the update made after ``iteration`` completed updates."""
    return optim.lr * lr_factor(iteration, schedule, max_iter)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


__all__ = ["apply_freeze", "build_optimizer", "lr_at", "lr_factor", "schedule_factor", "set_lr"]
