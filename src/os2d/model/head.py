"""The OS2D head: correlation -> TransformNet -> aligned grids -> resampled, pooled scores and boxes.

Shape glossary: B images, K class views, C channels, H x W input feature map, S class grid side (15),
N = B*K image-class pairs. Batched over classes (no per-class Python loop), chunked to bound memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from os2d.model.box_coder import encode, make_anchors
from os2d.model.correlation import correlate, correlate_channels_last
from os2d.model.grids import (
    corners_box,
    grid_corners,
    inner_channels,
    params_to_affine,
    stretch_to_aspect,
    unit_grid_in_channel_layout,
)
from os2d.model.int8_transform import Int8TransformNet
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
    aspect: Tensor | None = None,
    aspect_power: float = 0.0,
    transform_grad_at: Callable[[Tensor], Tensor] | None = None,
) -> HeadOutput:
    """Apply the OS2D head of K class views to B input feature maps.

    Args:
        features: (B, C, H, W) input features (unnormalised).
        kernels: (K, S*S, C) normalised class kernels (:func:`os2d.model.correlation.class_kernels`).
        transform_net: regresses the alignments.
        invert_transform: True for V2 (invert the regressed affine matrix).
        class_chunk: classes processed at once (bounds memory); None = all.
        with_detached_scores: also compute scores with the grids detached (negatives in training).
        aspect: (K,) aspect ratio (w / h) of each class view's image; with ``aspect_power`` > 0 the anchor grid
            takes that shape (:func:`os2d.model.grids.stretch_to_aspect`). None = square anchors.
        transform_grad_at: training only. Given the (B, K, H, W, 4) boxes of a TransformNet pass without autograd,
            returns the (B, K, H, W) bool locations where its output needs a gradient (where the loss uses
            ``scores`` rather than ``scores_transform_detached``: the positives); TransformNet runs with
            autograd only there (:meth:`TransformNet.forward_at`). Every output value is unchanged; elsewhere
            ``scores`` gets gradients through the correlation only. Needs all classes in one chunk.
    """
    k = kernels.shape[0]
    if aspect is not None and aspect.shape != (k,):
        raise ValueError(f"aspect must have shape ({k},), got {tuple(aspect.shape)}")
    if aspect is None or aspect_power == 0:
        aspect, aspect_power = None, 0.0
    if transform_grad_at is not None and class_chunk is not None and 0 < class_chunk < k:
        raise ValueError("transform_grad_at needs all classes in one chunk (class_chunk None)")
    if k == 0:
        parts = [_empty(features, grid_size)]
    elif class_chunk is None or class_chunk <= 0 or class_chunk >= k:
        # one call, no Python loop over classes: also keeps K dynamic for ONNX export
        parts = [_head_chunk(features, kernels, transform_net, invert_transform, grid_size, pool_border,
                             stride, anchor_size, with_detached_scores, aspect, aspect_power, transform_grad_at)]
    else:
        parts = [
            _head_chunk(features, kernels[i : i + class_chunk], transform_net, invert_transform, grid_size,
                        pool_border, stride, anchor_size, with_detached_scores,
                        None if aspect is None else aspect[i : i + class_chunk], aspect_power)
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
    aspect: Tensor | None = None,
    aspect_power: float = 0.0,
    transform_grad_at: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    b, _, h, w = features.shape
    k = kernels.shape[0]
    s = grid_size
    n = b * k
    # Only the pooled (inner) cells are resampled: the border cells have weight 0 (121 of 225 channels at S=15).
    mask = pool_mask(s, pool_border, device=features.device, dtype=features.dtype)
    inner = inner_channels(s, pool_border, device=features.device)  # (M,)
    if isinstance(transform_net, Int8TransformNet):  # its input channels-last, the inner cells by a 2nd GEMM
        params = transform_net.from_channels_last(correlate_channels_last(features, kernels).view(n, h, w, s * s))
        corr_inner = correlate(features, kernels[:, inner]).view(n, len(inner), h, w)  # (N, M, H, W)
    else:
        corr = correlate(features, kernels).reshape(n, s * s, h, w)  # channel = q*S + p
        if transform_grad_at is None:
            params = transform_net(corr)
        else:
            params = _params_with_sparse_grad(transform_net, corr, transform_grad_at, b, k, invert_transform,
                                              anchor_size, stride, aspect, aspect_power)
        corr_inner = corr[:, inner]  # (N, M, H, W)
    theta = _theta(params, invert_transform, aspect, aspect_power, b)  # (N, H, W, 2, 3)
    # Feature-map frame: windows of S cells at stride 1, centred at l + 0.5 (reference's half-cell offset).
    # Built directly in correlation-channel layout (N, M, H, W): point of cell (p, q) meets channel q*S + p.
    grid = unit_grid_in_channel_layout(theta, s, h, w, inner)  # (N, M, H, W, 2)
    scores = torch.einsum("nchw,c->nhw", sample_per_channel_unit(corr_inner, grid), mask[inner])
    scores_detached = None
    if with_detached_scores:
        sampled = sample_per_channel_unit(corr_inner, grid.detach())
        scores_detached = torch.einsum("nchw,c->nhw", sampled, mask[inner]).view(b, k, h, w)

    # Image frame: the affine image of the square grid is a parallelogram, so its corners give the exact
    # min/max box over all S*S points.
    corners = grid_corners(theta, box_size=anchor_size, stride=stride)  # (N, H, W, 4, 2)
    boxes = corners_box(corners)  # (N, H, W, 4)
    return (
        scores.view(b, k, h, w),
        boxes.view(b, k, h, w, 4),
        corners.detach().view(b, k, h, w, 4, 2),
        scores_detached,
    )


def _theta(params: Tensor, invert: bool, aspect: Tensor | None, aspect_power: float, b: int) -> Tensor:
    """(N, P, H, W) TransformNet outputs -> (N, H, W, 2, 3) affine matrices, stretched to the class aspect."""
    theta = params_to_affine(params, invert=invert)
    if aspect is not None:  # pair n = (image n // K, class view n % K)
        theta = stretch_to_aspect(theta, aspect.to(theta.device).repeat(b), aspect_power)
    return theta


def _params_with_sparse_grad(transform_net: TransformNet, corr: Tensor, select: Callable[[Tensor], Tensor],
                             b: int, k: int, invert: bool, anchor_size: float, stride: float,
                             aspect: Tensor | None, aspect_power: float) -> Tensor:
    """TransformNet's (N, P, H, W) output, with autograd only at the locations ``select`` picks from the boxes
    of a pass without it (see ``transform_grad_at`` of :func:`os2d_head`)."""
    n, _, h, w = corr.shape
    with torch.no_grad():
        params = transform_net(corr)
    trainable = [p for p in transform_net.parameters() if p.requires_grad]
    if not torch.is_grad_enabled() or not (trainable or corr.requires_grad):
        return params
    corners = grid_corners(_theta(params, invert, aspect, aspect_power, b), box_size=anchor_size, stride=stride)
    where = select(corners_box(corners).view(b, k, h, w, 4)).reshape(n, h, w).nonzero()  # (P, 3) = (pair, y, x)
    if len(where) == 0:  # no gradient for TransformNet; a zero one keeps DistributedDataParallel's buckets full
        return params + sum(p.sum() for p in trainable) * 0.0 if trainable else params
    values = transform_net.forward_at(corr, where).to(params.dtype)  # (P, num_params), with autograd
    channels_last = params.permute(0, 2, 3, 1).index_put((where[:, 0], where[:, 1], where[:, 2]), values)
    return channels_last.permute(0, 3, 1, 2)
