"""TransformNet: regresses an affine alignment at every input location from the correlation (paper Sec. 3).

Architecture of weakalign's FeatureRegression made fully convolutional (reference ``TransformationNet``):
ReLU + L2 normalisation over the 225 correlation channels, conv 7x7 -> 128 + BN + ReLU, conv 5x5 -> 64 + BN +
ReLU, conv 5x5 -> P ("linear"). Receptive field 15x15 on the correlation map, stride 1, "same" padding.
Module names (``conv.0``, ``conv.1``, ``conv.3``, ``conv.4``, ``linear``) match the reference checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from os2d.model.correlation import l2_normalize


class TransformNet(nn.Module):
    """(N, 225, H, W) correlation -> (N, P, H, W) transformation parameters.

    Initialised to the identity transform: last conv weight 0, bias = identity parameters
    (P=6: ``[1, 0, 0, 0, 1, 0]``; P=4: ``[1, 0, 1, 0]`` = sx, tx, sy, ty).
    """

    def __init__(self, num_params: int = 6, in_channels: int = 225, *, frozen_bn: bool = False) -> None:
        super().__init__()
        if num_params not in (4, 6):
            raise ValueError(f"TransformNet supports 4 (scale+translation) or 6 (affine) outputs, got {num_params}")
        self.num_params = num_params
        self.frozen_bn = frozen_bn
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 128, 7, padding=3),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 64, 5, padding=2),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        self.linear = nn.Conv2d(64, num_params, 5, padding=2)
        self.reset_to_identity()

    def reset_to_identity(self) -> None:
        """Zero the last layer and set its bias to the identity transform."""
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        with_ones = (0, 4) if self.num_params == 6 else (0, 2)
        for i in with_ones:
            self.linear.bias.data[i] = 1.0

    def train(self, mode: bool = True) -> TransformNet:
        super().train(mode)
        if self.frozen_bn:  # reference ``freeze_bn_transform`` (V2: True)
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, corr: Tensor) -> Tensor:
        x = l2_normalize(corr.relu(), dim=1, eps=1e-6)
        return self.linear(self.conv(x))

    def forward_at(self, corr: Tensor, where: Tensor) -> Tensor:
        """``forward(corr)[n, :, y, x]`` for the P locations ``where`` (P, 3) = (n, y, x) only -> (P, num_params).

        Per pair n, the layers run without padding on the rectangle around its locations plus the 7-cell
        receptive-field halo; activations that fall outside the (H, W) map are zeroed after each layer, which is
        what the dense layers' zero padding sees, so the result equals the dense one up to summation order.
        Costs (rows + 14)(cols + 14) positions per pair instead of H*W: training computes TransformNet's
        gradient only where the loss can reach it (:func:`os2d.model.head.os2d_head`'s ``transform_grad_at``).
        Needs BatchNorm in eval mode (its statistics would otherwise depend on which cells are computed).
        """
        n_maps, _, h, w = corr.shape
        out = corr.new_empty(len(where), self.num_params)
        halo = self.halo()
        for n in where[:, 0].unique().tolist():
            sel = (where[:, 0] == n).nonzero().squeeze(1)
            ys, xs = where[sel, 1], where[sel, 2]
            y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
            # input rows y0 - halo .. y1 + halo (zeros outside the map, like the dense padding)
            top, left = y0 - halo, x0 - halo
            crop = corr[n, :, max(top, 0):min(y1 + halo, h), max(left, 0):min(x1 + halo, w)]
            crop = F.pad(crop, (max(-left, 0), max(x1 + halo - w, 0), max(-top, 0), max(y1 + halo - h, 0)))
            x = self.forward_windows(crop[None], corr.new_tensor([top], dtype=torch.long),
                                     corr.new_tensor([left], dtype=torch.long), (h, w))
            out[sel] = x[0, :, ys - y0, xs - x0].t().to(out.dtype)
        return out

    def halo(self) -> int:
        """The receptive-field radius in cells (7 for the 7x7, 5x5, 5x5 layers)."""
        return sum(conv.kernel_size[0] // 2 for conv in (self.conv[0], self.conv[3], self.linear))

    def forward_windows(self, corr: Tensor, top: Tensor, left: Tensor, size: tuple[int, int]) -> Tensor:
        """``forward`` of a whole map, read at P windows, from each window's own crop of the correlation.

        Args:
            corr: (P, 225, Rh + 2 * halo, Rw + 2 * halo) crops of the correlation; entries outside the (H, W) map
                are 0 (as the dense layers' zero padding sees them).
            top, left: (P,) map row and column of each crop's first cell (negative where it starts outside).
            size: (H, W) of the map the windows are cut from.
        Returns:
            (P, num_params, Rh, Rw): equal to ``forward(full map)[:, :, top + halo : ..., left + halo : ...]`` up
            to summation order. Activations outside the map are zeroed after each layer (the dense layers' zero
            padding of the next layer's input). Differentiable (:meth:`forward_at` trains through it).
        Needs BatchNorm in eval mode (its statistics would otherwise depend on which cells are computed).
        """
        if any(m.training for m in self.modules() if isinstance(m, nn.BatchNorm2d)):
            raise RuntimeError("TransformNet.forward_windows / forward_at need BatchNorm in eval mode "
                               "(frozen_bn_transform)")
        h, w = size
        x = l2_normalize(corr.relu(), dim=1, eps=1e-6)
        offset = 0
        for conv, bn in ((self.conv[0], self.conv[1]), (self.conv[3], self.conv[4]), (self.linear, None)):
            x = F.conv2d(x, conv.weight, conv.bias)  # valid: the window shrinks by the kernel radius
            offset += conv.kernel_size[0] // 2
            if bn is not None:
                x = bn(x).relu()
                rows = top.view(-1, 1) + offset + torch.arange(x.shape[-2], device=x.device)  # (P, rows)
                cols = left.view(-1, 1) + offset + torch.arange(x.shape[-1], device=x.device)
                inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
                x = x * inside.unsqueeze(1).to(x.dtype)  # the next layer's zero padding
        return x
