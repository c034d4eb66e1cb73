"""Decoding of the OS2D heads: candidate boxes per pyramid level, then class views merged and per-class NMS.

Follows the reference's ``decode_pyramid``: every level's boxes are clipped to the level image, empty boxes
dropped, mapped back to original pixels, then all levels and all views of a class go through one NMS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from os2d.config import InferenceConfig
from os2d.model.os2d import Os2dModel
from os2d.ops import batched_nms, nms
from os2d.results import Detections


@dataclass
class LevelCandidates:
    """Candidate boxes of one pyramid level, already in original pixels (flattened over views x anchors)."""

    boxes_xyxy: Tensor  # (M, 4)
    scores: Tensor  # (M,)
    views: Tensor  # (M,) class-view index
    corners_xy: Tensor  # (M, 4, 2)


def level_candidates(model: Os2dModel, level_image: Tensor, kernels: Tensor, original_size: tuple[int, int],
                     config: InferenceConfig, *, features: Tensor | None = None,
                     aspect: Tensor | None = None) -> LevelCandidates:
    """Run the heads on one level image (3, h, w) and keep the valid, top-scoring boxes of each view.

    ``features``: the level's (1, C, H, W) backbone features when already computed; ``aspect``: (V,) the views'
    class aspect ratios (for models with ``anchor_aspect_power``).
    """
    h, w = level_image.shape[-2:]
    if features is None:
        features = model.extract_features(level_image[None], precision=config.trunk_precision)
    out = model.heads(features, kernels, class_chunk=config.class_chunk, aspect=aspect,
                      precision=config.heads_precision)
    v = kernels.shape[0]
    scores = out.scores[0].reshape(v, -1)  # (V, A)
    boxes = out.boxes_xyxy[0].reshape(v, -1, 4)
    corners = out.corners_xy[0].reshape(v, -1, 4, 2)
    # Clip to the level image and drop empty boxes (reference: clip_to_image + get_mask_empty_boxes).
    boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h),
                         boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], dim=-1)
    valid = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    if config.score_threshold is not None:
        valid &= scores > config.score_threshold
    scores = scores.masked_fill(~valid, -math.inf)
    k = scores.shape[1] if config.pre_nms_top_k is None else min(config.pre_nms_top_k, scores.shape[1])
    top_scores, top_idx = scores.topk(k, dim=1)  # (V, k)
    keep = torch.isfinite(top_scores)
    view_ids = torch.arange(v, device=scores.device).view(v, 1).expand(v, k)[keep]
    anchor_ids = top_idx[keep]
    sx = original_size[0] / w
    sy = original_size[1] / h
    scale4 = torch.tensor([sx, sy, sx, sy], device=boxes.device)
    scale2 = torch.tensor([sx, sy], device=boxes.device)
    ow, oh = original_size
    bound = torch.tensor([ow, oh, ow, oh], dtype=boxes.dtype, device=boxes.device)
    return LevelCandidates(
        boxes_xyxy=torch.minimum(boxes[view_ids, anchor_ids] * scale4, bound),  # float round-off at the border
        scores=top_scores[keep],
        views=view_ids,
        corners_xy=corners[view_ids, anchor_ids] * scale2,
    )


def merge_and_nms(cands: list[LevelCandidates], view_class: Tensor, class_names: list[str],
                  original_size: tuple[int, int], config: InferenceConfig) -> Detections:
    """Concatenate levels, map views to classes, per-class (or global) NMS, sort, cap."""
    if not cands or sum(c.scores.numel() for c in cands) == 0:
        return Detections.empty(class_names, original_size)
    boxes = torch.cat([c.boxes_xyxy for c in cands])
    scores = torch.cat([c.scores for c in cands])
    labels = view_class.to(boxes.device)[torch.cat([c.views for c in cands])]
    corners = torch.cat([c.corners_xy for c in cands])
    if config.nms_across_classes:
        keep = nms(boxes, scores, config.nms_iou_threshold)
    else:
        keep = batched_nms(boxes, scores, labels, config.nms_iou_threshold)
    keep = keep[scores[keep].argsort(descending=True, stable=True)]
    if config.max_detections is not None:
        keep = keep[: config.max_detections]
    return Detections(boxes[keep].float().cpu(), scores[keep].float().cpu(), labels[keep].cpu(),
                      corners[keep].float().cpu(), list(class_names), original_size)


__all__ = ["LevelCandidates", "level_candidates", "merge_and_nms"]
