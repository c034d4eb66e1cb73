"""Template-matching baseline: multi-scale normalised cross-correlation (OpenCV ``matchTemplate``,
``TM_CCOEFF_NORMED``) of the class image over the input image, local maxima as detections, per-class NMS.

Scales follow the OS2D pyramid semantics: the input is resized so that ``sqrt(w*h) = config.image_size``
(the base level) and, for every pyramid scale ``s`` of ``config.scales``, the class image is matched at
area ``(class_image_size / s)^2`` base pixels - the object size OS2D's level ``s`` detects (its class grid
covers ``class_image_size`` pixels of a level resized by ``s``). ``object_scales`` overrides this with
explicit template sizes ``class_image_size * t``. To bound cost, each scale is matched at a working
resolution where the template's side (``sqrt(w*h)``) is at most ``max_template_side`` pixels.

Convention: boxes in pixels of the image given to ``detect``; score = correlation coefficient in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from os2d.config import InferenceConfig
from os2d.evaluation.baselines import require_cv2
from os2d.evaluation.baselines.sliding import candidates_from_boxes
from os2d.evaluation.baselines.views import ClassViews
from os2d.inference.decode import LevelCandidates, merge_and_nms
from os2d.io import size_after_resize_to_area
from os2d.results import Detections


def local_peaks(score_map: np.ndarray, radius: int, top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima of a 2-D map within a (2r+1)^2 neighbourhood, best ``top_k`` first.

    Returns:
        ys, xs (int arrays) and their scores, sorted by decreasing score.
    """
    cv2 = require_cv2()
    m = np.nan_to_num(score_map.astype(np.float32), nan=-1.0, posinf=-1.0, neginf=-1.0)
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    dilated = cv2.dilate(m, kernel)
    ys, xs = np.nonzero(m >= dilated)
    scores = m[ys, xs]
    order = np.argsort(-scores, kind="stable")[:top_k]
    return ys[order], xs[order], scores[order]


class TemplateMatcher:
    """Multi-scale normalised cross-correlation with class views from ``config`` (rotations/flips)."""

    def __init__(self, config: InferenceConfig, *, name: str = "template", class_image_size: int = 240,
                 object_scales: Sequence[float] | None = None, max_template_side: int = 96,
                 peaks_per_scale: int = 50, peak_radius: float = 0.25, grayscale: bool = False) -> None:
        require_cv2()
        if object_scales is not None and (not object_scales or any(t <= 0 for t in object_scales)):
            raise ValueError(f"object_scales must be positive, got {object_scales}")
        if max_template_side < 8 or class_image_size < 8:
            raise ValueError("max_template_side and class_image_size must be at least 8 pixels")
        self.config = config
        self.name = name
        self.class_image_size = int(class_image_size)
        self.object_scales = (tuple(float(t) for t in object_scales) if object_scales is not None
                              else tuple(1.0 / s for s in config.scales))
        self.max_template_side = int(max_template_side)
        self.peaks_per_scale = int(peaks_per_scale)
        self.peak_radius = float(peak_radius)
        self.grayscale = grayscale
        self.views = ClassViews()
        self._templates: list[Image.Image] = []  # one per class view

    @property
    def class_names(self) -> list[str]:
        return self.views.class_names

    def add_class(self, name: str, images: Sequence[Image.Image]) -> None:
        for view in self.views.add(name, images, rotations=self.config.rotations,
                                   horizontal_flip=self.config.horizontal_flip):
            self._templates.append(view.convert("L") if self.grayscale else view.convert("RGB"))

    def _base_factor(self, size: tuple[int, int]) -> float:
        if self.config.image_size is None:
            return 1.0
        return self.config.image_size / math.sqrt(size[0] * size[1])

    def detect(self, image: Image.Image) -> Detections:
        cv2 = require_cv2()
        size = image.size
        if not self._templates:
            return Detections.empty(self.class_names, size)
        base = self._base_factor(size)
        work_src = image.convert("L") if self.grayscale else image.convert("RGB")
        cands: list[LevelCandidates] = []
        for t in self.object_scales:
            side_base = self.class_image_size * t  # template side in base-level pixels
            f = min(1.0, self.max_template_side / side_base)  # working resolution / base level
            ww, wh = max(1, int(size[0] * base * f)), max(1, int(size[1] * base * f))
            work = np.asarray(work_src.resize((ww, wh), Image.BILINEAR))
            target = max(1, int(round(side_base * f)))
            for v, view in enumerate(self._templates):
                tw, th = size_after_resize_to_area(*view.size, target)
                if tw < 4 or th < 4 or tw > ww or th > wh:
                    continue
                templ = np.asarray(view.resize((tw, th), Image.BILINEAR))
                res = cv2.matchTemplate(work, templ, cv2.TM_CCOEFF_NORMED)  # (wh - th + 1, ww - tw + 1)
                radius = max(1, int(self.peak_radius * min(tw, th)))
                ys, xs, sc = local_peaks(res, radius, self.peaks_per_scale)
                if len(sc) == 0:
                    continue
                boxes = np.stack([xs, ys, xs + tw, ys + th], axis=1).astype(np.float32)
                cands.append(candidates_from_boxes(torch.from_numpy(boxes), torch.from_numpy(sc.astype(np.float32)),
                                                   v, self.views.corner_orders[v], (ww, wh), size, self.config))
        return merge_and_nms(cands, self.views.view_class_tensor(), self.class_names, size, self.config)

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "object_scales": list(self.object_scales),
                "class_image_size": self.class_image_size, "max_template_side": self.max_template_side,
                "peaks_per_scale": self.peaks_per_scale, "grayscale": self.grayscale}


__all__ = ["TemplateMatcher", "local_peaks"]
