"""The dense class-agnostic head: per feature cell an objectness logit, a centre-ness logit and the distances
from the cell centre to the four box sides (FCOS, Tian et al. 2019, on one stride-16 level).

Convention: feature cell (i, j) of a level has its centre at pixel ((j + 0.5) * stride, (i + 0.5) * stride) of
that level image (features computed without anchor padding); boxes are xyxy level pixels; side distances are
predicted as ``log(distance / stride)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from os2d.agnostic.config import HeadConfig

MAX_LOG_DISTANCE = 8.0  # exp(8) * 16 px ~ 48k px: keeps exp() finite early in training


def cell_centers(height: int, width: int, stride: float, *, device: torch.device | None = None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """(H, W, 2) xy pixel centres of the cells of an H x W feature map."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) * stride
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def boxes_from_distances(centers_xy: Tensor, ltrb: Tensor) -> Tensor:
    """Cell centres (..., 2) and side distances (..., 4) in pixels -> boxes (..., 4) xyxy."""
    x, y = centers_xy.unbind(-1)
    left, top, right, bottom = ltrb.unbind(-1)
    return torch.stack([x - left, y - top, x + right, y + bottom], dim=-1)


@dataclass
class HeadOutput:
    """Raw head outputs of a batch of feature maps."""

    objectness_logits: Tensor  # (B, H, W)
    centerness_logits: Tensor  # (B, H, W)
    log_distances: Tensor  # (B, H, W, 4): log(side distance / stride), order left, top, right, bottom

    def distances(self, stride: float) -> Tensor:
        """(B, H, W, 4) side distances in pixels."""
        return self.log_distances.clamp(max=MAX_LOG_DISTANCE).exp() * stride

    def scores(self) -> Tensor:
        """(B, H, W) box score in [0, 1]: sqrt(objectness * centre-ness), as FCOS ranks its boxes."""
        return (self.objectness_logits.sigmoid() * self.centerness_logits.sigmoid()).sqrt()


class ObjectnessHead(nn.Module):
    """Shared dilated 3x3 conv tower, then three 1x1 predictors (objectness, centre-ness, 4 log distances)."""

    def __init__(self, *, in_channels: int, hidden_channels: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for d in dilations:
            layers += [nn.Conv2d(ch, hidden_channels, 3, padding=d, dilation=d),
                       nn.GroupNorm(8, hidden_channels), nn.ReLU(inplace=True)]
            ch = hidden_channels
        self.tower = nn.Sequential(*layers)
        self.predict = nn.Conv2d(hidden_channels, 6, 1)  # objectness, centre-ness, l, t, r, b
        nn.init.normal_(self.predict.weight, std=0.01)
        with torch.no_grad():
            # RetinaNet prior: objectness starts at p = 0.01 so the many background cells do not swamp the loss
            self.predict.bias.zero_()
            self.predict.bias[0] = -4.595
            self.predict.bias[2:] = 1.0  # boxes start at ~2.7 cells from the centre to each side

    def forward(self, features: Tensor) -> HeadOutput:
        """(B, C, H, W) trunk features -> :class:`HeadOutput`."""
        out = self.predict(self.tower(features))  # (B, 6, H, W)
        return HeadOutput(objectness_logits=out[:, 0], centerness_logits=out[:, 1],
                          log_distances=out[:, 2:].permute(0, 2, 3, 1))


def build_head(config: HeadConfig) -> ObjectnessHead:
    """Composition root of the head."""
    return ObjectnessHead(in_channels=config.in_channels, hidden_channels=config.hidden_channels,
                          dilations=tuple(config.dilations))


__all__ = ["HeadOutput", "ObjectnessHead", "boxes_from_distances", "build_head", "cell_centers"]
