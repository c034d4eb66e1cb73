"""Pieces shared by the backbones."""

from __future__ import annotations

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrozenBNMixin:
    """Keeps every BatchNorm in eval mode when ``self.frozen_bn`` is set (reference: ``train.model.freeze_bn``).

    The running statistics of an ImageNet backbone are meaningless on 4-image batches of one-shot training,
    so they are frozen; the affine parameters still train unless the caller freezes them.
    """

    frozen_bn: bool

    def train(self, mode: bool = True):  # type: ignore[override]
        super().train(mode)  # type: ignore[misc]
        if self.frozen_bn:
            for m in self.modules():  # type: ignore[attr-defined]
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def init_conv_bn(module: nn.Module) -> None:
    """Kaiming-normal (fan-out) convolutions, BatchNorm scale 1 and shift 0: the torchvision ImageNet init."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
