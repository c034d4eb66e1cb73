"""Detections from an OS2D model: image pyramid, decoding, class views merged, per-class NMS.

Follows the reference's ``decode_pyramid``: every level's boxes are clipped to the level image, empty boxes
dropped, mapped back to original pixels, then all levels and all views of a class go through one NMS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from os2d.config import InferenceConfig
from os2d.io import image_to_tensor
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


def pyramid_sizes(width: int, height: int, config: InferenceConfig) -> list[tuple[int, int]]:
    """(w, h) of each level: base resize to sqrt(w*h) = image_size (if set), then ``int(w * r * s)``."""
    r = 1.0 if config.image_size is None else config.image_size / math.sqrt(width * height)
    return [(max(1, int(width * r * s)), max(1, int(height * r * s))) for s in config.scales]


def level_candidates(model: Os2dModel, level_image: Tensor, kernels: Tensor, original_size: tuple[int, int],
                     config: InferenceConfig, *, features: Tensor | None = None) -> LevelCandidates:
    """Run the heads on one level image (3, h, w) and keep the valid, top-scoring boxes of each view.

    ``features``: the level's (1, C, H, W) backbone features when already computed.
    """
    h, w = level_image.shape[-2:]
    if features is None:
        features = model.extract_features(level_image[None])
    out = model.heads(features, kernels, class_chunk=config.class_chunk)
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


def prepare_levels(image: Image.Image, config: InferenceConfig) -> list[Tensor]:
    """The pyramid of one RGB PIL image as (3, h, w) CPU tensors in [0, 1] (no model needed: can run in a
    background thread while the model works on another image)."""
    size = image.size
    levels = []
    for lw, lh in pyramid_sizes(*size, config):
        level = image if (lw, lh) == size else image.resize((lw, lh), Image.BILINEAR)
        levels.append(image_to_tensor(level))
    return levels


@torch.no_grad()
def detect_levels(model: Os2dModel, levels: list[Tensor], original_size: tuple[int, int], kernels: Tensor,
                  view_class: Tensor, class_names: list[str], config: InferenceConfig, *,
                  class_desc: Tensor | None = None) -> Detections:
    """Detect every class of a gallery in an image pyramid from :func:`prepare_levels`.

    With ``config.shortlist_top_k`` set (and fewer than the gallery's classes), the heads run only for the views
    of the K classes ranked best by :func:`os2d.inference.shortlist.shortlist_views` on the same backbone features;
    ``class_desc`` (V, C) are the kernels' precomputed ``os2d.inference.shortlist.class_descriptors(kernels,
    model.config.pool_border)`` (optional).
    """
    if kernels.shape[0] == 0:
        return Detections.empty(class_names, original_size)
    device = next(model.parameters()).device
    levels = [lv.to(device, non_blocking=True) for lv in levels]
    feats = [model.extract_features(lv[None]) for lv in levels]
    k = config.shortlist_top_k
    if k is not None and k < len(class_names):
        from os2d.inference.shortlist import shortlist_views

        views, _ = shortlist_views(feats, kernels, view_class, len(class_names), k,
                                   grid_size=model.config.class_grid_size, pool_border=model.config.pool_border,
                                   class_desc=class_desc)
        kernels, view_class = kernels[views], view_class.cpu()[views]
    kernels = kernels.to(device)
    cands = [level_candidates(model, lv, kernels, original_size, config, features=f)
             for lv, f in zip(levels, feats, strict=True)]
    return merge_and_nms(cands, view_class, class_names, original_size, config)


@torch.no_grad()
def detect_image(model: Os2dModel, image: Image.Image, kernels: Tensor, view_class: Tensor,
                 class_names: list[str], config: InferenceConfig, *, class_desc: Tensor | None = None) -> Detections:
    """Detect every class of a gallery in one RGB PIL image.

    Args:
        kernels: (V, S*S, C) class-view kernels; ``view_class`` (V,) maps each view to its class index.
        class_desc: (V, C) precomputed shortlist descriptors of ``kernels`` (used with ``shortlist_top_k``).
    """
    if kernels.shape[0] == 0:
        return Detections.empty(class_names, image.size)
    return detect_levels(model, prepare_levels(image, config), image.size, kernels, view_class, class_names,
                         config, class_desc=class_desc)
