"""The OS2D head: correlation -> TransformNet -> aligned grids -> resampled, pooled scores and boxes.

Shape glossary: B images, K class views, C channels, H x W input feature map, S class grid side (15),
N = B*K image-class pairs. Batched over classes (no per-class Python loop), chunked to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from os2d.model.box_coder import encode, make_anchors
from os2d.model.correlation import correlate
from os2d.model.grids import params_to_affine
from os2d.model.resample import pool_mask, sample_per_channel_unit
from os2d.model.transform_net import TransformNet


@dataclass
class HeadOutput:
    """Raw head outputs for one pyramid level (all in that level's pixels).

    Attributes:
        scores: (B, K, H, W) mean of the resampled correlations over the inner cells of the class grid.
        boxes_xyxy: (B, K, H, W, 4) axis-aligned box of the transformed grid.
        corners_xy: (B, K, H, W, 4, 2) grid corners (class top-left, top-right, bottom-left, bottom-right) —
            the parallelogram of the alignment.
        scores_transform_detached: (B, K, H, W) same scores with no gradient into the grids (training), or None.
        stride, anchor_size: the anchor layout of the boxes.
    """

    scores: Tensor
    boxes_xyxy: Tensor
    corners_xy: Tensor
    scores_transform_detached: Tensor | None
    stride: float
    anchor_size: float

    def anchors(self) -> Tensor:
        """(H*W, 4) anchors of this level."""
        h, w = self.scores.shape[-2:]
        return make_anchors(h, w, stride=self.stride, size=self.anchor_size, device=self.scores.device)

    def loc_codes(self) -> Tensor:
        """(B, K, 4, H*W) encodings of ``boxes_xyxy`` w.r.t. the anchors (the reference's ``loc`` output)."""
        b, k, h, w, _ = self.boxes_xyxy.shape
        codes = encode(self.boxes_xyxy.reshape(b, k, h * w, 4), self.anchors())
        return codes.transpose(-1, -2)


def os2d_head(
    features: Tensor,
    kernels: Tensor,
    transform_net: TransformNet,
    *,
    invert_transform: bool,
    grid_size: int = 15,
    pool_border: int = 2,
    stride: float = 16.0,
    anchor_size: float = 240.0,
    class_chunk: int | None = None,
    with_detached_scores: bool = False,
) -> HeadOutput:
    """Apply the OS2D head of K class views to B input feature maps.

    Args:
        features: (B, C, H, W) input features (unnormalised).
        kernels: (K, S*S, C) normalised class kernels (:func:`os2d.model.correlation.class_kernels`).
        transform_net: regresses the alignments.
        invert_transform: True for V2 (invert the regressed affine matrix).
        class_chunk: classes processed at once (bounds memory); None = all.
        with_detached_scores: also compute scores with the grids detached (negatives in training).
    """
    k = kernels.shape[0]
    if k == 0:
        parts = [_empty(features, grid_size)]
    elif class_chunk is None or class_chunk <= 0 or class_chunk >= k:
        # one call, no Python loop over classes: also keeps K dynamic for ONNX export
        parts = [_head_chunk(features, kernels, transform_net, invert_transform, grid_size, pool_border,
                             stride, anchor_size, with_detached_scores)]
    else:
        parts = [
            _head_chunk(features, kernels[i : i + class_chunk], transform_net, invert_transform, grid_size,
                        pool_border, stride, anchor_size, with_detached_scores)
            for i in range(0, k, class_chunk)
        ]

    def cat(idx: int) -> Tensor | None:
        items = [p[idx] for p in parts]
        return None if items[0] is None else torch.cat(items, dim=1)

    return HeadOutput(
        scores=cat(0), boxes_xyxy=cat(1), corners_xy=cat(2), scores_transform_detached=cat(3),
        stride=stride, anchor_size=anchor_size,
    )


def _empty(features: Tensor, grid_size: int) -> tuple[Tensor, Tensor, Tensor, None]:
    b, _, h, w = features.shape
    z = features.new_zeros
    return z(b, 0, h, w), z(b, 0, h, w, 4), z(b, 0, h, w, 4, 2), None


def _head_chunk(
    features: Tensor,
    kernels: Tensor,
    transform_net: TransformNet,
    invert_transform: bool,
    grid_size: int,
    pool_border: int,
    stride: float,
    anchor_size: float,
    with_detached_scores: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    b, _, h, w = features.shape
    k = kernels.shape[0]
    s = grid_size
    n = b * k
    corr = correlate(features, kernels).reshape(n, s * s, h, w)  # channel = q*S + p
    theta = params_to_affine(transform_net(corr), invert=invert_transform)  # (N, H, W, 2, 3)
    # Feature-map frame: windows of S cells at stride 1, centred at l + 0.5 (reference's half-cell offset).
    # Built directly in correlation-channel layout (N, S*S, H, W): point of cell (p, q) meets channel q*S + p.
    grid = _unit_grid_in_channel_layout(theta, s, h, w)  # (N, S*S, H, W, 2)
    mask = pool_mask(s, pool_border, device=corr.device, dtype=corr.dtype)
    scores = torch.einsum("nchw,c->nhw", sample_per_channel_unit(corr, grid), mask)
    scores_detached = None
    if with_detached_scores:
        sampled = sample_per_channel_unit(corr, grid.detach())
        scores_detached = torch.einsum("nchw,c->nhw", sampled, mask).view(b, k, h, w)

    # Image frame: the affine image of the square grid is a parallelogram, so its corners give the exact
    # min/max box over all S*S points.
    corners = _grid_corners(theta, box_size=anchor_size, stride=stride)  # (N, H, W, 4, 2)
    boxes = torch.cat([corners.amin(dim=-2), corners.amax(dim=-2)], dim=-1)  # (N, H, W, 4)
    return (
        scores.view(b, k, h, w),
        boxes.view(b, k, h, w, 4),
        corners.detach().view(b, k, h, w, 4, 2),
        scores_detached,
    )


def _unit_grid_in_channel_layout(theta: Tensor, s: int, h: int, w: int) -> Tensor:
    """All S*S grid points of every location in ``grid_sample`` units of the (H, W) feature map, laid out like
    the correlation channels, ready for :func:`sample_per_channel_unit`.

    Feature-map frame: windows of S cells at stride 1 centred at (l + 0.5, k + 0.5) (the reference's half-cell
    offset), so ``x_fm = S/2 * (a x_q + b y_p + t_x) + l + 0.5`` and ``u = x_fm * 2 / (W - 1) - 1``. Both maps
    are affine, so they are folded into the coefficients: two fused multiply-adds write the interleaved (u, v)
    tensor directly instead of materialising (N, H, W, S, S) grids.

    Args:
        theta: (N, H, W, 2, 3) class-local -> image-local affine matrices.
    Returns:
        (N, S*S, H, W, 2), channel ``q*S + p`` holds the point of class cell (p, q).
    """
    dtype, device = theta.dtype, theta.device
    half = s / 2.0
    unit = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=dtype, device=device)  # (2,) u, v
    coef = theta * (half * unit).view(2, 1)  # (N, H, W, 2, 3) rows scaled to unit coordinates
    cy = (torch.arange(h, dtype=dtype, device=device) + 0.5) * unit[1] - 1.0
    cx = (torch.arange(w, dtype=dtype, device=device) + 0.5) * unit[0] - 1.0
    centre = torch.stack(torch.broadcast_tensors(cx.view(1, w), cy.view(h, 1)), dim=-1)  # (H, W, 2)
    offset = (coef[..., 2] + centre).unsqueeze(1)  # (N, 1, H, W, 2)
    lin = torch.linspace(-1.0, 1.0, s, dtype=dtype, device=device)
    xq = lin.view(s, 1).expand(s, s).reshape(1, s * s, 1, 1, 1)  # channel q*S + p -> x_q
    yp = lin.view(1, s).expand(s, s).reshape(1, s * s, 1, 1, 1)  # channel q*S + p -> y_p
    grid = torch.addcmul(offset, coef[..., 0].unsqueeze(1), xq)  # (N, S*S, H, W, 2)
    return grid.addcmul_(coef[..., 1].unsqueeze(1), yp)


# Class-local coordinates of the grid corners: top-left, top-right, bottom-left, bottom-right (reference order).
_CORNERS_LOCAL = ((-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0))


def _grid_corners(theta: Tensor, box_size: float, stride: float) -> Tensor:
    """(N, H, W, 2, 3) transforms -> (N, H, W, 4, 2) grid corners in the global frame of ``box_size`` windows."""
    _, h, w = theta.shape[:3]
    local = torch.tensor(_CORNERS_LOCAL, dtype=theta.dtype, device=theta.device)  # (4, 2)
    pts = torch.einsum("nhwij,cj->nhwci", theta[..., :2], local) + theta[..., 2].unsqueeze(-2)  # (N,H,W,4,2)
    cy = (torch.arange(h, dtype=theta.dtype, device=theta.device) + 0.5) * stride
    cx = (torch.arange(w, dtype=theta.dtype, device=theta.device) + 0.5) * stride
    centre = torch.stack(torch.broadcast_tensors(cx.view(1, w), cy.view(h, 1)), dim=-1)  # (H, W, 2)
    return pts * (box_size / 2.0) + centre.view(1, h, w, 1, 2)
