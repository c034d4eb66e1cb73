"""Affine transformations regressed by TransformNet and the grids of points they produce.

Convention: a location's LOCAL frame is [-1, 1]^2 over its window, x to the right, y down. The S x S grid of a
transform ``theta`` (2x3, maps class-local to image-local coordinates) is ``theta @ [x_q, y_p, 1]`` with
``x_q = y_q = linspace(-1, 1, S)`` (``affine_grid`` with ``align_corners=True``); index [p, q] = class cell
(row p, column q). Identity theta gives exactly the location's window.
"""

from __future__ import annotations

import torch
from torch import Tensor


def params_to_affine(params: Tensor, *, invert: bool) -> Tensor:
    """TransformNet outputs -> affine matrices that map class-local to image-local coordinates.

    Args:
        params: (N, P, H, W); P=6 full affine read row-major ``[[p0 p1 p2], [p3 p4 p5]]`` (V2), or P=4
            scale+translation ``[[p0, 0, p1], [0, p2, p3]]`` (V1).
        invert: invert the matrix (V2). weakalign regresses image->class transforms, OS2D needs class->image.
    Returns:
        (N, H, W, 2, 3) matrices.
    """
    p = params.permute(0, 2, 3, 1)  # (N, H, W, P)
    if p.shape[-1] == 6:
        a, b, tx, c, d, ty = p.unbind(-1)
    elif p.shape[-1] == 4:
        a, tx, d, ty = p.unbind(-1)
        b = torch.zeros_like(a)
        c = torch.zeros_like(a)
    else:
        raise ValueError(f"expected 4 or 6 transformation parameters, got {p.shape[-1]}")
    if invert:
        det = a * d - b * c
        # The reference regularises singular matrices (adds 1e-5 to the diagonal); a closed form only needs a
        # non-zero determinant.
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        a, b, c, d = d / det, -b / det, -c / det, a / det
        tx, ty = -(a * tx + b * ty), -(c * tx + d * ty)
    row0 = torch.stack([a, b, tx], dim=-1)
    row1 = torch.stack([c, d, ty], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def unit_grid_in_channel_layout(theta: Tensor, s: int, h: int, w: int, channels: Tensor | None = None) -> Tensor:
    """All S*S grid points of every location in ``grid_sample`` units of the (H, W) feature map, laid out like
    the correlation channels, ready for :func:`sample_per_channel_unit`.

    Feature-map frame: windows of S cells at stride 1 centred at (l + 0.5, k + 0.5) (the reference's half-cell
    offset), so ``x_fm = S/2 * (a x_q + b y_p + t_x) + l + 0.5`` and ``u = x_fm * 2 / (W - 1) - 1``. Both maps
    are affine, so they are folded into the coefficients: two fused multiply-adds write the interleaved (u, v)
    tensor directly instead of materialising (N, H, W, S, S) grids.

    Args:
        theta: (N, H, W, 2, 3) class-local -> image-local affine matrices.
        channels: (M,) which channels to build (e.g. the pooled inner cells); None = all S*S.
    Returns:
        (N, S*S, H, W, 2) (or (N, M, H, W, 2)), channel ``q*S + p`` holds the point of class cell (p, q).
    """
    dtype, device = theta.dtype, theta.device
    half = s / 2.0
    unit = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=dtype, device=device)  # (2,) u, v
    coef = theta * (half * unit).view(2, 1)  # (N, H, W, 2, 3) rows scaled to unit coordinates
    cy = (torch.arange(h, dtype=dtype, device=device) + 0.5) * unit[1] - 1.0
    cx = (torch.arange(w, dtype=dtype, device=device) + 0.5) * unit[0] - 1.0
    centre = torch.stack(torch.broadcast_tensors(cx.view(1, w), cy.view(h, 1)), dim=-1)  # (H, W, 2)
    offset = (coef[..., 2] + centre).unsqueeze(1)  # (N, 1, H, W, 2)
    xq, yp = cell_coords(s, channels, dtype=dtype, device=device)
    xq, yp = xq.view(1, -1, 1, 1, 1), yp.view(1, -1, 1, 1, 1)
    grid = torch.addcmul(offset, coef[..., 0].unsqueeze(1), xq)  # (N, S*S, H, W, 2)
    return grid.addcmul_(coef[..., 1].unsqueeze(1), yp)


def cell_coords(s: int, channels: Tensor | None = None, *, dtype=torch.float32, device=None) -> tuple[Tensor, Tensor]:
    """Class-local coordinates (x_q, y_p) of the grid cell of each correlation channel ``q*S + p``: two (S*S,)
    tensors (or (M,) for ``channels``)."""
    lin = torch.linspace(-1.0, 1.0, s, dtype=dtype, device=device)
    xq = lin.view(s, 1).expand(s, s).reshape(s * s)  # channel q*S + p -> x_q
    yp = lin.view(1, s).expand(s, s).reshape(s * s)  # channel q*S + p -> y_p
    if channels is not None:
        xq, yp = xq[channels], yp[channels]
    return xq, yp


def inner_channels(s: int, border: int, device=None) -> Tensor:
    """(M,) correlation channels ``q*S + p`` of the (S - 2 border)^2 inner cells, the ones the score pools."""
    cells = range(border, s - border)
    return torch.tensor([q * s + p for q in cells for p in cells], device=device)


MAX_ASPECT = 4.0  # class aspect ratios beyond 1/4 .. 4 are clamped for the anchor


def stretch_to_aspect(theta: Tensor, aspect: Tensor, power: float) -> Tensor:
    """Compose (N, H, W, 2, 3) transforms with the anchor of each pair's class aspect ratio.

    The anchor of a class with aspect ratio ``r`` (= w / h of its class image) is the square window stretched by
    ``r^(power/2)`` in x and ``r^(-power/2)`` in y (same area): image-local x rows of ``theta`` scale by the
    first, y rows by the second, so the grid and its box take the class's shape before the regressed
    alignment refines it. ``power`` 0 returns ``theta``.

    Args:
        aspect: (N,) aspect ratio of each image-class pair's class view.
    """
    if power == 0:
        return theta
    sx = aspect.to(theta.dtype).clamp(1.0 / MAX_ASPECT, MAX_ASPECT) ** (power / 2.0)  # (N,)
    scale = torch.stack([sx, 1.0 / sx], dim=-1).view(-1, 1, 1, 2, 1)  # (N, 1, 1, 2, 1) rows x, y
    return theta * scale


# Class-local coordinates of the grid corners: top-left, top-right, bottom-left, bottom-right (reference order).
_CORNERS_LOCAL = ((-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0))


def grid_corners(theta: Tensor, box_size: float, stride: float) -> Tensor:
    """(N, H, W, 2, 3) transforms -> (N, H, W, 4, 2) grid corners in the global frame of ``box_size`` windows."""
    _, h, w = theta.shape[:3]
    cy = (torch.arange(h, dtype=theta.dtype, device=theta.device) + 0.5) * stride
    cx = (torch.arange(w, dtype=theta.dtype, device=theta.device) + 0.5) * stride
    centre = torch.stack(torch.broadcast_tensors(cx.view(1, w), cy.view(h, 1)), dim=-1)  # (H, W, 2)
    return corners_at(theta, centre, box_size)


def corners_at(theta: Tensor, centre: Tensor, box_size: float) -> Tensor:
    """(..., 2, 3) transforms of windows centred at ``centre`` (..., 2) (image pixels, broadcast) -> (..., 4, 2)
    grid corners: top-left, top-right, bottom-left, bottom-right."""
    local = torch.tensor(_CORNERS_LOCAL, dtype=theta.dtype, device=theta.device)  # (4, 2)
    pts = torch.einsum("...ij,cj->...ci", theta[..., :2], local) + theta[..., 2].unsqueeze(-2)  # (..., 4, 2)
    return pts * (box_size / 2.0) + centre.unsqueeze(-2)


def corners_box(corners: Tensor) -> Tensor:
    """(..., 4, 2) corners of a parallelogram -> (..., 4) its axis-aligned xyxy box (exact over all its points)."""
    return torch.cat([corners.amin(dim=-2), corners.amax(dim=-2)], dim=-1)
