"""Pascal VOC style detection metrics (per-class AP, mAP, weighted mAP, recall, joint-classes AP).

Follows the procedure of the reference ``os2d/data/voc_eval.py`` (itself from maskrcnn-benchmark /
chainercv), with all-point interpolation (``use_07_metric=False``):

* per image and class, detections are taken in decreasing score order; each is assigned to the GT box
  of the same class with the highest IoU (VOC convention: the arg-max GT, even when it is already taken);
  if that IoU is below ``iou_threshold`` the detection is a false positive (FP);
* a detection assigned to a *difficult* GT is ignored (neither TP nor FP);
* the first (highest scoring) detection assigned to a non-difficult GT is a TP, later ones are FP;
* ``n_pos`` of a class counts only its non-difficult GT; a class with ``n_pos == 0`` gets AP = NaN
  and is skipped by the (nan-)mean;
* AP is the area under the precision/recall curve, precision made monotone from the right and
  summed at the points where recall changes.

Coordinates are continuous pixels (x1, y1, x2, y2) by default; ``plus_one=True`` uses the VOC integer
convention of the reference (width = x2 - x1 + 1), which slightly enlarges every box (both IoUs:
:func:`os2d.ops.boxes.box_iou`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from os2d.ops.boxes import box_iou

__all__ = [
    "EvalResult",
    "ImageDetections",
    "ImageGroundTruth",
    "PRCurve",
    "average_precision",
    "evaluate_detections",
]


def _np(x: Any, dtype: Any) -> np.ndarray:
    """Convert a numpy array / torch tensor / sequence to a numpy array of ``dtype``."""
    if x is None:
        return np.zeros(0, dtype=dtype)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _boxes(x: Any) -> np.ndarray:
    b = _np(x, np.float64)
    if b.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {b.shape}")
    return b


@dataclass
class ImageGroundTruth:
    """Ground truth of one image: ``boxes_xyxy`` (N, 4), ``labels`` (N,) ints, ``difficult`` (N,) bool."""

    boxes_xyxy: Any
    labels: Any
    difficult: Any = None

    def __post_init__(self) -> None:
        self.boxes_xyxy = _boxes(self.boxes_xyxy)
        self.labels = _np(self.labels, np.int64).reshape(-1)
        n = len(self.boxes_xyxy)
        self.difficult = (np.zeros(n, dtype=bool) if self.difficult is None
                          else _np(self.difficult, bool).reshape(-1))
        if len(self.labels) != n or len(self.difficult) != n:
            raise ValueError("ImageGroundTruth: boxes_xyxy, labels and difficult must have the same length")


@dataclass
class ImageDetections:
    """Detections of one image: ``boxes_xyxy`` (M, 4), ``scores`` (M,), ``labels`` (M,) ints.

    Any object with these three attributes (e.g. :class:`os2d.results.Detections`) is accepted by
    :func:`evaluate_detections` as well.
    """

    boxes_xyxy: Any
    scores: Any
    labels: Any

    def __post_init__(self) -> None:
        self.boxes_xyxy = _boxes(self.boxes_xyxy)
        self.scores = _np(self.scores, np.float64).reshape(-1)
        self.labels = _np(self.labels, np.int64).reshape(-1)
        n = len(self.boxes_xyxy)
        if len(self.scores) != n or len(self.labels) != n:
            raise ValueError("ImageDetections: boxes_xyxy, scores and labels must have the same length")


@dataclass
class PRCurve:
    """Precision/recall curve of one class, detections in decreasing score order (ignored ones dropped).

    ``recall`` is all-NaN for a class without non-difficult GT.
    """

    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray


@dataclass
class EvalResult:
    """Result of :func:`evaluate_detections`."""

    iou_threshold: float
    ap_per_class: np.ndarray  # (C,), NaN for classes without non-difficult GT
    map: float  # nanmean of ap_per_class (NaN if no class has GT)
    map_weighted: float  # mean weighted by num_gt_per_class
    recall: float  # total TP / total n_pos, pooled over classes
    ap_joint_classes: float  # AP with all classes merged into one label
    num_gt_per_class: np.ndarray  # (C,) number of non-difficult GT
    num_tp_per_class: np.ndarray  # (C,)
    num_fp_per_class: np.ndarray  # (C,)
    precision_recall: list[PRCurve] = field(default_factory=list)
    class_names: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary; NaN becomes ``None``."""

        def f(v: float) -> float | None:
            v = float(v)
            return None if math.isnan(v) else v

        t = f"{self.iou_threshold:.2f}"
        names = self.class_names or [str(i) for i in range(len(self.ap_per_class))]
        return {
            f"mAP@{t}": f(self.map),
            f"mAPw@{t}": f(self.map_weighted),
            f"recall@{t}": f(self.recall),
            f"AP_joint_classes@{t}": f(self.ap_joint_classes),
            "num_gt": int(self.num_gt_per_class.sum()),
            "per_class": {
                names[c]: {
                    f"AP@{t}": f(self.ap_per_class[c]),
                    "num_gt": int(self.num_gt_per_class[c]),
                    "num_tp": int(self.num_tp_per_class[c]),
                    "num_fp": int(self.num_fp_per_class[c]),
                }
                for c in range(len(self.ap_per_class))
            },
        }


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """All-point interpolated AP (VOC2010+, ``use_07_metric=False``)."""
    precision = np.nan_to_num(np.asarray(precision, dtype=np.float64))
    recall = np.asarray(recall, dtype=np.float64)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # monotone from the right
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _match_image(det_boxes: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray,
                 gt: ImageGroundTruth, iou_threshold: float, plus_one: bool,
                 gt_labels: np.ndarray) -> np.ndarray:
    """Match flags for the detections of one image: 1 = TP, 0 = FP, -1 = ignored (difficult GT)."""
    m = len(det_scores)
    match = np.zeros(m, dtype=np.int8)
    if m == 0 or len(gt.boxes_xyxy) == 0:
        return match
    iou = box_iou(torch.from_numpy(np.ascontiguousarray(det_boxes, np.float64)),
                  torch.from_numpy(np.ascontiguousarray(gt.boxes_xyxy, np.float64)), plus_one=plus_one).numpy()
    iou[det_labels[:, None] != gt_labels[None, :]] = -1.0  # only same-class GT can be matched
    gt_idx = iou.argmax(axis=1)
    matched = iou[np.arange(m), gt_idx] >= iou_threshold
    difficult = matched & gt.difficult[gt_idx]
    match[difficult] = -1
    # among detections on a non-difficult GT, the highest scoring one is TP, the others duplicates (FP)
    cand = np.flatnonzero(matched & ~difficult)
    if len(cand):
        order = cand[np.argsort(-det_scores[cand], kind="stable")]
        _, first = np.unique(gt_idx[order], return_index=True)
        match[order[first]] = 1
    return match


def _pr_from_matches(scores: np.ndarray, match: np.ndarray, n_pos: int) -> tuple[float, PRCurve, int, int]:
    keep = match >= 0
    scores, match = scores[keep], match[keep]
    order = np.argsort(-scores, kind="stable")
    scores, match = scores[order], match[order]
    tp = np.cumsum(match == 1)
    fp = np.cumsum(match == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = tp / np.maximum(tp + fp, 1)
    n_tp = int(tp[-1]) if len(tp) else 0
    n_fp = int(fp[-1]) if len(fp) else 0
    if n_pos == 0:
        return float("nan"), PRCurve(prec, np.full(len(prec), np.nan), scores), n_tp, n_fp
    rec = tp / n_pos
    return average_precision(prec, rec), PRCurve(prec, rec, scores), n_tp, n_fp


def _evaluate(dets: list[ImageDetections], gts: list[ImageGroundTruth], num_classes: int,
              iou_threshold: float, plus_one: bool, joint: bool):
    all_scores, all_labels, all_match = [], [], []
    n_pos = np.zeros(num_classes, dtype=np.int64)
    for d, g in zip(dets, gts, strict=True):
        d_labels = np.zeros_like(d.labels) if joint else d.labels
        g_labels = np.zeros_like(g.labels) if joint else g.labels
        n_pos += np.bincount(g_labels[~g.difficult], minlength=num_classes)[:num_classes]
        all_match.append(_match_image(d.boxes_xyxy, d.scores, d_labels, g, iou_threshold, plus_one, g_labels))
        all_scores.append(d.scores)
        all_labels.append(d_labels)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    labels = np.concatenate(all_labels) if all_labels else np.zeros(0, dtype=np.int64)
    match = np.concatenate(all_match) if all_match else np.zeros(0, dtype=np.int8)
    aps = np.full(num_classes, np.nan)
    curves, n_tp, n_fp = [], np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
    for c in range(num_classes):
        sel = labels == c
        aps[c], curve, n_tp[c], n_fp[c] = _pr_from_matches(scores[sel], match[sel], int(n_pos[c]))
        curves.append(curve)
    return aps, n_pos, n_tp, n_fp, curves


def evaluate_detections(detections: Sequence[Any], ground_truth: Sequence[Any], num_classes: int,
                        iou_threshold: float = 0.5, plus_one: bool = False,
                        class_names: Sequence[str] | None = None) -> EvalResult:
    """Evaluate detections against ground truth, one entry per image in both sequences.

    Args:
        detections: per image, an :class:`ImageDetections` or any object with ``boxes_xyxy``,
            ``scores`` and ``labels`` attributes (numpy arrays or torch tensors).
        ground_truth: per image, an :class:`ImageGroundTruth` or any object with ``boxes_xyxy``,
            ``labels`` and optionally ``difficult``.
        num_classes: labels must lie in ``[0, num_classes)``.
        iou_threshold: a detection matches a GT when IoU >= this.
        plus_one: VOC integer pixel convention for IoU (as in the reference implementation).
        class_names: optional names used as keys of ``to_dict()["per_class"]``.
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"got {len(detections)} detection entries but {len(ground_truth)} ground-truth entries")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError("class_names must have num_classes entries")
    dets = [d if isinstance(d, ImageDetections) else ImageDetections(d.boxes_xyxy, d.scores, d.labels)
            for d in detections]
    gts = [g if isinstance(g, ImageGroundTruth)
           else ImageGroundTruth(g.boxes_xyxy, g.labels, getattr(g, "difficult", None)) for g in ground_truth]
    for what, items in (("detection", dets), ("ground-truth", gts)):
        for it in items:
            if len(it.labels) and (it.labels.min() < 0 or it.labels.max() >= num_classes):
                raise ValueError(f"{what} label out of range [0, {num_classes})")

    aps, n_pos, n_tp, n_fp, curves = _evaluate(dets, gts, num_classes, iou_threshold, plus_one, joint=False)
    has_gt = n_pos > 0
    mean_ap = float(np.mean(aps[has_gt])) if has_gt.any() else float("nan")
    weighted = float(np.sum(aps[has_gt] * n_pos[has_gt]) / n_pos.sum()) if has_gt.any() else float("nan")
    recall = float(n_tp.sum() / n_pos.sum()) if n_pos.sum() > 0 else float("nan")
    joint_aps = _evaluate(dets, gts, 1, iou_threshold, plus_one, joint=True)[0] if num_classes > 0 else [np.nan]
    return EvalResult(
        iou_threshold=float(iou_threshold), ap_per_class=aps, map=mean_ap, map_weighted=weighted,
        recall=recall, ap_joint_classes=float(joint_aps[0]), num_gt_per_class=n_pos,
        num_tp_per_class=n_tp, num_fp_per_class=n_fp, precision_recall=curves,
        class_names=list(class_names) if class_names is not None else None,
    )
