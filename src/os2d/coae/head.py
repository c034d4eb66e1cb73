"""The CoAE head on RoI features: non-local co-attention between a proposal and the query (Hsieh et al. 2019,
Sec. 3.1, after Wang et al. 2018), squeeze-and-co-excitation from the query (Sec. 3.2), and a two-input ranking
head (Sec. 3.3): one logit "this proposal shows the query's object" and a box refinement per proposal.

Shapes: K proposals, C trunk channels, P x P RoI bins, h x w query cells.
Box refinement: Faster R-CNN deltas (dx, dy, dw, dh) of the proposal, divided by :data:`BOX_DELTA_WEIGHTS`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from os2d.coae.config import CoaeHeadConfig

BOX_DELTA_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
MAX_LOG_SCALE = math.log(1000.0 / 16)


def encode_boxes(proposals_xyxy: Tensor, targets_xyxy: Tensor) -> Tensor:
    """(K, 4) proposals and their target boxes -> (K, 4) weighted deltas."""
    pw, ph = proposals_xyxy[:, 2] - proposals_xyxy[:, 0], proposals_xyxy[:, 3] - proposals_xyxy[:, 1]
    px, py = proposals_xyxy[:, 0] + 0.5 * pw, proposals_xyxy[:, 1] + 0.5 * ph
    tw, th = targets_xyxy[:, 2] - targets_xyxy[:, 0], targets_xyxy[:, 3] - targets_xyxy[:, 1]
    tx, ty = targets_xyxy[:, 0] + 0.5 * tw, targets_xyxy[:, 1] + 0.5 * th
    wx, wy, ww, wh = BOX_DELTA_WEIGHTS
    return torch.stack([wx * (tx - px) / pw, wy * (ty - py) / ph, ww * torch.log(tw / pw), wh * torch.log(th / ph)], 1)


def decode_boxes(proposals_xyxy: Tensor, deltas: Tensor) -> Tensor:
    """Inverse of :func:`encode_boxes`: (K, 4) proposals, (K, 4) deltas -> (K, 4) boxes xyxy."""
    pw, ph = proposals_xyxy[:, 2] - proposals_xyxy[:, 0], proposals_xyxy[:, 3] - proposals_xyxy[:, 1]
    px, py = proposals_xyxy[:, 0] + 0.5 * pw, proposals_xyxy[:, 1] + 0.5 * ph
    wx, wy, ww, wh = BOX_DELTA_WEIGHTS
    cx, cy = px + deltas[:, 0] / wx * pw, py + deltas[:, 1] / wy * ph
    w = pw * (deltas[:, 2] / ww).clamp(max=MAX_LOG_SCALE).exp()
    h = ph * (deltas[:, 3] / wh).clamp(max=MAX_LOG_SCALE).exp()
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=1)


class CoAttention(nn.Module):
    """Non-local attention of a set of positions onto another: ``x + W_z softmax(theta(x) phi(y)^T) g(y)``."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.theta = nn.Linear(channels, dim)
        self.phi = nn.Linear(channels, dim)
        self.g = nn.Linear(channels, dim)
        self.out = nn.Linear(dim, channels)
        nn.init.zeros_(self.out.weight)  # starts as the identity (Wang et al. 2018, zero-initialised W_z)
        nn.init.zeros_(self.out.bias)
        self.scale = dim ** -0.5

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x (K, n, C) attends to y (K, m, C) -> (K, n, C)."""
        attn = (self.theta(x) @ self.phi(y).transpose(1, 2) * self.scale).softmax(dim=-1)  # (K, n, m)
        return x + self.out(attn @ self.g(y))


class CoaeHead(nn.Module):
    """Co-attention (both directions), co-excitation, ranking head. Parameters only; inputs are trunk features."""

    def __init__(self, *, in_channels: int, pool_size: int, attention_dim: int, excitation_reduction: int,
                 hidden_channels: int, fc_dim: int) -> None:
        super().__init__()
        c = in_channels
        self.target_from_query = CoAttention(c, attention_dim)
        self.query_from_target = CoAttention(c, attention_dim)
        self.excite = nn.Sequential(nn.Linear(c, max(1, c // excitation_reduction)), nn.ReLU(inplace=True),
                                    nn.Linear(max(1, c // excitation_reduction), c))
        self.tower = nn.Sequential(
            nn.Conv2d(c, hidden_channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, hidden_channels, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        side = (pool_size + 1) // 2
        self.roi_fc = nn.Linear(hidden_channels * side * side, fc_dim)
        self.query_fc = nn.Linear(c, fc_dim)
        self.joint = nn.Sequential(nn.Linear(3 * fc_dim, fc_dim), nn.ReLU(inplace=True))
        self.score = nn.Linear(fc_dim, 1)
        self.box = nn.Linear(fc_dim, 4)
        nn.init.normal_(self.box.weight, std=0.001)
        nn.init.zeros_(self.box.bias)

    def forward(self, rois: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """rois (K, C, P, P) and query (C, h, w) or (K, C, h, w) -> logits (K,), box deltas (K, 4)."""
        k, c, p, _ = rois.shape
        if query.dim() == 3:
            query = query[None].expand(k, -1, -1, -1)
        r = F.layer_norm(rois.flatten(2).transpose(1, 2), (c,))  # (K, P*P, C): trunk features are unnormalised
        q = F.layer_norm(query.flatten(2).transpose(1, 2), (c,))  # (K, h*w, C)
        r2 = self.target_from_query(r, q)  # the proposal attends to the query (co-attention)
        q2 = self.query_from_target(q, r)  # and the query to the proposal
        q_vec = q2.mean(dim=1)  # (K, C) squeeze of the query
        r3 = r2 * torch.sigmoid(self.excite(q_vec))[:, None, :]  # co-excitation: channels the query asks for
        x = self.tower(r3.transpose(1, 2).reshape(k, c, p, p)).flatten(1)  # (K, hidden * side^2)
        x = F.relu(self.roi_fc(x))
        qv = F.relu(self.query_fc(q_vec))
        z = self.joint(torch.cat([x, qv, x * qv], dim=1))
        return self.score(z)[:, 0], self.box(z)


def build_coae_head(config: CoaeHeadConfig) -> CoaeHead:
    """Composition root of the head."""
    return CoaeHead(in_channels=config.in_channels, pool_size=config.pool_size, attention_dim=config.attention_dim,
                    excitation_reduction=config.excitation_reduction, hidden_channels=config.hidden_channels,
                    fc_dim=config.fc_dim)


__all__ = ["BOX_DELTA_WEIGHTS", "CoAttention", "CoaeHead", "build_coae_head", "decode_boxes", "encode_boxes"]
