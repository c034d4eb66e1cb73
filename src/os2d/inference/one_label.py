"""One label per object: cross-class suppression of the final detections.

Per-class NMS (``InferenceConfig.nms_iou_threshold``) never lets a detection of one class suppress one of another, so
an object that looks like two classes of the gallery (two flavours of one product, a logo and its look-alike) can be
reported under both. :func:`suppress_cross_class` keeps, among detections of different classes that overlap by IoU
>= ``iou_threshold``, only the best-scoring one: greedy in score order, on the final (second-look) scores, so the
rivals' verdict decides which label stays. Same-class overlaps are left to NMS.

Shape glossary: N detections.
"""

from __future__ import annotations

import torch

from os2d.ops import box_iou
from os2d.results import Detections


def cross_class_keep(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                     iou_threshold: float) -> torch.Tensor:
    """(N,) bool: the detections that no better-scoring kept detection of another class overlaps with IoU >=
    ``iou_threshold``. ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``labels`` (N,); ties in score keep the earlier one."""
    n = int(scores.numel())
    keep = torch.ones(n, dtype=torch.bool)
    if n < 2:
        return keep
    order = torch.argsort(scores, descending=True, stable=True)
    b, lab = boxes[order].float(), labels[order]
    clash = (box_iou(b, b) >= iou_threshold) & (lab[:, None] != lab[None, :])  # (N, N) in score order
    clash = torch.triu(clash, diagonal=1)  # row i suppresses only the later (lower-scored) columns
    kept_sorted = torch.ones(n, dtype=torch.bool)
    for i in range(n):  # greedy: a suppressed detection suppresses nothing; rows are cheap (N <= max_detections)
        if kept_sorted[i]:
            kept_sorted &= ~clash[i]
    keep[order] = kept_sorted
    return keep


def suppress_cross_class(dets: Detections, iou_threshold: float) -> Detections:
    """``dets`` without the detections that a better-scoring detection of another class overlaps with IoU >=
    ``iou_threshold`` (:func:`cross_class_keep`); order and every field of the others kept."""
    if len(dets) < 2:
        return dets
    return dets.filter(cross_class_keep(dets.boxes_xyxy, dets.scores, dets.labels, iou_threshold))


__all__ = ["cross_class_keep", "suppress_cross_class"]
