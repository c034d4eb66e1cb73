"""Shared fixtures: a tiny deterministic stride-16 backbone so model tests run in milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from os2d.config import ModelConfig
from os2d.model.os2d import Os2dModel
from os2d.model.transform_net import TransformNet

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class ToyBackbone(nn.Module):
    """Four stride-2 convolutions (stride 16), ReLU output like ResNet's layer3."""

    out_channels = 32
    stride = 16

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        layers: list[nn.Module] = []
        ch = 3
        for out in (16, 24, 32, 32):
            conv = nn.Conv2d(ch, out, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.05)
            layers += [conv, nn.ReLU()]
            ch = out
        self.net = nn.Sequential(*layers)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return images - 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_toy_model(num_params: int = 6, invert: bool = True) -> Os2dModel:
    cfg = ModelConfig(backbone="toy", num_transform_params=num_params, invert_transform=invert)
    torch.manual_seed(0)
    model = Os2dModel(ToyBackbone(), TransformNet(num_params, 225), cfg)
    return model.eval()


@pytest.fixture
def toy_model() -> Os2dModel:
    return make_toy_model()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
