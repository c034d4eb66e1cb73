"""RoIAlign (He et al. 2017) on one feature map, written with :func:`torch.nn.functional.grid_sample`.

Convention: ``features`` (C, H, W) computed without anchor padding, cell (i, j) centred at pixel
((j + 0.5) * stride, (i + 0.5) * stride); boxes are xyxy pixels of the same (level) image. Each of the
``size`` x ``size`` bins averages ``sampling`` x ``sampling`` bilinear samples at evenly spaced points;
samples outside the map read zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def roi_align(features: Tensor, boxes_xyxy: Tensor, *, stride: float, size: int, sampling: int = 2) -> Tensor:
    """(C, H, W) features, (K, 4) boxes -> (K, C, size, size) pooled features."""
    c, h, w = features.shape
    k = boxes_xyxy.shape[0]
    if k == 0:
        return features.new_zeros(0, c, size, size)
    n = size * sampling
    t = (torch.arange(n, device=features.device, dtype=torch.float32) + 0.5) / n  # (n,) in (0, 1)
    b = boxes_xyxy.float()
    xs = b[:, 0:1] + t[None] * (b[:, 2:3] - b[:, 0:1])  # (K, n) pixels
    ys = b[:, 1:2] + t[None] * (b[:, 3:4] - b[:, 1:2])
    # pixels -> grid_sample's [-1, 1] with align_corners=False: -1 is the left edge of cell 0 (pixel 0)
    gx = xs / (stride * w) * 2 - 1
    gy = ys / (stride * h) * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(k, n, n), gy[:, :, None].expand(k, n, n)], dim=-1)  # (K, n, n, 2)
    grid = grid.reshape(1, k * n, n, 2).to(features.dtype)
    out = F.grid_sample(features[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out.view(c, k, n, n).permute(1, 0, 2, 3)  # (K, C, n, n)
    return F.avg_pool2d(out, sampling) if sampling > 1 else out.contiguous()


__all__ = ["roi_align"]
