"""Alignment error of a model's TransformNet on held-out warps, measured through the full OS2D head.

Each held-out pair is run through :meth:`Os2dModel.heads` (the detection code path: correlation,
TransformNet, ``params_to_affine``, grids, corners), and the predicted grid at a location is compared with
the true placement of the class image on the canvas. The affine grid is fixed by its corners, so the mean
distance over the S x S grid points follows from the corners exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from os2d.model.grids import corners_box
from os2d.model.os2d import Os2dModel
from os2d.ops import box_iou
from os2d.pretrain.grid_loss import grid_distance
from os2d.pretrain.pairs import PairSet


def theta_from_corners(corners: Tensor) -> Tensor:
    """(..., 4, 2) corners (TL, TR, BL, BR) of an affine grid -> (..., 2, 3) map from class-local [-1, 1]^2
    to the corners' frame."""
    tl, tr, bl = corners[..., 0, :], corners[..., 1, :], corners[..., 2, :]
    return torch.stack([(tr - tl) / 2, (bl - tl) / 2, (tr + bl) / 2], dim=-1)


@dataclass
class AlignmentReport:
    """Per-pair errors at the centre location (the one nearest the object centre) and over the window."""

    centre_error_px: np.ndarray  # (N,) mean grid-point distance, pixels of the canvas
    window_error_px: np.ndarray  # (N,) the same, averaged over the (2R+1)^2 locations around the centre
    box_iou: np.ndarray  # (N,) IoU of the predicted box (grid min/max) at the centre with the true box
    centre_score: np.ndarray  # (N,) the head's detection score at the centre location
    stride: float

    def summary(self) -> dict[str, float]:
        e = self.centre_error_px
        return {
            "pairs": float(len(e)),
            "grid_err_px_mean": float(e.mean()),
            "grid_err_px_median": float(np.median(e)),
            "grid_err_cells_mean": float(e.mean() / self.stride),
            "under_1_cell": float((e < self.stride).mean()),
            "window_err_px_mean": float(self.window_error_px.mean()),
            "box_iou_mean": float(self.box_iou.mean()),
            "box_iou_over_0.7": float((self.box_iou > 0.7).mean()),
            "score_mean": float(self.centre_score.mean()),
        }


def evaluate_alignment(model: Os2dModel, pairs: PairSet, *, progress: bool = False) -> AlignmentReport:
    """Run the head on every held-out pair (full feature maps, see ``make_pairs(full_maps=True)``)."""
    from tqdm import tqdm

    k0, l0 = pairs.centre
    r = pairs.radius
    s = model.config.class_grid_size
    centre_err, window_err, ious, scores = [], [], [], []
    model.eval()
    with torch.no_grad():
        for i in tqdm(range(len(pairs)), desc="eval", unit="pair", disable=not progress):
            feats = pairs.features[i : i + 1].float()
            kern = pairs.kernels[i : i + 1].float()
            out = model.heads(feats, kern)
            corners = out.corners_xy[0, 0]  # (H, W, 4, 2)
            true = pairs.corners[i].to(corners.dtype)  # (4, 2)
            window = corners[k0 - r : k0 + r + 1, l0 - r : l0 + r + 1]  # (2R+1, 2R+1, 4, 2)
            err = grid_distance(theta_from_corners(window), theta_from_corners(true), s)  # (2R+1, 2R+1)
            centre_err.append(float(err[r, r]))
            window_err.append(float(err.mean()))
            ious.append(float(box_iou(corners_box(corners[k0, l0])[None], corners_box(true)[None])[0, 0]))
            scores.append(float(out.scores[0, 0, k0, l0]))
    return AlignmentReport(np.array(centre_err), np.array(window_err), np.array(ious), np.array(scores),
                           float(model.stride))


COLUMNS = (
    ("grid_err_px_mean", "grid err px (mean)", "{:.1f}"),
    ("grid_err_px_median", "median", "{:.1f}"),
    ("grid_err_cells_mean", "cells", "{:.2f}"),
    ("under_1_cell", "<1 cell", "{:.0%}"),
    ("window_err_px_mean", "window px", "{:.1f}"),
    ("box_iou_mean", "box IoU", "{:.3f}"),
    ("box_iou_over_0.7", "IoU>0.7", "{:.0%}"),
    ("score_mean", "score", "{:.3f}"),
)


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A plain-text table: one row per model (e.g. ``identity``, ``pretrained``), columns of :data:`COLUMNS`."""
    header = ["TransformNet"] + [title for _, title, _ in COLUMNS]
    body = [[name] + [fmt.format(m[key]) for key, _, fmt in COLUMNS] for name, m in rows.items()]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
