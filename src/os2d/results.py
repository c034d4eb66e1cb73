"""User-facing result containers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class Detections:
    """Detections of one image, sorted by decreasing score.

    Convention: coordinates are pixels of the ORIGINAL image, x right, y down, xyxy without +1.

    Attributes:
        boxes_xyxy: (N, 4) float32.
        scores: (N,) float32, raw pooled correlation (higher = better; not a probability).
        labels: (N,) int64 index into ``class_names``.
        corners_xy: (N, 4, 2) the aligned class grid's corners (class top-left, top-right, bottom-left,
            bottom-right): a parallelogram showing the estimated pose of the class image.
        class_names: names of the labels.
        image_size: (width, height) of the original image.
    """

    boxes_xyxy: Tensor
    scores: Tensor
    labels: Tensor
    corners_xy: Tensor
    class_names: list[str] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return int(self.scores.numel())

    @classmethod
    def empty(cls, class_names: list[str] | None = None, image_size: tuple[int, int] = (0, 0)) -> Detections:
        return cls(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4, 2),
                   list(class_names or []), image_size)

    @property
    def label_names(self) -> list[str]:
        return [self.class_names[i] for i in self.labels.tolist()]

    def filter(self, keep: Tensor) -> Detections:
        """Subset by a boolean mask or index tensor."""
        return Detections(self.boxes_xyxy[keep], self.scores[keep], self.labels[keep], self.corners_xy[keep],
                          self.class_names, self.image_size)

    def to_list(self) -> list[dict[str, Any]]:
        """The JSON detection records of the ``os2d detect`` output contract."""
        out = []
        for box, score, label, corners in zip(self.boxes_xyxy.tolist(), self.scores.tolist(), self.labels.tolist(),
                                              self.corners_xy.tolist(), strict=True):
            out.append({
                "label": self.class_names[label],
                "score": round(float(score), 6),
                "box_xyxy": [round(v, 2) for v in box],
                "corners_xy": [[round(x, 2), round(y, 2)] for x, y in corners],
            })
        return out
