"""Anchors and the box encoding of OS2D (torchvision-style BoxCoder with weights (10, 10, 5, 5)).

Convention: boxes are xyxy in pixels of the (pyramid-level) input image, x right, y down, no +1.
Anchors are ``anchor_size`` squares centred at ``stride * (l + 0.5), stride * (k + 0.5)``, enumerated row-major
(index ``k * W + l``). The network's "localisation output" is the encoding of the transformed-grid box w.r.t.
its anchor; there is no separate regression branch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def make_anchors(height: int, width: int, *, stride: float = 16.0, size: float = 240.0, device=None) -> Tensor:
    """(H*W, 4) anchors of a (H, W) feature map, row-major."""
    cy = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    cx = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    cy, cx = torch.meshgrid(cy, cx, indexing="ij")
    half = size / 2.0
    return torch.stack([cx - half, cy - half, cx + half, cy + half], dim=-1).reshape(-1, 4)


def widen_to_min_size(boxes: Tensor, min_size: float = 1.0) -> Tensor:
    """Boxes narrower/shorter than ``min_size`` get ``x2 = x1 + min_size`` (reference, avoids log(0))."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    x2 = torch.where(x1 + min_size > x2, x1.detach() + min_size, x2)
    y2 = torch.where(y1 + min_size > y2, y1.detach() + min_size, y2)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def encode(boxes: Tensor, anchors: Tensor, weights: tuple[float, ...] = BOX_WEIGHTS) -> Tensor:
    """(..., 4) boxes and broadcastable anchors -> (..., 4) codes (dx, dy, dw, dh)."""
    boxes = widen_to_min_size(boxes)
    anchors = widen_to_min_size(anchors)
    wx, wy, ww, wh = weights
    aw = anchors[..., 2] - anchors[..., 0]
    ah = anchors[..., 3] - anchors[..., 1]
    ax = anchors[..., 0] + 0.5 * aw
    ay = anchors[..., 1] + 0.5 * ah
    gw = boxes[..., 2] - boxes[..., 0]
    gh = boxes[..., 3] - boxes[..., 1]
    gx = boxes[..., 0] + 0.5 * gw
    gy = boxes[..., 1] + 0.5 * gh
    return torch.stack(
        [wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)], dim=-1
    )


def decode(codes: Tensor, anchors: Tensor, weights: tuple[float, ...] = BOX_WEIGHTS) -> Tensor:
    """Inverse of :func:`encode` (dw, dh clamped at log(1000/16))."""
    wx, wy, ww, wh = weights
    aw = anchors[..., 2] - anchors[..., 0]
    ah = anchors[..., 3] - anchors[..., 1]
    ax = anchors[..., 0] + 0.5 * aw
    ay = anchors[..., 1] + 0.5 * ah
    dx = codes[..., 0] / wx
    dy = codes[..., 1] / wy
    dw = (codes[..., 2] / ww).clamp(max=BBOX_XFORM_CLIP)
    dh = (codes[..., 3] / wh).clamp(max=BBOX_XFORM_CLIP)
    cx = dx * aw + ax
    cy = dy * ah + ay
    w = torch.exp(dw) * aw
    h = torch.exp(dh) * ah
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
