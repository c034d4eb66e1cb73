"""Backbone registry: name -> builder of a stride-16 feature trunk.

Every trunk exposes ``out_channels``, ``stride`` (16), ``normalize(images01)`` and ``forward(x)``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def _resnet(depth: str) -> Callable[[bool, bool], nn.Module]:
    def build(pretrained: bool, frozen_bn: bool) -> nn.Module:
        from os2d.model.backbone.resnet import ResNetTrunk

        if pretrained:
            raise ValueError(
                "ResNet ImageNet weights are not bundled; build with pretrained=False and load a file "
                "(see `os2d weights import`)"
            )
        return ResNetTrunk(depth, frozen_bn=frozen_bn)

    return build


def _efficientnet_lite0(pretrained: bool, frozen_bn: bool) -> nn.Module:
    from os2d.model.backbone.efficientnet_lite import efficientnet_lite0

    return efficientnet_lite0(pretrained=pretrained, frozen_bn=frozen_bn)


def _efficientnet_lite2(pretrained: bool, frozen_bn: bool) -> nn.Module:
    from os2d.model.backbone.efficientnet_lite import efficientnet_lite2

    return efficientnet_lite2(pretrained=pretrained, frozen_bn=frozen_bn)


BACKBONES: dict[str, Callable[[bool, bool], nn.Module]] = {
    "resnet50": _resnet("resnet50"),
    "resnet101": _resnet("resnet101"),
    "efficientnet_lite0": _efficientnet_lite0,
    "efficientnet_lite2": _efficientnet_lite2,
}


def build_backbone(name: str, *, pretrained: bool = False, frozen_bn: bool = True) -> nn.Module:
    """Build a trunk by registry name; ``pretrained`` loads bundled ImageNet weights where they exist."""
    key = name.lower().replace("-", "_")
    if key not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    return BACKBONES[key](pretrained, frozen_bn)
