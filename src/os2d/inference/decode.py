"""Decoding of the OS2D heads: candidate boxes per pyramid level, then class views merged and per-class NMS.

Follows the reference's ``decode_pyramid``: every level's boxes are clipped to the level image, empty boxes
dropped, mapped back to original pixels, then all levels and all views of a class go through one NMS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

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
    anchors: Tensor | None = None  # (M,) flat location (y * W + x) in the level's map, where the heads made them
    features: Tensor | None = None  # (1, C, H, W) the level's features (for exact values at a few windows)
    level_size: tuple[int, int] | None = None  # (w, h) of the level image
    exact: Tensor | None = None  # (M,) bool: the values are the exact float32 heads' (heads_precision "int8-exact")

    def subset(self, mask: Tensor) -> LevelCandidates:
        """The candidates where ``mask`` (M,) is True (the level's features and size stay)."""
        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[mask]

        return replace(self, boxes_xyxy=self.boxes_xyxy[mask], scores=self.scores[mask], views=self.views[mask],
                       corners_xy=self.corners_xy[mask], anchors=pick(self.anchors), exact=pick(self.exact))


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
    boxes, valid = clip_boxes(out.boxes_xyxy[0].reshape(v, -1, 4), scores, (w, h), config)
    corners = out.corners_xy[0].reshape(v, -1, 4, 2)
    scores = scores.masked_fill(~valid, -math.inf)
    k = scores.shape[1] if config.pre_nms_top_k is None else min(config.pre_nms_top_k, scores.shape[1])
    top_scores, top_idx = scores.topk(k, dim=1)  # (V, k)
    keep = torch.isfinite(top_scores)
    view_ids = torch.arange(v, device=scores.device).view(v, 1).expand(v, k)[keep]
    anchor_ids = top_idx[keep]
    boxes_o, corners_o = to_original(boxes[view_ids, anchor_ids], corners[view_ids, anchor_ids], (w, h),
                                     original_size)
    exact = model.heads_exact(features, config.heads_precision)  # int8-exact: windows make the reported ones exact
    return LevelCandidates(
        boxes_xyxy=boxes_o, scores=top_scores[keep], views=view_ids, corners_xy=corners_o, anchors=anchor_ids,
        features=features, level_size=(w, h), exact=torch.full_like(anchor_ids, exact, dtype=torch.bool),
    )


def clip_boxes(boxes: Tensor, scores: Tensor, level_size: tuple[int, int],
               config: InferenceConfig) -> tuple[Tensor, Tensor]:
    """(..., 4) level boxes clipped to the (w, h) level image, and the (...) mask of valid ones: non-empty boxes
    (reference: clip_to_image + get_mask_empty_boxes) above ``config.score_threshold``."""
    w, h = level_size
    boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h),
                         boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], dim=-1)
    valid = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    if config.score_threshold is not None:
        valid &= scores > config.score_threshold
    return boxes, valid


def to_original(boxes: Tensor, corners: Tensor, level_size: tuple[int, int],
                original_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(M, 4) clipped boxes and (M, 4, 2) corners of a (w, h) level -> the original image's pixels."""
    w, h = level_size
    sx = original_size[0] / w
    sy = original_size[1] / h
    scale4 = torch.tensor([sx, sy, sx, sy], device=boxes.device)
    scale2 = torch.tensor([sx, sy], device=boxes.device)
    ow, oh = original_size
    bound = torch.tensor([ow, oh, ow, oh], dtype=boxes.dtype, device=boxes.device)
    return torch.minimum(boxes * scale4, bound), corners * scale2  # minimum: float round-off at the border


def merge_and_nms(cands: list[LevelCandidates], view_class: Tensor, class_names: list[str],
                  original_size: tuple[int, int], config: InferenceConfig) -> Detections:
    """Concatenate levels, map views to classes, per-class (or global) NMS, sort, cap."""
    return detections_at(cands, merged_keep(cands, view_class, config), view_class, class_names, original_size)


def detections_at(cands: list[LevelCandidates], keep: Tensor | None, view_class: Tensor, class_names: list[str],
                  original_size: tuple[int, int]) -> Detections:
    """The detections of the levels' concatenated candidates at indices ``keep`` (None: none)."""
    if keep is None:
        return Detections.empty(class_names, original_size)
    boxes = torch.cat([c.boxes_xyxy for c in cands])
    labels = view_class.to(boxes.device)[torch.cat([c.views for c in cands])]
    return Detections(boxes[keep].float().cpu(), torch.cat([c.scores for c in cands])[keep].float().cpu(),
                      labels[keep].cpu(), torch.cat([c.corners_xy for c in cands])[keep].float().cpu(),
                      list(class_names), original_size)


def merged_keep(cands: list[LevelCandidates], view_class: Tensor, config: InferenceConfig) -> Tensor | None:
    """Indices into the levels' concatenated candidates that :func:`merge_and_nms` reports, best first
    (None: no candidates)."""
    if not cands or sum(c.scores.numel() for c in cands) == 0:
        return None
    boxes = torch.cat([c.boxes_xyxy for c in cands])
    scores = torch.cat([c.scores for c in cands])
    # NMS returns its boxes best first (ties by index): the first max_detections are all that is reported
    if config.nms_across_classes:
        return nms(boxes, scores, config.nms_iou_threshold, max_keep=config.max_detections)
    labels = view_class.to(boxes.device)[torch.cat([c.views for c in cands])]
    return batched_nms(boxes, scores, labels, config.nms_iou_threshold, max_keep=config.max_detections)


__all__ = ["LevelCandidates", "clip_boxes", "detections_at", "level_candidates", "merge_and_nms", "merged_keep",
           "to_original"]
