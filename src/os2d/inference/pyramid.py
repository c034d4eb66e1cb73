"""Image pyramid of one detection input: the level sizes and the level images (no model needed).

Follows the reference's pyramid: the image is first resized so that ``sqrt(w*h)`` equals ``image_size`` (when
set), then every scale ``s`` of ``config.scales`` gives a level of ``int(w * r * s)`` x ``int(h * r * s)``.
"""

from __future__ import annotations

import math

from PIL import Image
from torch import Tensor

from os2d.config import AUTO, InferenceConfig
from os2d.io import image_to_tensor


def pyramid_sizes(width: int, height: int, config: InferenceConfig) -> list[tuple[int, int]]:
    """(w, h) of each level: base resize to sqrt(w*h) = image_size (if set), then ``int(w * r * s)``.

    With ``image_size="auto"`` the levels are chosen per image by :mod:`os2d.inference.autoscale`; the one
    "level" prepared here is the source they are cut from: the image shrunk, if needed, so that no level
    (``auto_scale.max_size`` times the largest scale) is an upscale of a downscale.
    """
    if config.image_size == AUTO:
        side = math.sqrt(width * height)
        r = min(1.0, config.auto_scale.max_size * max(config.scales) / side)
        return [(max(1, int(width * r)), max(1, int(height * r)))]
    r = 1.0 if config.image_size is None else config.image_size / math.sqrt(width * height)
    return [(max(1, int(width * r * s)), max(1, int(height * r * s))) for s in config.scales]


def prepare_levels(image: Image.Image, config: InferenceConfig) -> list[Tensor]:
    """The pyramid of one RGB PIL image as (3, h, w) CPU tensors in [0, 1] (no model needed: can run in a
    background thread while the model works on another image); with ``image_size="auto"`` the single source
    image of the automatically chosen levels (see :func:`pyramid_sizes`)."""
    size = image.size
    levels = []
    for lw, lh in pyramid_sizes(*size, config):
        level = image if (lw, lh) == size else image.resize((lw, lh), Image.BILINEAR)
        levels.append(image_to_tensor(level))
    return levels


__all__ = ["prepare_levels", "pyramid_sizes"]
