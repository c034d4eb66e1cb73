"""Training targets of the class-agnostic head and its loss terms (FCOS: focal objectness, GIoU boxes,
centre-ness BCE), all on one stride-16 level.

Convention: ground-truth boxes are xyxy pixels of the level image the features were computed on; cell centres
as in :func:`os2d.agnostic.head.cell_centers`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from os2d.agnostic.head import HeadOutput, cell_centers


@dataclass
class LevelTargets:
    """Targets of one feature map (H, W)."""

    is_positive: Tensor  # (H, W) bool
    distances: Tensor  # (H, W, 4) pixel distances to the assigned box's sides (zeros at negatives)
    centerness: Tensor  # (H, W) FCOS centre-ness of the assigned box (zeros at negatives)


def level_targets(boxes_xyxy: Tensor, height: int, width: int, stride: float, center_radius: float) -> LevelTargets:
    """Assign every cell to at most one box: the cell centre lies inside the box and within ``center_radius``
    cells of its centre (FCOS centre sampling; the centre cell itself is always positive); ties go to the
    smallest box.

    Args:
        boxes_xyxy: (N, 4) level pixels.
    """
    centers = cell_centers(height, width, stride).view(-1, 1, 2)  # (H*W, 1, 2)
    if boxes_xyxy.numel() == 0:
        z = torch.zeros(height, width)
        return LevelTargets(z.bool(), torch.zeros(height, width, 4), z)
    b = boxes_xyxy.float().view(1, -1, 4)
    x, y = centers[..., 0], centers[..., 1]  # (H*W, 1)
    ltrb = torch.stack([x - b[..., 0], y - b[..., 1], b[..., 2] - x, b[..., 3] - y], dim=-1)  # (H*W, N, 4)
    inside = ltrb.min(dim=-1).values > 0
    cx, cy = (b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2
    r = center_radius * stride
    near = ((x - cx).abs() <= r) & ((y - cy).abs() <= r)
    # the cell holding the centre is positive even for boxes smaller than a cell
    own = ((x - cx).abs() <= stride / 2) & ((y - cy).abs() <= stride / 2)
    candidate = (inside & near) | own
    area = ((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])).expand_as(candidate)
    area = torch.where(candidate, area, torch.full_like(area, float("inf")))
    best_area, best = area.min(dim=1)  # (H*W,)
    is_pos = torch.isfinite(best_area)
    dist = ltrb[torch.arange(ltrb.shape[0]), best].clamp(min=stride / 8)  # (H*W, 4), own cells may stick out
    lr, tb = dist[:, 0::2], dist[:, 1::2]
    ctr = ((lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values)).sqrt()
    dist = torch.where(is_pos[:, None], dist, torch.zeros_like(dist))
    ctr = torch.where(is_pos, ctr, torch.zeros_like(ctr))
    return LevelTargets(is_pos.view(height, width), dist.view(height, width, 4), ctr.view(height, width))


def giou_loss_ltrb(pred: Tensor, target: Tensor) -> Tensor:
    """(M, 4) predicted and target side distances from the same points -> (M,) 1 - GIoU."""
    pl, pt, pr, pb = pred.unbind(-1)
    tl, tt, tr, tb = target.unbind(-1)
    area_p = (pl + pr) * (pt + pb)
    area_t = (tl + tr) * (tt + tb)
    inter = (torch.minimum(pl, tl) + torch.minimum(pr, tr)) * (torch.minimum(pt, tt) + torch.minimum(pb, tb))
    union = area_p + area_t - inter
    hull = (torch.maximum(pl, tl) + torch.maximum(pr, tr)) * (torch.maximum(pt, tt) + torch.maximum(pb, tb))
    iou = inter / union.clamp(min=1e-6)
    return 1 - (iou - (hull - union) / hull.clamp(min=1e-6))


def head_losses(out: HeadOutput, is_positive: Tensor, distances: Tensor, centerness: Tensor, stride: float, *,
                focal_alpha: float, focal_gamma: float) -> dict[str, Tensor]:
    """Named loss terms of a batch (targets stacked: (B, H, W), (B, H, W, 4), (B, H, W)).

    ``objectness``: sigmoid focal loss over all cells / number of positives; ``box``: GIoU loss of the positive
    cells weighted by their centre-ness; ``centerness``: BCE at the positive cells (FCOS).
    """
    num_pos = is_positive.sum().clamp(min=1).float()
    t = is_positive.float()
    logits = out.objectness_logits
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p = logits.sigmoid()
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = focal_alpha * t + (1 - focal_alpha) * (1 - t)
    objectness = (alpha_t * (1 - p_t) ** focal_gamma * ce).sum() / num_pos
    if not bool(is_positive.any()):
        zero = logits.sum() * 0
        return {"objectness": objectness, "box": zero, "centerness": zero}
    ctr_t = centerness[is_positive]
    pred = out.distances(stride)[is_positive]  # (P, 4)
    box = (giou_loss_ltrb(pred, distances[is_positive]) * ctr_t).sum() / ctr_t.sum().clamp(min=1e-6)
    ctr = F.binary_cross_entropy_with_logits(out.centerness_logits[is_positive], ctr_t)
    return {"objectness": objectness, "box": box, "centerness": ctr}


__all__ = ["LevelTargets", "giou_loss_ltrb", "head_losses", "level_targets"]
