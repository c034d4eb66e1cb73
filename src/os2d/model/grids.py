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


def local_grid(theta: Tensor, size: int = 15) -> tuple[Tensor, Tensor]:
    """Points of the size x size class grid under ``theta``, in each location's local frame.

    Args:
        theta: (..., 2, 3) from :func:`params_to_affine`.
    Returns:
        x, y: each (..., size, size), indexed [p (class row), q (class column)].
    """
    base = torch.linspace(-1.0, 1.0, size, dtype=theta.dtype, device=theta.device)
    xq = base.view(*([1] * (theta.dim() - 2)), 1, size)  # varies along q
    yp = base.view(*([1] * (theta.dim() - 2)), size, 1)  # varies along p
    t = theta[..., None, None]  # (..., 2, 3, 1, 1)
    x = t[..., 0, 0, :, :] * xq + t[..., 0, 1, :, :] * yp + t[..., 0, 2, :, :]
    y = t[..., 1, 0, :, :] * xq + t[..., 1, 1, :, :] * yp + t[..., 1, 2, :, :]
    return x, y


def window_centers(height: int, width: int, stride: float, *, device=None, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """Centres of the windows of a stride-``stride`` grid: ((H, 1), (1, W)) with value ``stride * (index + 0.5)``.

    The half-cell offset is the reference's convention at both the feature-map level (stride 1) and the image
    level (stride 16); it must be kept to reproduce official models.
    """
    cy = (torch.arange(height, device=device, dtype=dtype) + 0.5) * stride
    cx = (torch.arange(width, device=device, dtype=dtype) + 0.5) * stride
    return cy.view(height, 1), cx.view(1, width)


def local_to_global(x_local: Tensor, y_local: Tensor, box_size: float, stride: float) -> tuple[Tensor, Tensor]:
    """Map local grids (N, H, W, S, S) of every location to a global frame of windows ``box_size`` wide.

    ``x_global = box_size / 2 * x_local + stride * (l + 0.5)`` for location (k, l); same for y with k.
    Feature-map frame: box_size = S (15), stride 1. Image frame: box_size = anchor size (240), stride 16.
    """
    _, h, w = x_local.shape[:3]
    cy, cx = window_centers(h, w, stride, device=x_local.device, dtype=x_local.dtype)
    half = box_size / 2.0
    x = x_local * half + cx.view(1, 1, w, 1, 1)
    y = y_local * half + cy.view(1, h, 1, 1, 1)
    return x, y
