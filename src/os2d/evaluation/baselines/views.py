"""Class bookkeeping shared by the baselines: class names (labels) and, for every registered class view, the
class it belongs to and where the class image's corners land in it.

Class images go through the same helpers as the detector's class-encoding path
(:func:`os2d.gallery.encode_class_images`): :func:`os2d.io.load_image`, :func:`os2d.io.validate_class_image`
and the test-time views of :func:`os2d.gallery.class_views`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from os2d.gallery import VIEW_OPS, class_views
from os2d.io import ImageSource, load_image, validate_class_image


def view_corner_order(view: str) -> list[int]:
    """For each class corner (top-left, top-right, bottom-left, bottom-right), the index of the corner of the
    view's axis-aligned box where it lands (views rotate/flip the class image)."""
    op = VIEW_OPS[view]
    if op is None:
        return [0, 1, 2, 3]
    moved = np.asarray(Image.fromarray(np.array([[0, 1], [2, 3]], np.uint8)).transpose(op))
    at = {int(moved[r, c]): i for i, (r, c) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1)))}
    return [at[k] for k in range(4)]


def box_corners(boxes_xyxy: Tensor, order: Sequence[int]) -> Tensor:
    """(M, 4) boxes -> (M, 4, 2) class corners given a view's :func:`view_corner_order`."""
    x1, y1, x2, y2 = boxes_xyxy.unbind(-1)
    corners = torch.stack([torch.stack([x1, y1], -1), torch.stack([x2, y1], -1),
                           torch.stack([x1, y2], -1), torch.stack([x2, y2], -1)], dim=-2)  # box tl, tr, bl, br
    return corners[:, list(order)]


@dataclass
class ClassViews:
    """The classes a baseline knows and its class views, in registration order.

    Attributes:
        class_names: names, index = label.
        view_class: (V,) class index of each view.
        corner_orders: (V,) :func:`view_corner_order` of each view.
    """

    class_names: list[str] = field(default_factory=list)
    view_class: list[int] = field(default_factory=list)
    corner_orders: list[list[int]] = field(default_factory=list)

    def add(self, name: str, images: Sequence[ImageSource], *, rotations: bool = False,
            horizontal_flip: bool = False) -> list[Image.Image]:
        """Register class ``name`` (new, or more views of a known one) from class images; return the new views
        (RGB PIL images, in the order their class and corners were recorded).

        Raises:
            ValueError: no class image.
            os2d.io.ImageError: an unreadable, tiny or uniform class image.
        """
        if not images:
            raise ValueError(f"class {name!r}: no class image")
        views: list[tuple[str, Image.Image]] = []
        for src in images:
            img = load_image(src)
            validate_class_image(img)
            views += class_views(img, rotations=rotations, horizontal_flip=horizontal_flip)
        if name not in self.class_names:
            self.class_names.append(name)
        idx = self.class_names.index(name)
        self.view_class += [idx] * len(views)
        self.corner_orders += [view_corner_order(view_name) for view_name, _ in views]
        return [view for _, view in views]

    def __len__(self) -> int:
        return len(self.view_class)

    def view_class_tensor(self) -> Tensor:
        """(V,) int64 class index of each view, for :func:`os2d.inference.decode.merge_and_nms`."""
        return torch.tensor(self.view_class, dtype=torch.long)


__all__ = ["ClassViews", "box_corners", "view_corner_order"]
