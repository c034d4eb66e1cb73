"""Unknown items: boxes that look like a product of this photo but match no class of the gallery well enough.

An auditor wants to see what is missing from the gallery. The detections already hold the evidence: every class
is correlated everywhere, so an object that is in no gallery still collects weak matches (a similar package, the
same shape), while the photo's confident detections say how large its products are. A weak detection becomes an
``unknown`` item when

* its score is at least ``floor_score`` (it looks like something from the gallery, a little) and below
  ``known_score`` (no class claims it),
* its box has the size of the photo's known products: area within ``size_ratio`` of their median (without any
  confident detection in the photo, nothing is unknown: there is no notion of "a product" yet),
* it does not overlap a confident detection (IoU < ``overlap_iou``) nor a better unknown one (class-agnostic NMS).

Each item keeps the best class as ``closest`` (what it resembles) and its score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from os2d.ops import box_iou, nms
from os2d.results import PIXEL_DECIMALS, SCORE_DECIMALS, Detections


@dataclass(frozen=True)
class UnknownConfig:
    """Knobs of :func:`unknown_items` (fixed before they were measured; README "Unknown items")."""

    floor_margin: float = 0.15  # floor_score = known_score - floor_margin
    size_ratio: float = 2.0  # area within [median / r, median * r] of the confident detections
    overlap_iou: float = 0.3  # IoU with a confident detection (or a better unknown) that disqualifies
    max_items: int = 20  # per photo


@dataclass(frozen=True)
class UnknownItem:
    """A box that looks like a product of the photo but matches no class well enough."""

    score: float
    box_xyxy: tuple[float, float, float, float]
    closest: str

    def to_record(self) -> dict[str, Any]:
        return {"label": "unknown", "score": round(self.score, SCORE_DECIMALS), "closest": self.closest,
                "box_xyxy": [round(v, PIXEL_DECIMALS) for v in self.box_xyxy]}


def unknown_items(dets: Detections, known_score: float, config: UnknownConfig | None = None) -> list[UnknownItem]:
    """The unknown items among ``dets`` (all detections of one photo, any order), given the score at which a
    detection counts as known (``--score-threshold``, or the score of the weights' calibrated threshold)."""
    cfg = config or UnknownConfig()
    if not len(dets):
        return []
    boxes, scores = dets.boxes_xyxy.float(), dets.scores.float()
    known = scores >= known_score
    if not bool(known.any()):
        return []
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    typical = area[known].median()
    cand = (~known) & (scores >= known_score - cfg.floor_margin)
    cand &= (area >= typical / cfg.size_ratio) & (area <= typical * cfg.size_ratio)
    idx = torch.nonzero(cand).flatten()
    if not len(idx):
        return []
    free = (box_iou(boxes[idx], boxes[known]) < cfg.overlap_iou).all(dim=1)
    idx = idx[free]
    if not len(idx):
        return []
    keep = idx[nms(boxes[idx], scores[idx], cfg.overlap_iou, max_keep=cfg.max_items)]
    return [UnknownItem(float(scores[i]), tuple(float(v) for v in boxes[i].tolist()),  # type: ignore[arg-type]
                        dets.class_names[int(dets.labels[i])]) for i in keep.tolist()]


__all__ = ["UnknownConfig", "UnknownItem", "unknown_items"]
