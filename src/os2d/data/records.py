"""The in-memory detection dataset every annotation reader produces: images with boxes, classes with images.

Convention:
    Boxes are ``x1, y1, x2, y2`` float32 in pixels of the ORIGINAL image (EXIF orientation applied, the
    same frame :func:`os2d.io.load_image` returns); labels are indices into ``DetectionDataset.classes``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


@lru_cache(maxsize=65536)
def _cached_size(path: str, mtime_ns: int, file_size: int) -> tuple[int, int]:
    with Image.open(path) as img:  # header only: no pixel is decoded
        width, height = img.size
        try:
            orientation = img.getexif().get(0x0112, 1)
        except Exception:  # noqa: BLE001 - a broken EXIF block means "no rotation"
            orientation = 1
    if orientation in (5, 6, 7, 8):  # load_image transposes these: width and height swap
        width, height = height, width
    return int(width), int(height)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header, EXIF orientation applied; cached per file
    (path, mtime, size). Raises ``FileNotFoundError`` or ``OSError`` like PIL."""
    p = os.fspath(path)
    st = os.stat(p)
    return _cached_size(p, st.st_mtime_ns, st.st_size)


def box_sizes(boxes_xyxy: np.ndarray) -> np.ndarray:
    """Object size ``sqrt(w*h)`` of (N, 4) pixel boxes as (N,) float64 (0 for an empty box)."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None))


@dataclass
class ImageRecord:
    """One scene image and its ground-truth boxes (pixels of the original image)."""

    image_id: str
    path: Path
    width: int | None
    height: int | None
    boxes_xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.boxes_xyxy = np.asarray(self.boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)
        n = len(self.boxes_xyxy)
        if len(self.labels) != n or len(self.difficult) != n:
            raise ValueError(f"image {self.image_id}: {n} boxes but {len(self.labels)} labels and "
                             f"{len(self.difficult)} difficult flags")

    @property
    def num_boxes(self) -> int:
        return int(len(self.boxes_xyxy))

    def size(self) -> tuple[int, int]:
        """``(width, height)``; read from the file header (cached) when unknown."""
        if self.width is None or self.height is None:
            self.width, self.height = image_size(self.path)
        return int(self.width), int(self.height)


@dataclass
class ClassRecord:
    """One class: its id, display name and one or more class (query) images."""

    class_id: str
    name: str
    image_paths: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.image_paths = [Path(p) for p in self.image_paths]


@dataclass
class DetectionDataset:
    """Images with boxes + classes with class images; ``labels`` index ``classes``."""

    name: str
    images: list[ImageRecord]
    classes: list[ClassRecord]

    @property
    def num_boxes(self) -> int:
        return sum(im.num_boxes for im in self.images)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def class_ids(self) -> list[str]:
        return [c.class_id for c in self.classes]

    def subset(self, image_ids: Iterable[str] | None = None, class_ids: Iterable[str] | None = None,
               *, name: str | None = None) -> DetectionDataset:
        """A new dataset restricted to some images and/or classes.

        ``image_ids`` keeps only those images (in dataset order). ``class_ids`` keeps only those classes
        (in dataset order) and drops the annotations of the other classes, but KEEPS every image, also
        images left without boxes - like the reference's ``grozi-val-old-cl`` / ``-new-cl`` subsets, where
        such images still count for false positives. Labels are re-indexed to the new class list.
        """
        images = self.images
        if image_ids is not None:
            wanted = {str(i) for i in image_ids}
            unknown = wanted - {im.image_id for im in images}
            if unknown:
                raise KeyError(f"unknown image ids: {sorted(unknown)[:10]}")
            images = [im for im in images if im.image_id in wanted]
        classes = self.classes
        remap = np.arange(len(classes), dtype=np.int64)
        if class_ids is not None:
            wanted_c = {str(c) for c in class_ids}
            unknown = wanted_c - set(self.class_ids)
            if unknown:
                raise KeyError(f"unknown class ids: {sorted(unknown)[:10]}")
            keep = [i for i, c in enumerate(classes) if c.class_id in wanted_c]
            remap = np.full(len(classes), -1, dtype=np.int64)
            remap[keep] = np.arange(len(keep))
            classes = [classes[i] for i in keep]
        new_images = []
        for im in images:
            new_labels = remap[im.labels] if im.num_boxes else im.labels.copy()
            mask = new_labels >= 0
            new_images.append(ImageRecord(im.image_id, im.path, im.width, im.height,
                                          im.boxes_xyxy[mask].copy(), new_labels[mask],
                                          im.difficult[mask].copy()))
        new_classes = [ClassRecord(c.class_id, c.name, list(c.image_paths)) for c in classes]
        return DetectionDataset(name or self.name, new_images, new_classes)

    def object_sizes(self, *, include_difficult: bool = False) -> np.ndarray:
        """``sqrt(w*h)`` of every (non-difficult, by default) box, in pixels."""
        sizes = [box_sizes(im.boxes_xyxy if include_difficult else im.boxes_xyxy[~im.difficult])
                 for im in self.images]
        return np.concatenate(sizes) if sizes else np.zeros((0,), np.float64)

    def stats(self) -> dict[str, Any]:
        """Counts and the median object size.

        Returns a dict with ``name``, ``images``, ``boxes``, ``non_difficult_boxes``, ``classes`` and
        ``median_object_size`` (median ``sqrt(w*h)`` in pixels of the non-difficult boxes; of all boxes
        if every box is difficult; ``None`` without boxes).
        """
        sizes = self.object_sizes()
        if sizes.size == 0:
            sizes = self.object_sizes(include_difficult=True)
        return {
            "name": self.name,
            "images": len(self.images),
            "boxes": self.num_boxes,
            "non_difficult_boxes": int(sum(int((~im.difficult).sum()) for im in self.images)),
            "classes": len(self.classes),
            "median_object_size": float(np.median(sizes)) if sizes.size else None,
        }


__all__ = ["ClassRecord", "DetectionDataset", "ImageRecord", "box_sizes", "image_size"]
