"""The paper's two sliding-window baselines (Sec. 5, "Sliding window baselines"): OS2D's feature extractor and
image pyramid, no learned transformation. (OS2D itself is :class:`os2d.evaluation.detector_method.DetectorMethod`.)

* ``square``: class feature maps resized to the S x S grid the TransformNet sees, transformation fixed to the
  identity ("equivalent to fixing the output of the transformation model to identity"). This IS the OS2D head
  with an identity TransformNet, so :func:`sliding_square` is the :class:`os2d.Detector` on the model with
  :class:`IdentityTransform` (exactly the output of a TransformNet whose last layer is zero with identity
  bias - the "default" weights - without running its convolutions). Score = mean of the inner (S-2b)^2 correlations along the identity grid,
  box = the 240 x 240 anchor window.
* ``target AR``: class features used at their own size h x w (aspect ratio of the class image kept), matched
  convolutionally: score = mean cosine similarity over the h x w window, box = the class image's size
  (area ``class_image_size^2``, its aspect ratio) centred on the window.

Convention: boxes in pixels of the image given to ``detect``; feature cell (k, l) of a pyramid level covers
pixels [16 l, 16 (l + 1)) x [16 k, 16 (k + 1)) of that level (the model's anchor layout).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from os2d.config import InferenceConfig
from os2d.evaluation.baselines.views import ClassViews, box_corners
from os2d.evaluation.detector_method import DetectorMethod
from os2d.inference.decode import LevelCandidates, merge_and_nms
from os2d.inference.pyramid import pyramid_sizes
from os2d.io import image_to_tensor, resize_to_area
from os2d.model.correlation import l2_normalize
from os2d.model.os2d import Os2dModel
from os2d.results import Detections


def candidates_from_boxes(boxes_xyxy: Tensor, scores: Tensor, view: int, corner_order: Sequence[int],
                          level_size: tuple[int, int], original_size: tuple[int, int],
                          config: InferenceConfig) -> LevelCandidates:
    """Clip (M, 4) level-pixel boxes to the level, drop empty/low ones, keep the top ``pre_nms_top_k``, map to
    original pixels. Shared by the baselines so their decoding matches :mod:`os2d.inference.decode`."""
    lw, lh = level_size
    boxes = torch.stack([boxes_xyxy[:, 0].clamp(0, lw), boxes_xyxy[:, 1].clamp(0, lh),
                         boxes_xyxy[:, 2].clamp(0, lw), boxes_xyxy[:, 3].clamp(0, lh)], dim=-1)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if config.score_threshold is not None:
        valid &= scores > config.score_threshold
    boxes, scores = boxes[valid], scores[valid]
    if config.pre_nms_top_k is not None and scores.numel() > config.pre_nms_top_k:
        scores, idx = scores.topk(config.pre_nms_top_k)
        boxes = boxes[idx]
    sx, sy = original_size[0] / lw, original_size[1] / lh
    boxes = boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype, device=boxes.device)
    ow, oh = original_size
    boxes = torch.minimum(boxes, torch.tensor([ow, oh, ow, oh], dtype=boxes.dtype, device=boxes.device))
    return LevelCandidates(boxes_xyxy=boxes, scores=scores,
                           views=torch.full((scores.numel(),), view, dtype=torch.long, device=scores.device),
                           corners_xy=box_corners(boxes, corner_order))


def local_maxima(scores: Tensor, window: int = 3) -> Tensor:
    """(H, W) boolean mask of the positions that are the maximum of their ``window`` x ``window``
    neighbourhood (ties all kept); ``window`` 1 keeps everything."""
    if window <= 1:
        return torch.ones_like(scores, dtype=torch.bool)
    pooled = F.max_pool2d(scores[None, None], window, stride=1, padding=window // 2)[0, 0]
    return scores >= pooled


class IdentityTransform(nn.Module):
    """Stands in for a TransformNet: the identity transform at every location (no convolutions run).

    Identical to a :class:`os2d.model.transform_net.TransformNet` after ``reset_to_identity()`` (last layer
    zero, bias = identity), whatever its hidden layers hold.
    """

    def __init__(self, num_params: int = 6) -> None:
        super().__init__()
        if num_params not in (4, 6):
            raise ValueError(f"num_params must be 4 or 6, got {num_params}")
        ident = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0] if num_params == 6 else [1.0, 0.0, 1.0, 0.0]
        self.num_params = num_params
        self.register_buffer("params", torch.tensor(ident), persistent=False)

    def forward(self, corr: Tensor) -> Tensor:
        n, _, h, w = corr.shape
        return self.params.to(corr.dtype).view(1, -1, 1, 1).expand(n, self.num_params, h, w)


def identity_model(model: Os2dModel) -> Os2dModel:
    """The same backbone (shared, not copied) with the transformation fixed to the identity."""
    out = Os2dModel(model.backbone, IdentityTransform(model.config.num_transform_params), model.config)
    return out.to(next(model.parameters()).device).eval()


def sliding_square(model: Os2dModel, config: InferenceConfig, *, name: str = "sliding-square") -> DetectorMethod:
    """Paper's "sliding window, square" baseline on ``model``'s feature extractor: the detector on
    :func:`identity_model`, without the detector's second looks (``verify_rescore``, ``refine_top``), which are
    os2d's additions, not the baseline's."""
    plain = config.replace(verify_rescore=0.0, refine_top=0)
    return DetectorMethod.from_model(identity_model(model), plain, name=name)


class SlidingWindowAR:
    """Paper's "sliding window, target AR" baseline: class features at their own h x w size.

    Each class view (class image resized to area ``class_image_size^2``) gives an h x w grid of L2-normalised
    features; at every window position of every pyramid level the score is the mean cosine similarity of the
    h*w cell pairs (input features L2-normalised per location; windows may hang over the border by half their
    size, the missing cells count as 0). The box is the class image's size centred on the window.

    Only local maxima of each score map (``peak_window`` x ``peak_window`` neighbourhood) become candidates:
    neighbouring windows of one peak are near-duplicates that NMS would drop anyway, and keeping them makes NMS
    the dominant cost (every position of every view and level).
    """

    def __init__(self, model: Os2dModel, config: InferenceConfig, *, name: str = "sliding-ar",
                 peak_window: int = 3) -> None:
        if peak_window < 1 or peak_window % 2 == 0:
            raise ValueError(f"peak_window must be a positive odd number, got {peak_window}")
        self.model = model
        self.config = config
        self.name = name
        self.peak_window = int(peak_window)
        self.views = ClassViews()
        self._weights: list[Tensor] = []  # (C, h, w) each: normalised features / (h*w)
        self._sizes: list[tuple[float, float]] = []  # (width, height) in pixels of the class view

    @property
    def class_names(self) -> list[str]:
        return self.views.class_names

    @torch.no_grad()
    def add_class(self, name: str, images: Sequence[Image.Image]) -> None:
        device = next(self.model.parameters()).device
        for view in self.views.add(name, images, rotations=self.config.rotations,
                                   horizontal_flip=self.config.horizontal_flip):
            resized = resize_to_area(view, self.model.config.class_image_size)
            t = image_to_tensor(resized).to(device)
            feats = self.model.extract_features(t[None], align_to_anchors=False)[0]  # (C, h, w)
            h, w = feats.shape[-2:]
            self._weights.append(l2_normalize(feats, dim=0) / float(h * w))
            self._sizes.append((float(resized.width), float(resized.height)))

    @torch.no_grad()
    def level_scores(self, level_image: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Scores and boxes of every view on one level image (3, H, W).

        Returns:
            per view: scores (Ho, Wo) and boxes (Ho, Wo, 4) in level pixels.
        """
        feats = l2_normalize(self.model.extract_features(level_image[None]), dim=1)  # (1, C, H, W)
        stride = float(self.model.stride)
        out: list[tuple[Tensor, Tensor]] = [None] * len(self._weights)  # type: ignore[list-item]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, wt in enumerate(self._weights):
            groups.setdefault(tuple(wt.shape[-2:]), []).append(i)  # type: ignore[arg-type]
        for (h, w), idx in groups.items():
            weight = torch.stack([self._weights[i] for i in idx]).to(feats.dtype)  # (K', C, h, w)
            ph, pw = h // 2, w // 2
            scores = F.conv2d(feats, weight, padding=(ph, pw))[0]  # (K', Ho, Wo)
            ho, wo = scores.shape[-2:]
            # window (i, j) covers cells [i - ph, i - ph + h) x [j - pw, j - pw + w): centre in pixels
            cy = (torch.arange(ho, dtype=feats.dtype, device=feats.device) - ph + h / 2.0) * stride
            cx = (torch.arange(wo, dtype=feats.dtype, device=feats.device) - pw + w / 2.0) * stride
            cyy, cxx = torch.meshgrid(cy, cx, indexing="ij")
            for k, i in enumerate(idx):
                bw, bh = self._sizes[i]
                boxes = torch.stack([cxx - bw / 2, cyy - bh / 2, cxx + bw / 2, cyy + bh / 2], dim=-1)
                out[i] = (scores[k], boxes)
        return out

    @torch.no_grad()
    def detect(self, image: Image.Image) -> Detections:
        size = image.size
        if not self._weights:
            return Detections.empty(self.class_names, size)
        device = next(self.model.parameters()).device
        cands: list[LevelCandidates] = []
        for lw, lh in pyramid_sizes(*size, self.config):
            level = image if (lw, lh) == size else image.resize((lw, lh), Image.BILINEAR)
            for v, (scores, boxes) in enumerate(self.level_scores(image_to_tensor(level).to(device))):
                peak = local_maxima(scores, self.peak_window)
                cands.append(candidates_from_boxes(boxes[peak], scores[peak], v, self.views.corner_orders[v],
                                                   (lw, lh), size, self.config))
        return merge_and_nms(cands, self.views.view_class_tensor(), self.class_names, size, self.config)

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "backbone": self.model.config.backbone, "peak_window": self.peak_window,
                "class_grids": sorted({f"{w.shape[-1]}x{w.shape[-2]}" for w in self._weights})}


__all__ = ["IdentityTransform", "SlidingWindowAR", "candidates_from_boxes", "identity_model", "local_maxima",
           "sliding_square"]
