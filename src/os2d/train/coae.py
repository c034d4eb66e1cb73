"""Training of the CoAE head (:mod:`os2d.coae`) on cached trunk features of class-labelled images.

    run_coae_training(config)   # cache -> proposals -> head steps (resumable) -> coae.pt

Checkpoint (``<output_dir>/checkpoint.pt``): ``{"model", "optimizer", "step", "config", "version"}``; every step
draws its samples from a generator seeded by (seed, step), so a resumed run takes the same samples.
Weights (``<output_dir>/coae.pt``): :func:`os2d.coae.weights.save_coae`.
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

from os2d.agnostic.proposals import AgnosticDetector
from os2d.agnostic.weights import DEFAULT_DETECTOR, load_detector
from os2d.coae.config import CoaeTrainConfig
from os2d.coae.data import (
    CachedLabelledLevel,
    build_labelled_cache,
    query_features,
    read_labelled_csvs,
    sample_rois,
)
from os2d.coae.head import CoaeHead, build_coae_head, encode_boxes
from os2d.coae.roi import roi_align
from os2d.coae.weights import CoaeWeights, save_coae
from os2d.files import atomic_torch_save
from os2d.model.os2d import Os2dModel
from os2d.ops import nms
from os2d.train.dataclass_io import config_with_overrides

logger = logging.getLogger(__name__)

VERSION = 1
CHECKPOINT = "checkpoint.pt"
WEIGHTS_FILE = "coae.pt"
PROPOSAL_NMS_IOU = 0.5


@dataclass
class TrainingLevel:
    """A cached level with its class-agnostic proposals."""

    features: Tensor  # (C, H, W) float16
    boxes_xyxy: Tensor  # (N, 4) level pixels
    labels: Tensor  # (N,)
    group: int
    proposals_xyxy: Tensor  # (M, 4) level pixels


@torch.no_grad()
def level_proposals(detector: AgnosticDetector, features: Tensor, count: int) -> Tensor:
    """The ``count`` best class-agnostic boxes of one cached level (C, H, W), clipped, after NMS: (M, 4)."""
    h, w = features.shape[-2:]
    stride = detector.head_config.stride
    boxes, scores = detector.boxes_from_features(features[None].float())
    scores, idx = scores.topk(min(1000, scores.numel()))
    boxes = boxes[idx]
    boxes = torch.stack([boxes[:, 0].clamp(0, w * stride), boxes[:, 1].clamp(0, h * stride),
                         boxes[:, 2].clamp(0, w * stride), boxes[:, 3].clamp(0, h * stride)], dim=-1)
    valid = (boxes[:, 2] - boxes[:, 0] >= 2) & (boxes[:, 3] - boxes[:, 1] >= 2)
    boxes, scores = boxes[valid], scores[valid]
    return boxes[nms(boxes, scores, PROPOSAL_NMS_IOU, max_keep=count)]


def coae_losses(logits: Tensor, deltas: Tensor, is_positive: Tensor, box_targets: Tensor, sample_index: Tensor,
                margin: float) -> dict[str, Tensor]:
    """Named loss terms of a batch of RoIs (K,): ``score`` (BCE), ``box`` (smooth-L1 of positives' deltas) and
    ``rank`` (CoAE's margin-based ranking: within each sample, every positive's probability should exceed every
    negative's by ``margin``)."""
    target = is_positive.float()
    terms = {"score": F.binary_cross_entropy_with_logits(logits, target)}
    num_pos = int(is_positive.sum())
    if num_pos:
        terms["box"] = F.smooth_l1_loss(deltas[is_positive], box_targets[is_positive], beta=1 / 9,
                                        reduction="sum") / (4 * num_pos)
    else:
        terms["box"] = deltas.sum() * 0
    prob = logits.sigmoid()
    rank = []
    for s in sample_index.unique().tolist():
        m = sample_index == s
        pos, neg = prob[m & is_positive], prob[m & ~is_positive]
        if pos.numel() and neg.numel():
            rank.append(F.relu(margin - pos[:, None] + neg[None, :]).mean())
    terms["rank"] = torch.stack(rank).mean() if rank else logits.sum() * 0
    return terms


def _cosine_lr(base: float, step: int, total: int) -> float:
    return 0.5 * base * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def draw_query(level: TrainingLevel, class_groups: Sequence[int], absent_fraction: float,
               generator: torch.Generator) -> int:
    """A class present in the level (or, with probability ``absent_fraction`` or when none is, one of the same
    CSV group that is absent)."""
    present = level.labels[level.labels >= 0].unique()
    if present.numel() and float(torch.rand(1, generator=generator)) >= absent_fraction:
        return int(present[torch.randint(present.numel(), (1,), generator=generator)])
    same = [k for k, g in enumerate(class_groups) if g == level.group and k not in set(present.tolist())]
    pool = same or list(range(len(class_groups)))
    return pool[int(torch.randint(len(pool), (1,), generator=generator))]


def train_coae_head(levels: Sequence[TrainingLevel], queries: Tensor, class_groups: Sequence[int],
                    config: CoaeTrainConfig, *, checkpoint: str | Path | None = None,
                    log: Callable[[dict[str, Any]], None] | None = None) -> CoaeHead:
    """Train a fresh head for ``config.steps`` steps on cached levels and query features (K, C, h, w).
    With ``checkpoint``: resume from it when it exists, rewrite it every ``checkpoint_every`` steps."""
    torch.manual_seed(config.seed)
    hc = config.head
    queries = queries.detach()  # frozen trunk features
    head = build_coae_head(hc).train()
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step = 0
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        head.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        logger.info("resumed %s at step %d", checkpoint, step)
    sums: dict[str, float] = {}
    t0 = time.perf_counter()
    while step < config.steps:
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        feats, query_idx, pos, targets, sample = [], [], [], [], []
        for b in range(config.batch_size):
            lv = levels[int(torch.randint(len(levels), (1,), generator=gen))]
            q = draw_query(lv, class_groups, config.absent_query_fraction, gen)
            s = sample_rois(lv.proposals_xyxy, lv.boxes_xyxy, lv.labels, q, count=config.rois_per_sample,
                            positive_fraction=config.positive_fraction, positive_iou=config.positive_iou,
                            negative_iou=config.negative_iou, generator=gen)
            if s.rois_xyxy.numel() == 0:
                continue
            feats.append(roi_align(lv.features.float(), s.rois_xyxy, stride=hc.stride, size=hc.pool_size,
                                   sampling=hc.sampling))
            n = s.rois_xyxy.shape[0]
            query_idx.append(torch.full((n,), q, dtype=torch.long))
            pos.append(s.is_positive)
            targets.append(torch.where(s.is_positive[:, None], encode_boxes(s.rois_xyxy, s.matched_xyxy)
                                       .nan_to_num(0.0), torch.zeros(n, 4)))
            sample.append(torch.full((n,), b, dtype=torch.long))
        if not feats:
            step += 1
            continue
        qi = torch.cat(query_idx)
        logits, deltas = head(torch.cat(feats), queries[qi].float())
        terms = coae_losses(logits, deltas, torch.cat(pos), torch.cat(targets), torch.cat(sample), config.rank_margin)
        loss = terms["score"] + config.box_loss_weight * terms["box"] + config.rank_loss_weight * terms["rank"]
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(config.lr, step, config.steps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        for k, v in {**terms, "loss": loss}.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        sums["n"] = sums.get("n", 0.0) + 1
        if step % config.checkpoint_every == 0 or step == config.steps:
            n = sums.pop("n")
            record = {"step": step, "seconds": time.perf_counter() - t0, **{k: v / n for k, v in sums.items()}}
            sums, t0 = {}, time.perf_counter()
            if checkpoint is not None:
                atomic_torch_save(checkpoint, {"model": head.state_dict(), "optimizer": opt.state_dict(), "step": step,
                                               "config": config.to_dict(), "version": VERSION})
            if log is not None:
                log(record)
    return head.eval()


def prepare_levels(cached: Sequence[CachedLabelledLevel], detector: AgnosticDetector, count: int) -> list[TrainingLevel]:
    """Attach the class-agnostic proposals of each cached level."""
    return [TrainingLevel(lv.features, lv.boxes_xyxy, lv.labels, lv.group, level_proposals(detector, lv.features, count))
            for lv in cached]


def run_coae_training(config: CoaeTrainConfig, *, resume: bool = True, log: Callable[[str], None] | None = None) -> Path:
    """The whole recipe of ``os2d train-coae``; returns the weights file. Resumable (cache and checkpoint reused)."""
    from os2d.weights import load_model
    from os2d.weights.fingerprint import model_fingerprint

    say = log or logger.info
    torch.set_num_threads(config.threads)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model: Os2dModel = load_model(config.weights).eval()
    detector_file = Path(config.detector) if config.detector else DEFAULT_DETECTOR
    det = load_detector(detector_file)
    fingerprint = model_fingerprint(model)
    if det.trunk_fingerprint not in (None, fingerprint):
        raise ValueError(f"the detector {detector_file} was trained on another trunk ({det.trunk}); train one on "
                         f"{config.weights!r} with `os2d train-detector`")
    detector = AgnosticDetector(model, det.head, det.head_config)
    data = read_labelled_csvs(config.box_csvs, config.class_csvs, config.exclude_classes)
    if not data.images or not data.class_names:
        raise ValueError("no training images or no query classes: check box_csvs, class_csvs and exclude_classes")
    say(f"{len(data.images)} training images, {len(data.class_names)} query classes; caching features")
    t0 = time.perf_counter()

    def progress(i: int, n: int) -> None:
        if i % 100 == 0 or i == n:
            say(f"cache {i}/{n} images ({time.perf_counter() - t0:.0f} s)")

    cached = build_labelled_cache(model, data, out / "cache", object_sizes=config.object_sizes,
                                  side_range=config.level_side_range, progress=progress)
    queries = query_features(model, data.class_images, config.head.query_size, out / "cache" / "queries.pt")
    levels = prepare_levels(cached, detector, config.proposals_per_level)
    say(f"{len(levels)} cached levels, {queries.shape[0]} queries ({time.perf_counter() - t0:.0f} s)")
    if not resume and (out / CHECKPOINT).exists():
        (out / CHECKPOINT).unlink()
    head = train_coae_head(levels, queries, data.class_groups, config, checkpoint=out / CHECKPOINT,
                           log=lambda r: say(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                      for k, v in r.items())))
    path = out / WEIGHTS_FILE
    save_coae(path, CoaeWeights(head, config.head, det.head, det.head_config, det.retrieval_config.num_proposals,
                                det.retrieval_config.proposal_nms_iou, config.weights, fingerprint))
    return path


def coae_config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> CoaeTrainConfig:
    """Build the config from a plain dict plus ``key=value`` overrides (``ConfigError`` names a bad key)."""
    return config_with_overrides(CoaeTrainConfig, data, overrides or [])


__all__ = ["CHECKPOINT", "WEIGHTS_FILE", "TrainingLevel", "coae_config_from_dict", "coae_losses", "draw_query",
           "level_proposals", "prepare_levels", "run_coae_training", "train_coae_head"]
