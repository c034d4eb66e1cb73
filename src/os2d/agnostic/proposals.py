"""Class-agnostic proposals of one image: the head on every pyramid level, boxes mapped to original pixels,
one NMS over all levels.

Convention: boxes in pixels of the image given to :meth:`AgnosticDetector.propose` (xyxy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from os2d.agnostic.config import HeadConfig
from os2d.agnostic.head import ObjectnessHead, boxes_from_distances, cell_centers
from os2d.config import InferenceConfig
from os2d.inference.pyramid import pyramid_sizes
from os2d.io import image_to_tensor
from os2d.model.os2d import Os2dModel
from os2d.ops import nms

PER_LEVEL_TOP_K = 1000  # best cells per level before the NMS


@dataclass
class Proposals:
    """Class-agnostic boxes of one image, sorted by decreasing score."""

    boxes_xyxy: Tensor  # (M, 4) original pixels
    scores: Tensor  # (M,) objectness in [0, 1]


@dataclass
class PyramidLevel:
    """One pyramid level of an image: its size and the trunk's features."""

    size: tuple[int, int]  # (w, h) level pixels
    features: Tensor  # (C, H, W) without anchor padding


class AgnosticDetector:
    """The frozen trunk of an OS2D model + a trained :class:`ObjectnessHead`."""

    def __init__(self, model: Os2dModel, head: ObjectnessHead, head_config: HeadConfig) -> None:
        if model.feature_channels != head_config.in_channels:
            raise ValueError(f"the detector head expects {head_config.in_channels}-channel features, the model's "
                             f"trunk gives {model.feature_channels}")
        self.model = model
        self.head = head.eval()
        self.head_config = head_config

    @torch.no_grad()
    def level_boxes(self, level_image: Tensor) -> tuple[Tensor, Tensor]:
        """One level image (3, h, w) in [0, 1] -> boxes (H*W, 4) in level pixels and scores (H*W,)."""
        return self.boxes_from_features(self.model.extract_features(level_image[None], align_to_anchors=False))

    @torch.no_grad()
    def boxes_from_features(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """Trunk features (1, C, H, W) of a level -> boxes (H*W, 4) in level pixels and scores (H*W,)."""
        out = self.head(feats.to(next(self.head.parameters()).dtype))
        stride = float(self.head_config.stride)
        h, w = feats.shape[-2:]
        boxes = boxes_from_distances(cell_centers(h, w, stride, device=feats.device), out.distances(stride)[0].float())
        return boxes.view(-1, 4), out.scores()[0].float().reshape(-1)

    @torch.no_grad()
    def propose(self, image: Image.Image, config: InferenceConfig, *, max_proposals: int,
                nms_iou: float) -> Proposals:
        """Boxes of every level of ``image``'s pyramid (``config.image_size``/``scales``), clipped to the image,
        merged by NMS at ``nms_iou``; the ``max_proposals`` best."""
        return self.propose_with_levels(image, config, max_proposals=max_proposals, nms_iou=nms_iou)[0]

    @torch.no_grad()
    def propose_with_levels(self, image: Image.Image, config: InferenceConfig, *, max_proposals: int,
                            nms_iou: float) -> tuple[Proposals, list[PyramidLevel]]:
        """:meth:`propose`, and the trunk features of every pyramid level (for heads that pool them)."""
        device = next(self.model.parameters()).device
        ow, oh = image.size
        all_boxes, all_scores = [], []
        levels: list[PyramidLevel] = []
        for lw, lh in pyramid_sizes(ow, oh, config):
            level = image if (lw, lh) == image.size else image.resize((lw, lh), Image.BILINEAR)
            feats = self.model.extract_features(image_to_tensor(level)[None].to(device), align_to_anchors=False)
            levels.append(PyramidLevel((lw, lh), feats[0]))
            boxes, scores = self.boxes_from_features(feats)
            if scores.numel() > PER_LEVEL_TOP_K:
                scores, idx = scores.topk(PER_LEVEL_TOP_K)
                boxes = boxes[idx]
            boxes = boxes * torch.tensor([ow / lw, oh / lh, ow / lw, oh / lh], device=boxes.device)
            all_boxes.append(boxes)
            all_scores.append(scores)
        boxes = torch.cat(all_boxes)
        boxes = torch.stack([boxes[:, 0].clamp(0, ow), boxes[:, 1].clamp(0, oh),
                             boxes[:, 2].clamp(0, ow), boxes[:, 3].clamp(0, oh)], dim=-1)
        scores = torch.cat(all_scores)
        valid = (boxes[:, 2] - boxes[:, 0] >= 2) & (boxes[:, 3] - boxes[:, 1] >= 2)
        boxes, scores = boxes[valid], scores[valid]
        keep = nms(boxes, scores, nms_iou, max_keep=max_proposals)
        return Proposals(boxes[keep].cpu(), scores[keep].cpu()), levels


__all__ = ["AgnosticDetector", "PER_LEVEL_TOP_K", "Proposals", "PyramidLevel"]
