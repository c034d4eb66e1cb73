"""The paper's main baseline (Sec. 6.2, "object detector + retrieval"): a class-agnostic detector proposes
boxes, a retrieval system ranks them against the class images.

* detector: :class:`os2d.agnostic.proposals.AgnosticDetector`, the frozen trunk of the OS2D model + a dense
  objectness head trained on training classes only (``os2d train-detector``; weights file with the head, its
  config, the retrieval config and the fitted whitening);
* retrieval: every proposal is cropped from the image, resized to ``crop_size`` x ``crop_size``, embedded by
  GeM pooling of the same trunk's features, L2-normalised, optionally whitened; class views likewise;
* score of (box, class view) = cosine similarity x objectness ** ``objectness_weight``; the views of a class
  are merged and NMS-ed per class by :func:`os2d.inference.decode.merge_and_nms` (at most
  ``max_detections`` per image), as for every other method.

Convention: boxes in pixels of the image given to ``detect``; the reported corners are the box corners in the
order of the class view (the baseline has no pose).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from os2d.agnostic.proposals import AgnosticDetector, Proposals
from os2d.agnostic.retrieval import crop_boxes, embed_images
from os2d.agnostic.weights import DEFAULT_DETECTOR, load_detector
from os2d.config import InferenceConfig
from os2d.evaluation.baselines.views import ClassViews, box_corners
from os2d.inference.decode import LevelCandidates, merge_and_nms
from os2d.model.os2d import Os2dModel
from os2d.results import Detections
from os2d.weights.fingerprint import model_fingerprint

logger = logging.getLogger(__name__)


class DetectorRetrieval:
    """Class-agnostic detector + GeM retrieval on one OS2D model's trunk (a :class:`DetectionMethod`).

    Args:
        model: its trunk computes the detector's features and the embeddings (the detector head must have been
            trained on the same trunk).
        config: pyramid (``image_size``, ``scales``), NMS, score threshold and detection cap.
        detector: weights file of :func:`os2d.agnostic.weights.save_detector` (default: the packaged one).
        options: overrides of the file's :class:`os2d.agnostic.config.RetrievalConfig` (e.g.
            ``objectness_weight=0.5``, ``use_whitening=False``).
    """

    def __init__(self, model: Os2dModel, config: InferenceConfig, *, detector: str | Path | None = None,
                 name: str = "detector-retrieval", **options: Any) -> None:
        path = Path(detector) if detector is not None else DEFAULT_DETECTOR
        if not path.is_file():
            raise FileNotFoundError(f"detector weights not found: {path} (train them with `os2d train-detector`)")
        weights = load_detector(path)
        self.model = model
        self.config = config
        self.name = name
        self.detector_path = path
        self.retrieval = replace(weights.retrieval_config, **options)
        self.whitening = weights.whitening if self.retrieval.use_whitening else None
        dims = model.feature_channels * (2 if self.retrieval.gem_signed else 1)
        if self.whitening is not None and self.whitening.mean.numel() != dims:
            raise ValueError(f"the detector's whitening was fitted on {self.whitening.mean.numel()}-dim descriptors, "
                             f"these are {dims}-dim (gem_signed differs from the file's)")
        fingerprint = model_fingerprint(model)
        self.trunk_matches = weights.trunk_fingerprint in (None, fingerprint)
        if not self.trunk_matches:
            logger.warning("the detector %s was trained on the trunk of the weights %r (fingerprint %s), this model "
                           "is %s: its boxes will be poor on other features", path, weights.trunk,
                           weights.trunk_fingerprint, fingerprint)
        device = next(model.parameters()).device
        self.detector = AgnosticDetector(model, weights.head.to(device), weights.head_config)
        self.views = ClassViews()
        self._view_descriptors: list[Tensor] = []  # (C,) each, before whitening

    @property
    def class_names(self) -> list[str]:
        return self.views.class_names

    def embed(self, images: Sequence[Image.Image]) -> Tensor:
        """Images -> (N, C) GeM descriptors, L2-normalised, before whitening."""
        r = self.retrieval
        return embed_images(self.model, images, size=r.crop_size, gem_p=r.gem_p, signed=r.gem_signed)

    def _whiten(self, descriptors: Tensor) -> Tensor:
        return descriptors if self.whitening is None else self.whitening(descriptors)

    @torch.no_grad()
    def add_class(self, name: str, images: Sequence[Image.Image]) -> None:
        views = self.views.add(name, images, rotations=self.config.rotations,
                               horizontal_flip=self.config.horizontal_flip)
        self._view_descriptors += list(self.embed(views))

    @torch.no_grad()
    def proposals(self, image: Image.Image) -> tuple[Proposals, Tensor]:
        """The class-agnostic boxes of ``image`` and their (M, C) crop descriptors (before whitening)."""
        r = self.retrieval
        props = self.detector.propose(image, self.config, max_proposals=r.num_proposals, nms_iou=r.proposal_nms_iou)
        return props, self.embed(crop_boxes(image, props.boxes_xyxy, r.crop_size))

    @torch.no_grad()
    def rank(self, props: Proposals, descriptors: Tensor, image_size: tuple[int, int]) -> Detections:
        """Score every (proposal, class view) pair, merge views, per-class NMS, cap (see the module docstring)."""
        if not self._view_descriptors or props.scores.numel() == 0:
            return Detections.empty(self.class_names, image_size)
        views = self._whiten(torch.stack(self._view_descriptors))  # (V, D)
        cosine = self._whiten(descriptors) @ views.T  # (M, V)
        scores = cosine * props.scores[:, None].clamp(min=1e-6) ** self.retrieval.objectness_weight
        cands = []
        for v in range(scores.shape[1]):
            s, boxes = scores[:, v], props.boxes_xyxy
            if self.config.score_threshold is not None:
                keep = s > self.config.score_threshold
                s, boxes = s[keep], boxes[keep]
            cands.append(LevelCandidates(boxes_xyxy=boxes, scores=s,
                                         views=torch.full((s.numel(),), v, dtype=torch.long),
                                         corners_xy=box_corners(boxes, self.views.corner_orders[v])))
        return merge_and_nms(cands, self.views.view_class_tensor(), self.class_names, image_size, self.config)

    @torch.no_grad()
    def detect(self, image: Image.Image) -> Detections:
        if not self._view_descriptors:
            return Detections.empty(self.class_names, image.size)
        return self.rank(*self.proposals(image), image.size)

    def describe(self) -> dict[str, Any]:
        r = self.retrieval
        return {"method": self.name, "backbone": self.model.config.backbone, "detector": str(self.detector_path),
                "crop_size": r.crop_size, "gem_p": r.gem_p, "gem_signed": r.gem_signed, "num_proposals": r.num_proposals,
                "proposal_nms_iou": r.proposal_nms_iou, "objectness_weight": r.objectness_weight,
                "whitening": self.whitening is not None, "trunk_matches": self.trunk_matches}


__all__ = ["DEFAULT_DETECTOR", "DetectorRetrieval"]
