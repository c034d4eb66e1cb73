"""The CoAE baseline (Hsieh et al. 2019), as the OS2D paper compares with it: class-agnostic proposals ranked by a
query-conditioned head with co-attention and co-excitation (:mod:`os2d.coae`).

* proposals: the class-agnostic detector stored in the CoAE weights file, on every pyramid level of the image
  (:meth:`os2d.agnostic.proposals.AgnosticDetector.propose_with_levels`), ``num_proposals`` after one NMS;
* each proposal is RoI-pooled from the pyramid level where its size is closest to the head's
  ``target_object_size`` (the object size it was trained at);
* class views are resized to ``query_size`` x ``query_size`` and run through the same trunk;
* score of (proposal, view) = sigmoid of the head's logit, box = the proposal refined by the head's deltas; views
  merged and NMS-ed per class by :func:`os2d.inference.decode.merge_and_nms`, as for every other method.

Convention: boxes in pixels of the image given to ``detect``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from os2d.agnostic.proposals import AgnosticDetector, Proposals, PyramidLevel
from os2d.coae.head import decode_boxes
from os2d.coae.roi import roi_align
from os2d.coae.weights import load_coae
from os2d.config import InferenceConfig
from os2d.evaluation.baselines.views import ClassViews, box_corners
from os2d.inference.decode import LevelCandidates, merge_and_nms
from os2d.io import image_to_tensor
from os2d.model.os2d import Os2dModel
from os2d.results import Detections
from os2d.weights.fingerprint import model_fingerprint
from os2d.weights.registry import ASSETS_DIR

logger = logging.getLogger(__name__)

DEFAULT_COAE = ASSETS_DIR / "coae_lite0.pt"  # trained on the default model's trunk (recipes/coae/run.sh)
VIEW_BATCH = 32  # class views per trunk call


def assign_levels(boxes_xyxy: Tensor, image_size: tuple[int, int], levels: Sequence[PyramidLevel],
                  target_size: float) -> Tensor:
    """(M,) index of the level where each box's sqrt(w*h) is closest (in log scale) to ``target_size``."""
    ow = image_size[0]
    side = ((boxes_xyxy[:, 2] - boxes_xyxy[:, 0]) * (boxes_xyxy[:, 3] - boxes_xyxy[:, 1])).clamp(min=1).sqrt()
    ratios = torch.tensor([lv.size[0] / ow for lv in levels])  # (L,)
    return (torch.log(side[:, None] * ratios[None]) - math.log(target_size)).abs().argmin(dim=1)


class CoaeMethod:
    """CoAE on one OS2D model's trunk (a :class:`DetectionMethod`).

    Args:
        model: its trunk computes the features (the heads must have been trained on the same trunk).
        config: pyramid (``image_size``, ``scales``), NMS, score threshold and detection cap.
        weights: :func:`os2d.coae.weights.save_coae` file (default: the packaged one).
        num_proposals: proposals per image (default: the file's).
    """

    def __init__(self, model: Os2dModel, config: InferenceConfig, *, weights: str | Path | None = None,
                 name: str = "coae", num_proposals: int | None = None) -> None:
        path = Path(weights) if weights is not None else DEFAULT_COAE
        if not path.is_file():
            raise FileNotFoundError(f"CoAE weights not found: {path} (train them with `os2d train-coae`)")
        w = load_coae(path)
        if model.feature_channels != w.head_config.in_channels:
            raise ValueError(f"the CoAE head expects {w.head_config.in_channels}-channel features, the model's trunk "
                             f"gives {model.feature_channels}")
        self.model = model
        self.config = config
        self.name = name
        self.weights_path = path
        self.head_config = w.head_config
        self.num_proposals = num_proposals or w.num_proposals
        self.proposal_nms_iou = w.proposal_nms_iou
        device = next(model.parameters()).device
        self.head = w.head.to(device)
        self.detector = AgnosticDetector(model, w.proposal_head.to(device), w.proposal_head_config)
        self.trunk_matches = w.trunk_fingerprint in (None, model_fingerprint(model))
        if not self.trunk_matches:
            logger.warning("the CoAE weights %s were trained on the trunk of %r; this model differs: expect poor "
                           "results", path, w.trunk)
        self.views = ClassViews()
        self._queries: list[Tensor] = []  # (C, h, w) each

    @property
    def class_names(self) -> list[str]:
        return self.views.class_names

    @torch.no_grad()
    def add_class(self, name: str, images: Sequence[Image.Image]) -> None:
        views = self.views.add(name, images, rotations=self.config.rotations,
                               horizontal_flip=self.config.horizontal_flip)
        size = self.head_config.query_size
        device = next(self.model.parameters()).device
        for start in range(0, len(views), VIEW_BATCH):
            batch = torch.stack([image_to_tensor(v.resize((size, size), Image.BILINEAR))
                                 for v in views[start:start + VIEW_BATCH]]).to(device)
            self._queries += list(self.model.extract_features(batch, align_to_anchors=False))

    @torch.no_grad()
    def proposals(self, image: Image.Image) -> tuple[Proposals, Tensor, Tensor]:
        """Class-agnostic proposals of ``image``, their (M, C, P, P) RoI features and (M, 4) boxes in the pixels
        of the level each was pooled from, scaled back by (M, 4) factors (level -> original)."""
        hc = self.head_config
        props, levels = self.detector.propose_with_levels(image, self.config, max_proposals=self.num_proposals,
                                                          nms_iou=self.proposal_nms_iou)
        m = props.boxes_xyxy.shape[0]
        feats = torch.zeros(m, hc.in_channels, hc.pool_size, hc.pool_size)
        level_boxes = torch.zeros(m, 4)
        to_original = torch.ones(m, 4)
        if m == 0:
            return props, feats, torch.stack([level_boxes, to_original])
        which = assign_levels(props.boxes_xyxy, image.size, levels, hc.target_object_size)
        for li, level in enumerate(levels):
            idx = torch.nonzero(which == li)[:, 0]
            if idx.numel() == 0:
                continue
            scale = torch.tensor([level.size[0] / image.width, level.size[1] / image.height] * 2)
            boxes = props.boxes_xyxy[idx] * scale
            feats[idx] = roi_align(level.features.float(), boxes.to(level.features.device), stride=hc.stride,
                                   size=hc.pool_size, sampling=hc.sampling).cpu()
            level_boxes[idx] = boxes
            to_original[idx] = 1 / scale
        return props, feats, torch.stack([level_boxes, to_original])

    @torch.no_grad()
    def detect(self, image: Image.Image) -> Detections:
        if not self._queries:
            return Detections.empty(self.class_names, image.size)
        props, feats, (level_boxes, to_original) = self.proposals(image)
        if props.scores.numel() == 0:
            return Detections.empty(self.class_names, image.size)
        device = next(self.head.parameters()).device
        feats = feats.to(device)
        ow, oh = image.size
        cands = []
        for v, query in enumerate(self._queries):
            logits, deltas = self.head(feats, query.float())
            scores = logits.sigmoid().cpu()
            boxes = decode_boxes(level_boxes, deltas.float().cpu()) * to_original
            boxes = torch.stack([boxes[:, 0].clamp(0, ow), boxes[:, 1].clamp(0, oh),
                                 boxes[:, 2].clamp(0, ow), boxes[:, 3].clamp(0, oh)], dim=-1)
            if self.config.score_threshold is not None:
                keep = scores > self.config.score_threshold
                scores, boxes = scores[keep], boxes[keep]
            cands.append(LevelCandidates(boxes_xyxy=boxes, scores=scores,
                                         views=torch.full((scores.numel(),), v, dtype=torch.long),
                                         corners_xy=box_corners(boxes, self.views.corner_orders[v])))
        return merge_and_nms(cands, self.views.view_class_tensor(), self.class_names, image.size, self.config)

    def describe(self) -> dict[str, Any]:
        hc = self.head_config
        return {"method": self.name, "backbone": self.model.config.backbone, "weights": str(self.weights_path),
                "num_proposals": self.num_proposals, "proposal_nms_iou": self.proposal_nms_iou,
                "query_size": hc.query_size, "pool_size": hc.pool_size, "target_object_size": hc.target_object_size,
                "trunk_matches": self.trunk_matches}


__all__ = ["DEFAULT_COAE", "CoaeMethod", "assign_levels"]
