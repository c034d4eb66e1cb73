"""Datasets: annotation readers and the common in-memory representation (see :mod:`os2d.data.annotations`)."""

from os2d.data.annotations import (
    MAX_ERRORS,
    AnnotationError,
    ClassRecord,
    DetectionDataset,
    ImageRecord,
    image_size,
    read_coco,
    read_reference_csv,
    read_simple_csv,
    suggest_image_size,
)

__all__ = [
    "MAX_ERRORS",
    "AnnotationError",
    "ClassRecord",
    "DetectionDataset",
    "ImageRecord",
    "image_size",
    "read_coco",
    "read_reference_csv",
    "read_simple_csv",
    "suggest_image_size",
]
