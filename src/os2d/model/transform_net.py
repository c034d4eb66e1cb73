"""TransformNet: regresses an affine alignment at every input location from the correlation (paper Sec. 3).

Architecture of weakalign's FeatureRegression made fully convolutional (reference ``TransformationNet``):
ReLU + L2 normalisation over the 225 correlation channels, conv 7x7 -> 128 + BN + ReLU, conv 5x5 -> 64 + BN +
ReLU, conv 5x5 -> P ("linear"). Receptive field 15x15 on the correlation map, stride 1, "same" padding.
Module names (``conv.0``, ``conv.1``, ``conv.3``, ``conv.4``, ``linear``) match the reference checkpoints.
"""

from __future__ import annotations

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
