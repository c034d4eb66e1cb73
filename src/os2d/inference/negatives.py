"""Negative exemplars: pictures of what a class must not be (the neighbouring flavour, the competitor's logo).

The negatives of a class run through the heads like one more class (a "shadow" of it, all its negative views
merged before NMS, at the levels its own probe picks with ``image_size="auto"``). A detection of the class is
dropped when a detection of its shadow overlaps it (IoU >= ``InferenceConfig.negative_iou``) with a score at
least as high: the photo matches what it is not at least as well as what it is. Shadow detections are never
returned. Cost: the heads of one more class per class with negatives.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from os2d.ops import box_iou
from os2d.results import Detections

SHADOW_PREFIX = "\x00not:"  # names of the shadow classes (never a user class name: no control characters)


@dataclass(frozen=True)
class NegativeViews:
    """A gallery's views with the negative views appended as shadow classes ``num_classes + j``."""

    kernels: Tensor  # (V + N, S*S, C)
    view_class: Tensor  # (V + N,)
    class_names: list[str]  # the classes, then one shadow per class with negatives
    owner: Tensor  # (num shadows,) the class each shadow belongs to
    num_classes: int
    view_aspect: Tensor | None = None  # (V + N,) aspect ratios of the views' class images (None: square)


def with_negatives(kernels: Tensor, view_class: Tensor, class_names: list[str], negative_kernels: Tensor,
                   negative_class: Tensor, *, view_aspect: Tensor | None = None,
                   negative_aspect: Tensor | None = None) -> NegativeViews:
    """Append the negative views (N, S*S, C) of classes ``negative_class`` (N,) as shadow classes (their aspect
    ratios after the views', when both are given)."""
    owners = sorted(set(negative_class.tolist()))
    shadow = {c: len(class_names) + j for j, c in enumerate(owners)}
    neg_view_class = torch.tensor([shadow[c] for c in negative_class.tolist()], dtype=torch.long)
    return NegativeViews(
        kernels=torch.cat([kernels, negative_kernels.to(kernels.device, kernels.dtype)]),
        view_class=torch.cat([view_class.cpu().long(), neg_view_class]),
        class_names=list(class_names) + [SHADOW_PREFIX + class_names[c] for c in owners],
        owner=torch.tensor(owners, dtype=torch.long),
        num_classes=len(class_names),
        view_aspect=None if view_aspect is None or negative_aspect is None
        else torch.cat([view_aspect.cpu().float(), negative_aspect.cpu().float()]),
    )


def suppress_by_negatives(dets: Detections, views: NegativeViews, iou: float, max_detections: int | None,
                          mode: str = "drop") -> Detections:
    """Drop (``mode="drop"``) or demote (``"demote"``: the score loses what the negative wins by, ``2 s - n``)
    the detections a negative of their class matches at least as well; remove the shadows' detections.

    ``dets``: detections over ``views.class_names`` (sorted by score); the result is over the real classes only,
    sorted, capped at ``max_detections``.
    """
    labels, scores = dets.labels, dets.scores.clone()
    real = labels < views.num_classes
    keep = real.clone()
    for j, c in enumerate(views.owner.tolist()):
        mine = torch.nonzero(labels == c).flatten()
        neg = torch.nonzero(labels == views.num_classes + j).flatten()
        if not len(mine) or not len(neg):
            continue
        overlap = box_iou(dets.boxes_xyxy[mine], dets.boxes_xyxy[neg]) >= iou  # (M, K)
        best_neg = torch.where(overlap, scores[neg][None, :], torch.full_like(overlap, -torch.inf, dtype=scores.dtype))
        best_neg = best_neg.amax(dim=1)  # (M,) the best overlapping negative
        beaten = best_neg >= scores[mine]
        if mode == "drop":
            keep[mine[beaten]] = False
        else:
            scores[mine[beaten]] = 2 * scores[mine[beaten]] - best_neg[beaten]
    idx = torch.nonzero(keep).flatten()
    idx = idx[scores[idx].argsort(descending=True, stable=True)]
    if max_detections is not None:
        idx = idx[:max_detections]
    names = views.class_names[: views.num_classes]
    levels = None if dets.levels is None else {n: v for n, v in dets.levels.items() if n in names}
    return replace(dets, boxes_xyxy=dets.boxes_xyxy[idx], scores=scores[idx], labels=labels[idx],
                   corners_xy=dets.corners_xy[idx], class_names=list(names), levels=levels)


__all__ = ["NegativeViews", "suppress_by_negatives", "with_negatives"]
