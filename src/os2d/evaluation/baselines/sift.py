"""Local-feature baseline: SIFT keypoints, Lowe's ratio test, RANSAC homography per class (OpenCV).

Per class image: SIFT keypoints/descriptors once (image resized to area ``class_side^2``). Per input image:
SIFT is scale invariant (and doubles the image in its first octave), so it runs on the ORIGINAL image, only
shrunk when ``sqrt(w*h)`` exceeds ``max_image_side``; ``config.image_size`` and the pyramid are not used.
Every input descriptor is matched to its two nearest class descriptors and kept if ``d1 < ratio * d2``
(input -> class direction, so every instance of the class in the image can collect matches). Then, repeatedly: fit a homography class -> image with RANSAC, accept it
when it has at least ``min_inliers`` inliers and maps the class outline to a sane convex quadrilateral, emit
a detection (box = bounding box of the projected outline, corners = projected class corners, score = number
of inliers), remove its inliers and fit again for the next instance (at most ``max_instances``).

Rotations/flips of ``config`` are ignored (SIFT is rotation invariant; a flipped class image is a separate
class image, pass it as one). Convention: boxes in pixels of the image given to ``detect``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from os2d.config import InferenceConfig
from os2d.evaluation.baselines import require_cv2
from os2d.evaluation.baselines.views import ClassViews
from os2d.inference.decode import LevelCandidates, merge_and_nms
from os2d.io import size_after_resize_to_area
from os2d.results import Detections


@dataclass
class _ClassFeatures:
    size: tuple[int, int]  # (w, h) of the image the keypoints were computed on
    points: np.ndarray  # (N, 2) float32 keypoint positions
    descriptors: np.ndarray  # (N, 128) float32


def _gray(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"))


def quad_is_sane(quad: np.ndarray, *, min_area: float, max_area: float, min_fill: float = 0.3) -> bool:
    """A projected class outline (4, 2) in order tl, tr, br, bl: convex, not degenerate, area within bounds,
    and filling at least ``min_fill`` of its bounding box (rejects needle-like homographies)."""
    q = np.asarray(quad, np.float64)
    if not np.all(np.isfinite(q)):
        return False
    d = np.roll(q, -1, axis=0) - q
    cross = d[:, 0] * np.roll(d, -1, axis=0)[:, 1] - d[:, 1] * np.roll(d, -1, axis=0)[:, 0]
    if not (np.all(cross > 0) or np.all(cross < 0)):
        return False
    area = 0.5 * abs(float(np.sum(q[:, 0] * np.roll(q[:, 1], -1) - np.roll(q[:, 0], -1) * q[:, 1])))
    bw, bh = q[:, 0].max() - q[:, 0].min(), q[:, 1].max() - q[:, 1].min()
    return min_area <= area <= max_area and bw > 0 and bh > 0 and area >= min_fill * bw * bh


class SiftMatcher:
    """SIFT + ratio test + iterative RANSAC homographies (see the module docstring)."""

    def __init__(self, config: InferenceConfig, *, name: str = "sift", ratio: float = 0.8, min_inliers: int = 6,
                 ransac_threshold: float = 5.0, max_instances: int = 5, class_side: int = 480,
                 max_image_side: int = 1500, max_features: int = 0) -> None:
        cv2 = require_cv2()
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        if min_inliers < 4:
            raise ValueError("min_inliers must be at least 4 (a homography has 4 point pairs)")
        self.config = config
        self.name = name
        self.ratio = float(ratio)
        self.min_inliers = int(min_inliers)
        self.ransac_threshold = float(ransac_threshold)
        self.max_instances = int(max_instances)
        self.class_side = int(class_side)
        self.max_image_side = int(max_image_side)
        self.max_features = int(max_features)
        self._sift = cv2.SIFT_create(nfeatures=self.max_features)
        self._matcher = cv2.BFMatcher(cv2.NORM_L2)
        self.views = ClassViews()  # the class images themselves: no rotated/flipped views
        self._classes: list[_ClassFeatures] = []  # one per class image

    def _features(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kps, desc = self._sift.detectAndCompute(gray, None)
        if desc is None or not kps:
            return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
        return np.array([k.pt for k in kps], np.float32), desc.astype(np.float32)

    @property
    def class_names(self) -> list[str]:
        return self.views.class_names

    def add_class(self, name: str, images: Sequence[Image.Image]) -> None:
        for img in self.views.add(name, images):
            resized = img.resize(size_after_resize_to_area(*img.size, self.class_side), Image.BILINEAR)
            pts, desc = self._features(_gray(resized))
            self._classes.append(_ClassFeatures(resized.size, pts, desc))

    def _instances(self, cls: _ClassFeatures, pts: np.ndarray, desc: np.ndarray,
                   size: tuple[int, int]) -> list[tuple[np.ndarray, float]]:
        """(projected corners tl, tr, bl, br (4, 2), inlier count) of each accepted instance."""
        cv2 = require_cv2()
        if len(cls.descriptors) < 2 or len(desc) < self.min_inliers:
            return []
        knn = self._matcher.knnMatch(desc, cls.descriptors, k=2)
        good = [m[0] for m in knn if len(m) == 2 and m[0].distance < self.ratio * m[1].distance]
        if len(good) < self.min_inliers:
            return []
        src = np.array([cls.points[m.trainIdx] for m in good], np.float32)  # class image
        dst = np.array([pts[m.queryIdx] for m in good], np.float32)  # input image
        w, h = cls.size
        outline = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32).reshape(-1, 1, 2)  # tl, tr, br, bl
        image_area = float(size[0] * size[1])
        found = []
        for _ in range(self.max_instances):
            if len(src) < self.min_inliers:
                break
            hmat, mask = cv2.findHomography(src, dst, cv2.RANSAC, self.ransac_threshold)
            if hmat is None or mask is None:
                break
            inl = mask.ravel().astype(bool)
            n_in = int(inl.sum())
            if n_in < self.min_inliers:
                break
            quad = cv2.perspectiveTransform(outline, hmat).reshape(4, 2)
            if quad_is_sane(quad, min_area=16.0, max_area=4.0 * image_area):
                found.append((quad[[0, 1, 3, 2]], float(n_in)))  # -> tl, tr, bl, br
            src, dst = src[~inl], dst[~inl]
        return found

    def detect(self, image: Image.Image) -> Detections:
        size = image.size
        if not self._classes:
            return Detections.empty(self.class_names, size)
        f = min(1.0, self.max_image_side / math.sqrt(size[0] * size[1]))
        level = image if f == 1.0 else image.resize((max(1, int(size[0] * f)), max(1, int(size[1] * f))),
                                                    Image.BILINEAR)
        pts, desc = self._features(_gray(level))
        sx, sy = size[0] / level.width, size[1] / level.height
        cands: list[LevelCandidates] = []
        ow, oh = size
        for v, cls in enumerate(self._classes):
            for corners, score in self._instances(cls, pts, desc, level.size):
                c = torch.from_numpy(corners.astype(np.float32)) * torch.tensor([sx, sy])  # (4, 2) original px
                box = torch.stack([c[:, 0].min().clamp(0, ow), c[:, 1].min().clamp(0, oh),
                                   c[:, 0].max().clamp(0, ow), c[:, 1].max().clamp(0, oh)])
                if box[2] <= box[0] or box[3] <= box[1]:
                    continue
                cands.append(LevelCandidates(box[None], torch.tensor([score]), torch.tensor([v]), c[None]))
        return merge_and_nms(cands, self.views.view_class_tensor(), self.class_names, size, self.config)

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "ratio": self.ratio, "min_inliers": self.min_inliers,
                "ransac_threshold": self.ransac_threshold, "max_instances": self.max_instances,
                "class_side": self.class_side, "max_image_side": self.max_image_side}


__all__ = ["SiftMatcher", "quad_is_sane"]
