"""Training of the class-agnostic head (:mod:`os2d.agnostic`) on cached trunk features, and the whitening fit.

    run_training(config)   # cache -> head epochs (resumable, checkpoint each epoch) -> whitening -> detector.pt

Checkpoint (``<output_dir>/checkpoint.pt``): ``{"model", "optimizer", "step", "epoch", "config", "version"}``.
Detector weights (``<output_dir>/detector.pt``): :func:`os2d.agnostic.weights.save_detector`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from os2d.agnostic.cache import CachedLevel, TrainImage, build_cache, load_cache, read_box_csvs
from os2d.agnostic.config import DetectorTrainConfig, HeadConfig
from os2d.agnostic.head import ObjectnessHead, build_head
from os2d.agnostic.retrieval import Whitening, crop_boxes, embed_images, fit_pca_whitening
from os2d.agnostic.targets import head_losses, level_targets
from os2d.agnostic.weights import save_detector
from os2d.files import atomic_torch_save
from os2d.io import load_image
from os2d.model.os2d import Os2dModel
from os2d.train.dataclass_io import config_with_overrides

logger = logging.getLogger(__name__)

VERSION = 1  # of the training checkpoint
CHECKPOINT = "checkpoint.pt"
DETECTOR_FILE = "detector.pt"


@dataclass
class TrainingLevel:
    """A cached level with its precomputed targets (full map)."""

    features: Tensor  # (C, H, W) float16
    is_positive: Tensor  # (H, W) bool
    distances: Tensor  # (H, W, 4)
    centerness: Tensor  # (H, W)


def prepare_levels(levels: Sequence[CachedLevel], head: HeadConfig) -> list[TrainingLevel]:
    """Targets of every cached level (:func:`os2d.agnostic.targets.level_targets`)."""
    out = []
    for lv in levels:
        h, w = lv.features.shape[-2:]
        t = level_targets(lv.boxes_xyxy, h, w, float(head.stride), head.center_radius)
        out.append(TrainingLevel(lv.features, t.is_positive, t.distances, t.centerness))
    return out


def random_crop(level: TrainingLevel, cells: int, generator: torch.Generator) -> tuple[Tensor, ...]:
    """A ``cells`` x ``cells`` window of a level (zero-padded where the map is smaller; padding is background):
    features (C, n, n) float32, is_positive (n, n), distances (n, n, 4), centerness (n, n)."""
    h, w = level.features.shape[-2:]
    y0 = int(torch.randint(0, max(1, h - cells + 1), (1,), generator=generator))
    x0 = int(torch.randint(0, max(1, w - cells + 1), (1,), generator=generator))
    win = (slice(y0, y0 + cells), slice(x0, x0 + cells))
    f = level.features[:, win[0], win[1]].float()
    pos, dist, ctr = level.is_positive[win], level.distances[win], level.centerness[win]
    ph, pw = cells - f.shape[1], cells - f.shape[2]
    if ph or pw:
        f = F.pad(f, (0, pw, 0, ph))
        pos = F.pad(pos, (0, pw, 0, ph))
        dist = F.pad(dist.permute(2, 0, 1), (0, pw, 0, ph)).permute(1, 2, 0)
        ctr = F.pad(ctr, (0, pw, 0, ph))
    return f, pos, dist, ctr


def _cosine_lr(base: float, step: int, total: int) -> float:
    return 0.5 * base * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def train_head(levels: Sequence[CachedLevel], config: DetectorTrainConfig, *, checkpoint: str | Path | None = None,
               log: Callable[[dict[str, Any]], None] | None = None) -> ObjectnessHead:
    """Train a fresh head on cached levels for ``config.epochs`` epochs (AdamW, cosine decay, random crops).

    With ``checkpoint``: resume from it when it exists, and rewrite it after every epoch.
    """
    torch.manual_seed(config.seed)
    head = build_head(config.head).train()
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    data = prepare_levels(levels, config.head)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    total = steps_per_epoch * config.epochs
    start_epoch, step = 0, 0
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        head.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        logger.info("resumed %s at epoch %d", checkpoint, start_epoch)
    stride = float(config.head.stride)
    for epoch in range(start_epoch, config.epochs):
        gen = torch.Generator().manual_seed(config.seed * 1000 + epoch)  # per epoch: resume is exact
        order = torch.randperm(len(data), generator=gen).tolist()
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        for start in range(0, len(order), config.batch_size):
            crops = [random_crop(data[i], config.crop_cells, gen) for i in order[start:start + config.batch_size]]
            feats, pos, dist, ctr = (torch.stack(x) for x in zip(*crops, strict=True))
            for group in opt.param_groups:
                group["lr"] = _cosine_lr(config.lr, step, total)
            terms = head_losses(head(feats), pos, dist, ctr, stride, focal_alpha=config.focal_alpha,
                                focal_gamma=config.focal_gamma)
            loss = (terms["objectness"] + config.box_loss_weight * terms["box"]
                    + config.center_loss_weight * terms["centerness"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            for k, v in {**terms, "loss": loss}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        record = {"epoch": epoch + 1, "step": step, "seconds": time.perf_counter() - t0,
                  **{k: v / steps_per_epoch for k, v in sums.items()}}
        if log is not None:
            log(record)
        if checkpoint is not None:
            atomic_torch_save(checkpoint, {"model": head.state_dict(), "optimizer": opt.state_dict(), "step": step,
                                           "epoch": epoch + 1, "config": config.to_dict(), "version": VERSION})
    return head.eval()


def whitening_crops(images: Sequence[TrainImage], count: int, seed: int) -> list[tuple[str, Tensor]]:
    """Up to ``count`` (image path, box) pairs drawn without replacement from all training boxes (seeded)."""
    pairs = [(im.path, b) for im in images for b in im.boxes_xyxy]
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(pairs), generator=gen)[:count].tolist()
    return [pairs[i] for i in sorted(idx)]


def fit_whitening(model: Os2dModel, images: Sequence[TrainImage], config: DetectorTrainConfig) -> Whitening | None:
    """PCA whitening of GeM descriptors of training box crops (None with ``whitening_crops=0``)."""
    if config.whitening_crops == 0:
        return None
    pairs = whitening_crops(images, config.whitening_crops, config.seed)
    crops = []
    by_image: dict[str, list[Tensor]] = {}
    for path, box in pairs:
        by_image.setdefault(path, []).append(box)
    for path, boxes in by_image.items():
        crops += crop_boxes(load_image(path), torch.stack(boxes), config.retrieval.crop_size)
    r = config.retrieval
    desc = embed_images(model, crops, size=r.crop_size, gem_p=r.gem_p, signed=r.gem_signed)
    return fit_pca_whitening(desc, config.whitening_shrinkage)


def run_training(config: DetectorTrainConfig, *, resume: bool = True,
                 log: Callable[[str], None] | None = None) -> Path:
    """The whole recipe of ``os2d train-detector``; returns the detector weights file. Resumable: cached
    features and the epoch checkpoint are reused."""
    from os2d.weights import load_model

    say = log or logger.info
    torch.set_num_threads(config.threads)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(config.weights).eval()
    images = read_box_csvs(config.box_csvs, config.exclude_classes)
    if not images:
        raise ValueError("no training images: check box_csvs and exclude_classes")
    say(f"{len(images)} training images, {sum(len(i.boxes_xyxy) for i in images)} boxes; caching features")
    t0 = time.perf_counter()
    files = build_cache(model, images, out / "cache", object_sizes=config.object_sizes,
                        side_range=config.level_side_range)
    levels = load_cache(files)
    say(f"{len(levels)} cached levels ({time.perf_counter() - t0:.0f} s)")
    if not resume and (out / CHECKPOINT).exists():
        (out / CHECKPOINT).unlink()
    head = train_head(levels, config, checkpoint=out / CHECKPOINT,
                      log=lambda r: say(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in r.items())))
    whitening = fit_whitening(model, images, config)
    path = out / DETECTOR_FILE
    from os2d.weights.fingerprint import model_fingerprint

    save_detector(path, head, config.head, config.retrieval, whitening, trunk=config.weights,
                  trunk_fingerprint=model_fingerprint(model))
    return path


def detector_train_config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> DetectorTrainConfig:
    """Build the config from a plain dict plus ``key=value`` overrides (``ConfigError`` names a bad key)."""
    return config_with_overrides(DetectorTrainConfig, data, overrides or [])


__all__ = ["CHECKPOINT", "DETECTOR_FILE", "TrainingLevel", "detector_train_config_from_dict", "fit_whitening",
           "prepare_levels", "random_crop", "run_training", "train_head"]
