"""Detections from an OS2D model: the image pyramid (:mod:`~os2d.inference.pyramid`), the heads on every level
(optionally on a class shortlist, :mod:`~os2d.inference.shortlist`), decoding and NMS (:mod:`~os2d.inference.decode`).
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor

from os2d.config import InferenceConfig
from os2d.inference.decode import level_candidates, merge_and_nms
from os2d.inference.pyramid import prepare_levels
from os2d.inference.shortlist import shortlist_views
from os2d.model.os2d import Os2dModel
from os2d.results import Detections


@torch.no_grad()
def detect_levels(model: Os2dModel, levels: list[Tensor], original_size: tuple[int, int], kernels: Tensor,
                  view_class: Tensor, class_names: list[str], config: InferenceConfig, *,
                  class_desc: Tensor | None = None) -> Detections:
    """Detect every class of a gallery in an image pyramid from :func:`prepare_levels`.

    With ``config.shortlist_top_k`` set (and fewer than the gallery's classes), the heads run only for the views
    of the K classes ranked best by :func:`os2d.inference.shortlist.shortlist_views` on the same backbone features;
    ``class_desc`` (V, C) are the kernels' precomputed ``os2d.inference.shortlist.class_descriptors(kernels,
    model.config.pool_border)`` (optional).
    """
    if kernels.shape[0] == 0:
        return Detections.empty(class_names, original_size)
    device = next(model.parameters()).device
    levels = [lv.to(device, non_blocking=True) for lv in levels]
    feats = [model.extract_features(lv[None]) for lv in levels]
    k = config.shortlist_top_k
    if k is not None and k < len(class_names):
        views, _ = shortlist_views(feats, kernels, view_class, len(class_names), k,
                                   grid_size=model.config.class_grid_size, pool_border=model.config.pool_border,
                                   class_desc=class_desc)
        kernels, view_class = kernels[views], view_class.cpu()[views]
    kernels = kernels.to(device)
    cands = [level_candidates(model, lv, kernels, original_size, config, features=f)
             for lv, f in zip(levels, feats, strict=True)]
    return merge_and_nms(cands, view_class, class_names, original_size, config)


@torch.no_grad()
def detect_image(model: Os2dModel, image: Image.Image, kernels: Tensor, view_class: Tensor,
                 class_names: list[str], config: InferenceConfig, *, class_desc: Tensor | None = None) -> Detections:
    """Detect every class of a gallery in one RGB PIL image.

    Args:
        kernels: (V, S*S, C) class-view kernels; ``view_class`` (V,) maps each view to its class index.
        class_desc: (V, C) precomputed shortlist descriptors of ``kernels`` (used with ``shortlist_top_k``).
    """
    if kernels.shape[0] == 0:
        return Detections.empty(class_names, image.size)
    return detect_levels(model, prepare_levels(image, config), image.size, kernels, view_class, class_names,
                         config, class_desc=class_desc)


__all__ = ["detect_image", "detect_levels"]
