"""The head's alignment path for (class, input) PAIRS: correlation, TransformNet, parameters -> affine maps.

Pretraining pairs every input canvas with its own class image, so only the diagonal of the head's
(B images x K classes) correlation is needed. The maths is the head's own (:func:`os2d.model.correlation.correlate`,
:func:`os2d.model.grids.params_to_affine`), so a TransformNet trained here drops into :class:`Os2dModel`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from os2d.model.correlation import l2_normalize
from os2d.model.grids import params_to_affine
from os2d.model.transform_net import TransformNet


def pair_correlation(features: Tensor, kernels: Tensor) -> Tensor:
    """Cosine correlation of each input map with its own class kernel.

    Args:
        features: (B, C, H, W) input features (unnormalised).
        kernels: (B, S*S, C) normalised class kernels (:meth:`Os2dModel.class_kernels`).
    Returns:
        (B, S*S, H, W) = ``correlate(features, kernels)[b, b]`` for every b.
    """
    feats = l2_normalize(features, dim=1, eps=1e-5)  # the eps of ``correlate``
    return (kernels @ feats.flatten(2)).view(features.shape[0], kernels.shape[1], *features.shape[-2:])


def transform_params_valid(transform_net: TransformNet, corr: Tensor) -> Tensor:
    """TransformNet outputs at the INTERIOR locations only ("valid" convolutions).

    Equal to ``transform_net(corr)[..., r:-r, r:-r]`` with r = the net's half receptive field (7 for 7+5+5
    kernels), but computes only what those outputs need: training on windows around the objects costs
    about half of the padded forward.

    Args:
        corr: (N, S*S, H, W).
    Returns:
        (N, P, H - 2r, W - 2r).
    """
    x = l2_normalize(corr.relu(), dim=1, eps=1e-6)  # as TransformNet.forward
    for m in [*transform_net.conv, transform_net.linear]:
        if isinstance(m, nn.Conv2d):
            x = F.conv2d(x, m.weight, m.bias, stride=m.stride, padding=0, dilation=m.dilation, groups=m.groups)
        else:
            x = m(x)
    return x


def receptive_radius(transform_net: TransformNet) -> int:
    """Half the receptive field of the TransformNet on the correlation map (7 for the reference net)."""
    convs = [m for m in [*transform_net.conv, transform_net.linear] if isinstance(m, nn.Conv2d)]
    return sum((m.kernel_size[0] - 1) // 2 for m in convs)


def predicted_thetas(transform_net: TransformNet, corr: Tensor, *, invert: bool) -> Tensor:
    """(N, S*S, H, W) correlation windows -> (N, H - 2r, W - 2r, 2, 3) class-local -> image-local maps,
    read exactly as the head reads them (``params_to_affine(..., invert=config.invert_transform)``)."""
    return params_to_affine(transform_params_valid(transform_net, corr), invert=invert)
