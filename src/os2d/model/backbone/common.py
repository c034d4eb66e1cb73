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
