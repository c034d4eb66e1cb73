"""Dense cosine correlation between class feature grids and input feature maps (paper Sec. 3, "feature matching").

Shape glossary: B input images, K class images, C feature channels, H x W input feature map,
S = 15 the side of the class grid, S*S = 225 correlation channels.

Convention: correlation channel ``n = q * S + p`` holds class cell (row p, column q) — column-major over the
class grid, as in weakalign (Rocco et al.), so their TransformNet weights and the official OS2D weights apply.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CLASS_GRID_SIZE = 15  # S: class feature maps are resized to S x S (reference: 15, set by TransformNet's receptive field)


def l2_normalize(x: Tensor, dim: int = 1, eps: float = 1e-5) -> Tensor:
    """``x / (||x|| + eps)`` along ``dim`` (the reference's epsilon placement, not ``sqrt(sum + eps)``)."""
    return x / (x.norm(dim=dim, keepdim=True) + eps)


def resize_class_features(class_fm: Tensor, size: int = CLASS_GRID_SIZE) -> Tensor:
    """Resize one class feature map to ``size x size`` and L2-normalise each cell.

    Bilinear with ``align_corners=True`` (equal to the reference's identity ``grid_sample``): the corner cells of
    the source land on the corner cells of the output. Resizing features rather than the class image keeps the
    image's aspect ratio (paper: a square class image turns a bottle into a can).

    Args:
        class_fm: (1, C, h, w) or (C, h, w) features of one class image.
    Returns:
        (C, size, size) L2-normalised class features.
    """
    if class_fm.dim() == 3:
        class_fm = class_fm.unsqueeze(0)
    return resize_class_grids(class_fm, size)[0]


def resize_class_grids(class_fms: Tensor, size: int = CLASS_GRID_SIZE) -> Tensor:
    """(B, C, h, w) feature maps of B class-sized images of one size -> (B, C, size, size) class grids, each as
    :func:`resize_class_features` makes it (one call for the batch)."""
    resized = F.interpolate(class_fms, size=(size, size), mode="bilinear", align_corners=True)
    return l2_normalize(resized, dim=1, eps=1e-5)


def class_kernels(class_features: Tensor) -> Tensor:
    """(K, C, S, S) normalised class grids -> (K, S*S, C) correlation kernels in column-major cell order."""
    k, c, s, _ = class_features.shape
    return class_features.permute(0, 3, 2, 1).reshape(k, s * s, c)  # [k, q, p, c] -> n = q*S + p


def correlate(features: Tensor, kernels: Tensor) -> Tensor:
    """Cosine correlation of every class cell with every input location.

    Args:
        features: (B, C, H, W) input features (normalised here per location, eps 1e-5).
        kernels: (K, S*S, C) from :func:`class_kernels`.
    Returns:
        (B, K, S*S, H, W) correlations; with post-ReLU features they lie in [0, 1].
    """
    b, c, h, w = features.shape
    k, n, _ = kernels.shape
    feats = l2_normalize(features, dim=1, eps=1e-5).reshape(b, 1, c, h * w)
    corr = torch.matmul(kernels.reshape(1, k * n, c), feats.reshape(b, c, h * w))  # (B, K*S*S, H*W)
    return corr.view(b, k, n, h, w)


def correlate_channels_last(features: Tensor, kernels: Tensor) -> Tensor:
    """:func:`correlate` with the class cells last: (B, C, H, W), (K, S*S, C) -> (B, K, H, W, S*S)."""
    b, c, h, w = features.shape
    k, n, _ = kernels.shape
    feats = l2_normalize(features, dim=1, eps=1e-5).reshape(b, 1, c, h * w)
    corr = torch.matmul(feats.transpose(-1, -2), kernels.transpose(-1, -2))  # (B, K, H*W, S*S)
    return corr.view(b, k, h, w, n)
