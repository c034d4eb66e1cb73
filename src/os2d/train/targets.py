"""Training targets: IoU matching of anchors to ground truth per class, and target remapping.

Paper Sec. 4 "Target assignment": anchors with IoU >= 0.5 to a box of the class are positives, IoU < 0.1
negatives, in between ignored, without forcing a positive per box (one scale per batch cannot guarantee one).
Recognition targets are then *remapped*: the boxes the network actually predicted are matched again with
stricter thresholds (0.8 / 0.4), since the model scores the transformed grid, not the anchor.

Convention:
    Boxes are xyxy in pixels of the patch. Labels are int8: 1 positive, 0 negative, -1 ignore. A GT box with
    label -1 (class not in the batch) or outside ``0..K-1`` is background for every class. An anchor whose
    best match is a difficult box is ignored. Ties in IoU go to the first box.
"""

from __future__ import annotations

import torch
from torch import Tensor

from os2d.ops import box_iou

__all__ = ["POSITIVE", "NEGATIVE", "IGNORE", "assign", "remap", "labels_from_iou"]

POSITIVE, NEGATIVE, IGNORE = 1, 0, -1


def _check(boxes: Tensor, labels: Tensor, difficult: Tensor, pos_iou: float, neg_iou: float) -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (M, 4), got {tuple(boxes.shape)}")
    if labels.shape != boxes.shape[:1] or difficult.shape != boxes.shape[:1]:
        raise ValueError(f"labels {tuple(labels.shape)} and difficult {tuple(difficult.shape)} must be "
                         f"({boxes.shape[0]},)")
    if not 0.0 <= neg_iou <= pos_iou <= 1.0:
        raise ValueError(f"need 0 <= neg_iou <= pos_iou <= 1, got neg {neg_iou}, pos {pos_iou}")


def labels_from_iou(iou: Tensor, difficult: Tensor, pos_iou: float, neg_iou: float) -> tuple[Tensor, Tensor]:
    """Matcher rule for one class.

    Args:
        iou: (A, M) IoU of A candidates with the M boxes of the class (M >= 1).
        difficult: (M,) bool.
    Returns:
        labels (A,) int8 (1: best IoU >= pos_iou with a non-difficult box; 0: best IoU < neg_iou; else -1)
        and (A,) int64 index of the best box.
    """
    best, idx = iou.max(dim=1)
    labels = torch.full(best.shape, IGNORE, dtype=torch.int8, device=iou.device)
    labels[best < neg_iou] = NEGATIVE
    labels[(best >= pos_iou) & ~difficult[idx]] = POSITIVE
    return labels, idx


def assign(anchors: Tensor, boxes: Tensor, labels: Tensor, difficult: Tensor, num_classes: int,
           pos_iou: float = 0.5, neg_iou: float = 0.1) -> tuple[Tensor, Tensor]:
    """Per-class targets of the anchors of one image (localisation targets, and recognition ones without remap).

    Args:
        anchors: (A, 4) anchors.
        boxes: (M, 4) GT boxes; labels (M,) int64 class index in the batch (-1: none); difficult (M,) bool.
        num_classes: K.
    Returns:
        labels (K, A) int8 in {1, 0, -1} and matched_boxes (K, A, 4) (the matched GT box; zeros for classes
        without boxes).
    """
    _check(boxes, labels, difficult, pos_iou, neg_iou)
    a = anchors.shape[0]
    device = anchors.device
    boxes = boxes.to(device=device, dtype=anchors.dtype)
    labels = labels.to(device)
    difficult = difficult.to(device=device, dtype=torch.bool)
    out = torch.zeros(num_classes, a, dtype=torch.int8, device=device)
    matched = torch.zeros(num_classes, a, 4, dtype=anchors.dtype, device=device)
    if boxes.shape[0] == 0 or a == 0:
        return out, matched
    iou = box_iou(anchors, boxes).to(anchors.dtype)  # (A, M)
    for c in torch.unique(labels).tolist():
        if not 0 <= c < num_classes:
            continue
        sel = (labels == c).nonzero().squeeze(1)
        out[c], idx = labels_from_iou(iou[:, sel], difficult[sel], pos_iou, neg_iou)
        matched[c] = boxes[sel[idx]]
    return out, matched


def remap(pred_boxes: Tensor, boxes: Tensor, labels: Tensor, difficult: Tensor, num_classes: int,
          pos_iou: float = 0.8, neg_iou: float = 0.4) -> Tensor:
    """Recognition targets from the predicted boxes (paper: "target remapping").

    Args:
        pred_boxes: (K, A, 4) predicted boxes of each class head (no gradient needed).
        boxes, labels, difficult: the image's GT as in :func:`assign`.
    Returns:
        (K, A) int8 labels in {1, 0, -1}.
    """
    _check(boxes, labels, difficult, pos_iou, neg_iou)
    if pred_boxes.dim() != 3 or pred_boxes.shape[0] != num_classes or pred_boxes.shape[-1] != 4:
        raise ValueError(f"pred_boxes must be ({num_classes}, A, 4), got {tuple(pred_boxes.shape)}")
    pred_boxes = pred_boxes.detach()
    device = pred_boxes.device
    out = torch.zeros(pred_boxes.shape[:2], dtype=torch.int8, device=device)
    if boxes.shape[0] == 0 or pred_boxes.shape[1] == 0:
        return out
    boxes = boxes.to(device=device, dtype=pred_boxes.dtype)
    labels = labels.to(device)
    difficult = difficult.to(device=device, dtype=torch.bool)
    for c in torch.unique(labels).tolist():
        if not 0 <= c < num_classes:
            continue
        sel = (labels == c).nonzero().squeeze(1)
        iou = box_iou(pred_boxes[c], boxes[sel])  # (A, M_c)
        out[c], _ = labels_from_iou(iou, difficult[sel], pos_iou, neg_iou)
    return out
