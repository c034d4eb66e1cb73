"""The exact OS2D head at a few windows of a map, instead of at every location.

:func:`os2d.model.head.os2d_head` computes scores and boxes densely: TransformNet at every location of every
image-class pair. Where an approximate dense pass (int8 TransformNet) has already found where the detections are,
the exact float32 values are needed only around them. :func:`head_windows` computes them for P windows of
Rh x Rw locations, each from its own crop of the features:

- correlation of the crop (the window plus TransformNet's 7-cell halo) with the window's class view;
- TransformNet on the crop with valid convolutions (:meth:`TransformNet.forward_windows`);
- the pooled score read from the features directly: bilinear sampling commutes with the correlation (a dot
  product with the class cell), so sampling the normalised features at a grid point and taking the dot product
  equals sampling the correlation there, border clamping included;
- boxes and corners as the dense head builds them.

Every value equals the dense head's at the same location up to float32 summation order (tested).

Shape glossary: P windows, Rh x Rw window size, C channels, H x W map, S class grid side, M = (S - 2 * border)^2 pooled
cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from os2d.model.correlation import l2_normalize
from os2d.model.grids import (
    cell_coords,
    corners_at,
    corners_box,
    inner_channels,
    params_to_affine,
    stretch_to_aspect,
)
from os2d.model.resample import pool_mask
from os2d.model.transform_net import TransformNet


@dataclass
class WindowOutput:
    """Exact head values at P windows of Rh x Rw locations (in the map's pixels, like :class:`HeadOutput`).

    Attributes:
        ys, xs: (P, Rh, Rw) map row and column of each location.
        inside: (P, Rh, Rw) the location lies in the map (values outside are meaningless).
        scores: (P, Rh, Rw).
        boxes_xyxy: (P, Rh, Rw, 4).
        corners_xy: (P, Rh, Rw, 4, 2).
    """

    ys: Tensor
    xs: Tensor
    inside: Tensor
    scores: Tensor
    boxes_xyxy: Tensor
    corners_xy: Tensor


def head_windows(
    features: Tensor,
    kernels: Tensor,
    transform_net: TransformNet,
    views: Tensor,
    top: Tensor,
    left: Tensor,
    size: tuple[int, int] = (3, 3),
    *,
    invert_transform: bool,
    grid_size: int = 15,
    pool_border: int = 2,
    stride: float = 16.0,
    anchor_size: float = 240.0,
    aspect: Tensor | None = None,
    aspect_power: float = 0.0,
) -> WindowOutput:
    """The head's values at the windows of ``size`` (Rh, Rw) locations from (``top``, ``left``) of class views
    ``views``.

    Args:
        features: (1, C, H, W) unnormalised features of one image.
        kernels: (V, S*S, C) normalised class kernels; ``views`` (P,) indexes them.
        top, left: (P,) the windows' first map row and column (a window may reach outside the map).
        aspect: (V,) class aspect ratios for models with ``aspect_power`` > 0 (as in ``os2d_head``).
    """
    _, c, h, w = features.shape
    s = grid_size
    rh, rw = size
    halo = transform_net.halo()
    reach = max(0, -int(top.min()), -int(left.min()), int((top + rh).max()) - h, int((left + rw).max()) - w)
    pad = halo + reach
    feats = l2_normalize(features, dim=1, eps=1e-5)[0]  # (C, H, W), as correlate() normalises
    padded = F.pad(feats, (pad, pad, pad, pad))  # zeros outside: correlation 0, TransformNet input 0
    rows = top.view(-1, 1) + (pad - halo) + torch.arange(rh + 2 * halo, device=features.device)  # (P, ch)
    cols = left.view(-1, 1) + (pad - halo) + torch.arange(rw + 2 * halo, device=features.device)  # (P, cw)
    crops = padded[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)  # (P, C, ch, cw)
    kern = kernels[views].to(features.dtype)  # (P, S*S, C)
    corr = torch.bmm(kern, crops.reshape(len(views), c, -1)).view(len(views), s * s, *crops.shape[-2:])
    params = transform_net.forward_windows(corr, top - halo, left - halo, (h, w))  # (P, num_params, Rh, Rw)

    theta = params_to_affine(params, invert=invert_transform)  # (P, Rh, Rw, 2, 3)
    if aspect is not None and aspect_power != 0:
        theta = stretch_to_aspect(theta, aspect.to(theta.device)[views], aspect_power)
    loc_y = (top.view(-1, 1, 1) + torch.arange(rh, device=features.device).view(1, rh, 1)).expand(-1, rh, rw)
    loc_x = (left.view(-1, 1, 1) + torch.arange(rw, device=features.device).view(1, 1, rw)).expand(-1, rh, rw)
    inside = (loc_y >= 0) & (loc_y < h) & (loc_x >= 0) & (loc_x < w)

    # Grid points of the pooled cells in feature-map pixels: x = S/2 (a x_q + b y_p + t_x) + l + 0.5.
    inner = inner_channels(s, pool_border, device=features.device)  # (M,)
    xq, yp = cell_coords(s, inner, dtype=theta.dtype, device=theta.device)
    local = torch.stack([xq, yp, torch.ones_like(xq)], dim=0)  # (3, M)
    pts = torch.einsum("prsij,jm->prsmi", theta, local) * (s / 2.0)  # (P, Rh, Rw, M, 2)
    centre = torch.stack([loc_x, loc_y], dim=-1).to(theta.dtype) + 0.5  # (P, Rh, Rw, 2) in cells
    pts = pts + centre.unsqueeze(-2)
    unit = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=theta.dtype, device=theta.device)
    grid = (pts * unit - 1.0).reshape(1, -1, 1, 2)
    sampled = F.grid_sample(feats[None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    sampled = sampled.view(c, len(views), rh * rw, len(inner))  # (C, P, Rh*Rw, M)
    values = torch.einsum("cpkm,pmc->pkm", sampled, kern[:, inner])  # sampled correlations (P, Rh*Rw, M)
    weights = pool_mask(s, pool_border, device=features.device, dtype=features.dtype)[inner]
    scores = (values @ weights).view(len(views), rh, rw)

    corners = corners_at(theta, centre * stride, anchor_size)  # (P, Rh, Rw, 4, 2), as the dense head's
    boxes = corners_box(corners)
    return WindowOutput(ys=loc_y, xs=loc_x, inside=inside, scores=scores, boxes_xyxy=boxes, corners_xy=corners)


__all__ = ["WindowOutput", "head_windows"]
