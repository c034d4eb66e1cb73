"""Optimiser, learning-rate schedule and parameter freezing of a training run.

The schedule is a pure function of the iteration (:func:`lr_at`), so resuming needs only the step number.
"""

from __future__ import annotations

import math

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


def lr_factor(iteration: int, schedule: ScheduleConfig, max_iter: int) -> float:
    """Multiplier of the base lr for the update made after ``iteration`` completed updates (0-based)."""
    if schedule.kind == "multistep":
        factor = schedule.gamma ** sum(iteration >= m for m in schedule.milestones)
    elif schedule.kind == "cosine":
        t = min(max(iteration, 0) / max(max_iter, 1), 1.0)
        factor = schedule.min_lr_ratio + (1 - schedule.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    else:
        factor = 1.0
    if iteration < schedule.warmup_iters:
        alpha = iteration / schedule.warmup_iters
        factor *= schedule.warmup_factor * (1 - alpha) + alpha
    return factor


def lr_at(iteration: int, optim: OptimConfig, schedule: ScheduleConfig, max_iter: int) -> float:
    """Learning rate of the update made after ``iteration`` completed updates."""
    return optim.lr * lr_factor(iteration, schedule, max_iter)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


__all__ = ["apply_freeze", "build_optimizer", "lr_at", "lr_factor", "set_lr"]
