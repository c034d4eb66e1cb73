"""Retrieval half of the baseline: GeM embeddings of image crops on the frozen trunk, PCA whitening, cosine.

Radenovic et al. (TPAMI 2019): generalised-mean pooling ``(mean_x f(x)^p)^(1/p)`` of non-negative
activations, L2-normalised, optionally followed by a learned whitening and another L2 normalisation. Here the
whitening is unsupervised (PCA whitening with eigenvalue shrinkage) fitted on crops of training-class boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from os2d.io import image_to_tensor
from os2d.model.correlation import l2_normalize
from os2d.model.os2d import Os2dModel

EMBED_BATCH = 32  # crops per trunk call (memory bound)


def gem(features: Tensor, p: float, eps: float = 1e-6) -> Tensor:
    """(N, C, h, w) -> (N, C) generalised mean over positions of the activations clamped at ``eps``."""
    return features.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


def signed_gem(features: Tensor, p: float, eps: float = 1e-6) -> Tensor:
    """(N, C, h, w) -> (N, 2C): :func:`gem` of the positive part, then of the negative part. GeM assumes
    non-negative (post-ReLU) activations; the stride-16 EfficientNet block output is a linear projection plus a
    residual, about half of it negative, which plain GeM would discard."""
    return torch.cat([gem(features, p, eps), gem(-features, p, eps)], dim=1)


def crop_boxes(image: Image.Image, boxes_xyxy: Tensor, size: int) -> list[Image.Image]:
    """Crops of (M, 4) original-pixel boxes, each resized to ``size`` x ``size`` (at least 1 px per side)."""
    out = []
    for x1, y1, x2, y2 in boxes_xyxy.tolist():
        box = (int(x1), int(y1), max(int(x1) + 1, round(x2)), max(int(y1) + 1, round(y2)))
        out.append(image.crop(box).resize((size, size), Image.BILINEAR))
    return out


@torch.no_grad()
def embed_images(model: Os2dModel, images: Sequence[Image.Image], *, size: int, gem_p: float,
                 signed: bool = False) -> Tensor:
    """RGB images (any size; resized to ``size`` x ``size``) -> (N, C) L2-normalised GeM descriptors
    ((N, 2C) with ``signed``: :func:`signed_gem`)."""
    device = next(model.parameters()).device
    if not images:
        return torch.zeros(0, model.feature_channels * (2 if signed else 1))
    out = []
    for start in range(0, len(images), EMBED_BATCH):
        batch = torch.stack([image_to_tensor(im if im.size == (size, size) else im.resize((size, size), Image.BILINEAR))
                             for im in images[start:start + EMBED_BATCH]]).to(device)
        feats = model.extract_features(batch, align_to_anchors=False)  # (b, C, size/16, size/16)
        out.append((signed_gem if signed else gem)(feats.float(), gem_p).cpu())
    return l2_normalize(torch.cat(out), dim=1)


@dataclass
class Whitening:
    """Learned whitening ``x -> l2n(P (x - mean))`` of L2-normalised descriptors."""

    mean: Tensor  # (D,)
    projection: Tensor  # (D', D)

    def __call__(self, descriptors: Tensor) -> Tensor:
        """(N, D) -> (N, D') L2-normalised."""
        x = descriptors.float() - self.mean.float()
        return l2_normalize(x @ self.projection.float().T, dim=1)

    def state_dict(self) -> dict[str, Tensor]:
        return {"mean": self.mean, "projection": self.projection}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> Whitening:
        return cls(mean=state["mean"].float(), projection=state["projection"].float())


def fit_pca_whitening(descriptors: Tensor, shrinkage: float = 0.1) -> Whitening:
    """PCA whitening of (N, D) descriptors: ``P = diag(lambda + shrinkage * mean(lambda))^(-1/2) E^T``.

    The shrinkage keeps the near-empty directions of a small fitting set from being blown up.
    """
    x = descriptors.double()
    mean = x.mean(dim=0)
    centred = x - mean
    cov = centred.T @ centred / max(1, x.shape[0] - 1)
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
    eigvals = eigvals.clamp(min=0).flip(0)
    eigvecs = eigvecs.flip(1)
    scale = (eigvals + shrinkage * eigvals.mean()).clamp(min=1e-12).rsqrt()
    return Whitening(mean=mean.float(), projection=(scale[:, None] * eigvecs.T).float())


__all__ = ["Whitening", "crop_boxes", "embed_images", "fit_pca_whitening", "gem", "signed_gem"]
