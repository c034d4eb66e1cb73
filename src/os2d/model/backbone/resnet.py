"""ResNet-50/101 trunks cut after ``layer3`` (the paper's "C4" features: stride 16, 1024 channels).

Parameter names follow torchvision's ``resnet50``/``resnet101`` (``conv1``, ``bn1``, ``layer1.0.conv1`` ...,
``layer3.5.downsample.1``) so torchvision files and the official OS2D checkpoints map onto this module 1:1.
The stride sits in the 3x3 convolution of each bottleneck (torchvision's "ResNet v1.5"), as in the reference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from os2d.model.backbone.common import IMAGENET_MEAN, IMAGENET_STD, FrozenBNMixin, init_conv_bn

# Blocks per stage, stages 1..3 (layer4 is never built).
RESNET_LAYERS = {"resnet50": (3, 4, 6), "resnet101": (3, 4, 23)}


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 bottleneck with expansion 4 and an optional projection shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _make_stage(in_channels: int, width: int, num_blocks: int, stride: int) -> nn.Sequential:
    blocks = [Bottleneck(in_channels, width, stride)]
    blocks += [Bottleneck(width * Bottleneck.expansion, width) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class ResNetTrunk(FrozenBNMixin, nn.Module):
    """conv1 -> bn1 -> relu -> maxpool -> layer1 -> layer2 -> layer3.

    Output (B, 1024, ceil(H/16), ceil(W/16)), post-ReLU (so features are non-negative).
    """

    out_channels = 1024
    stride = 16
    jit_trace_safe = True  # forward has no size-dependent Python: one trace serves every input size

    def __init__(self, depth: str = "resnet50", *, frozen_bn: bool = True) -> None:
        super().__init__()
        if depth not in RESNET_LAYERS:
            raise ValueError(f"unknown ResNet depth {depth!r}; choose from {sorted(RESNET_LAYERS)}")
        n1, n2, n3 = RESNET_LAYERS[depth]
        self.depth = depth
        self.frozen_bn = frozen_bn
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = _make_stage(64, 64, n1, 1)
        self.layer2 = _make_stage(256, 128, n2, 2)
        self.layer3 = _make_stage(512, 256, n3, 2)
        self._init_weights()
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _init_weights(self) -> None:
        init_conv_bn(self)

    def normalize(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> ImageNet mean/std normalised input (the reference's ``Normalize``)."""
        return (images - self.pixel_mean) / self.pixel_std

    def blocks(self) -> list[nn.Module]:
        """The bottlenecks of layer1..layer3 in order (``freeze.backbone_train_last`` trains the last N)."""
        return [b for layer in (self.layer1, self.layer2, self.layer3) for b in layer]

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """(convolution, BatchNorm that follows it) names, for :func:`os2d.model.backbone.fuse.fused_copy`."""
        pairs = [("conv1", "bn1")]
        for name, m in self.named_modules():
            if isinstance(m, Bottleneck):
                pairs += [(f"{name}.conv{i}", f"{name}.bn{i}") for i in (1, 2, 3)]
                if m.downsample is not None:
                    pairs.append((f"{name}.downsample.0", f"{name}.downsample.1"))
        return pairs

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))  # (B, 1024, H/16, W/16)


def resnet50(frozen_bn: bool = True) -> ResNetTrunk:
    """ResNet-50 trunk (random init; weights come from files the user supplies, see ``os2d.model.weights``)."""
    return ResNetTrunk("resnet50", frozen_bn=frozen_bn)


def resnet101(frozen_bn: bool = True) -> ResNetTrunk:
    """ResNet-101 trunk (random init)."""
    return ResNetTrunk("resnet101", frozen_bn=frozen_bn)
