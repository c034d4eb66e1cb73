"""Per-channel bilinear resampling of the correlation tensor at transformed grid points (paper Eq. 2).

Each of the S*S correlation channels (one per class cell) is sampled at its own points, so this is not one
plain ``grid_sample`` over channels. The reference either loops over 225 channels or stacks them into a tall
image and samples in float64. Here each channel becomes its own batch element of a single ``grid_sample``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_per_channel(maps: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Bilinear sample of channel n of ``maps`` at points (x[:, n], y[:, n]).

    Semantics equal ``grid_sample(maps[:, n:n+1], ..., mode="bilinear", padding_mode="border",
    align_corners=True)`` per channel after clamping points into the map, as the reference does. Implemented as
    ONE ``grid_sample`` in which every (image-class pair, channel) is its own batch element: no loop over
    channels, no float64 "tall image" trick, exact in float32, differentiable in maps and points.

    Args:
        maps: (N, n, H, W).
        x, y: (N, n, *P) point coordinates in pixels of the map (0 = first column/row centre).
    Returns:
        (N, n, *P) sampled values.
    """
    nb, nc, h, w = maps.shape
    u = x.reshape(nb, nc, -1) * (2.0 / max(w - 1, 1)) - 1.0
    v = y.reshape(nb, nc, -1) * (2.0 / max(h - 1, 1)) - 1.0
    return sample_per_channel_unit(maps, torch.stack([u, v], dim=-1)).view(x.shape)


def sample_per_channel_unit(maps: Tensor, grid: Tensor) -> Tensor:
    """:func:`sample_per_channel` with points already in ``grid_sample`` units.

    Args:
        maps: (N, n, H, W).
        grid: (N, n, *P, 2) points (u, v), -1/+1 = centres of the first/last column/row. Points outside are
            clamped by ``padding_mode="border"`` (value and zero gradient, as the reference's explicit clamp).
    Returns:
        (N, n, *P).
    """
    nb, nc, h, w = maps.shape
    pts = grid.reshape(nb * nc, -1, 1, 2)
    out = F.grid_sample(maps.reshape(nb * nc, 1, h, w), pts, mode="bilinear", padding_mode="border",
                        align_corners=True)  # (N*n, 1, P, 1)
    return out.view(grid.shape[:-1])


def sample_per_channel_gather(maps: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Same as :func:`sample_per_channel` with the four bilinear taps gathered by flat index (a second,
    independent implementation used in tests; slower on CPU because of its int64 index temporaries)."""
    nb, nc, h, w = maps.shape
    pts_shape = x.shape
    x = x.clamp(0, w - 1).reshape(nb, nc, -1)
    y = y.clamp(0, h - 1).reshape(nb, nc, -1)
    x0 = x.detach().floor()
    y0 = y.detach().floor()
    wx = x - x0
    wy = y - y0
    x0i = x0.long()
    y0i = y0.long()
    x1i = (x0i + 1).clamp(max=w - 1)
    y1i = (y0i + 1).clamp(max=h - 1)
    flat = maps.reshape(nb, nc * h * w)
    base = (torch.arange(nc, device=maps.device) * (h * w)).view(1, nc, 1)
    row0 = base + y0i * w
    row1 = base + y1i * w

    def tap(index: Tensor) -> Tensor:
        return flat.gather(1, index.reshape(nb, -1)).view(nb, nc, -1)

    top = tap(row0 + x0i) * (1 - wx) + tap(row0 + x1i) * wx
    bottom = tap(row1 + x0i) * (1 - wx) + tap(row1 + x1i) * wx
    return (top * (1 - wy) + bottom * wy).view(pts_shape)


def sample_per_channel_loop(maps: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Straightforward reference: one ``grid_sample`` per channel (the reference's "simple" version; tests)."""
    nb, nc, h, w = maps.shape
    out = []
    for n in range(nc):
        xn = x[:, n].reshape(nb, -1, 1)
        yn = y[:, n].reshape(nb, -1, 1)
        u = (xn / max(w - 1, 1) * 2 - 1).clamp(-1, 1) if w > 1 else torch.zeros_like(xn)
        v = (yn / max(h - 1, 1) * 2 - 1).clamp(-1, 1) if h > 1 else torch.zeros_like(yn)
        grid = torch.stack([u, v], dim=-1)  # (N, P, 1, 2)
        out.append(F.grid_sample(maps[:, n : n + 1], grid, mode="bilinear", padding_mode="border", align_corners=True))
    return torch.stack(out, dim=1).view(x.shape)


def pool_mask(size: int = 15, border: int = 2, *, device=None, dtype=torch.float32) -> Tensor:
    """(size*size,) weights averaging the inner (size - 2*border)^2 cells (paper: border cells are unreliable)."""
    mask = torch.zeros(size, size, device=device, dtype=dtype)
    mask[border : size - border, border : size - border] = 1.0
    return (mask / mask.sum()).reshape(-1)
