"""The detection image size of a dataset: at which size its objects are about as large as a class image."""

from __future__ import annotations

import math

import numpy as np

from os2d.data.records import DetectionDataset, box_sizes


def suggest_image_size(dataset: DetectionDataset, target_object_size: float = 240) -> int:
    """The image size that makes the median non-difficult object about ``target_object_size`` px.

    The rule of the reference's ``data/get_dataset_scales.py``: for every non-difficult box with object
    size ``s = sqrt(w*h)`` in an image of size ``S``, the image size that would bring the object to the
    target is ``S * target / s``; the answer is the median of these over all boxes.

    Here the image size ``S`` is ``sqrt(W*H)`` of the image (the area rule), the same meaning as
    ``os2d detect --image-size`` (the detection input is resized so that ``sqrt(w*h)`` equals it), not
    the longer side. Example: objects of 120 px in 1000x1000 images give 2000.

    Raises:
        ValueError: the dataset has no non-difficult box of positive size.
    """
    if not target_object_size > 0:
        raise ValueError(f"target_object_size must be positive, got {target_object_size!r}")
    candidates = []
    for im in dataset.images:
        s = box_sizes(im.boxes_xyxy[~im.difficult])
        s = s[s > 0]
        if s.size == 0:
            continue
        width, height = im.size()
        candidates.append(math.sqrt(width * height) * float(target_object_size) / s)
    if not candidates:
        raise ValueError(f"dataset {dataset.name!r} has no non-difficult box to derive an image size from")
    return int(round(float(np.median(np.concatenate(candidates)))))


__all__ = ["suggest_image_size"]
