"""The CNNGeometric grid loss: distance between the grid points under the predicted and the true transform."""

from __future__ import annotations

import torch
from torch import Tensor


def grid_points(theta: Tensor, size: int = 15) -> Tensor:
    """Points of the ``size x size`` class grid (``linspace(-1, 1, size)`` per axis) under affine maps.

    Args:
        theta: (..., 2, 3) class-local -> image-local maps.
    Returns:
        (..., size * size, 2) image-local points, row-major over (row p, column q).
    """
    lin = torch.linspace(-1.0, 1.0, size, dtype=theta.dtype, device=theta.device)
    ys, xs = torch.meshgrid(lin, lin, indexing="ij")
    pts = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)  # (S*S, 2)
    return torch.einsum("...ij,nj->...ni", theta[..., :2], pts) + theta[..., 2].unsqueeze(-2)


def grid_loss(theta_pred: Tensor, theta_true: Tensor, size: int = 15) -> Tensor:
    """Mean squared distance between corresponding grid points (Rocco et al. 2017), a scalar.

    Both (..., 2, 3); distances are in image-local units (1 = half an anchor).
    """
    diff = grid_points(theta_pred, size) - grid_points(theta_true, size)
    return diff.pow(2).sum(-1).mean()


def grid_distance(theta_pred: Tensor, theta_true: Tensor, size: int = 15) -> Tensor:
    """Mean Euclidean distance between corresponding grid points of each pair of transforms: (...)."""
    diff = grid_points(theta_pred, size) - grid_points(theta_true, size)
    return diff.norm(dim=-1).mean(-1)
