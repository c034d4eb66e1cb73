"""Datasets: one in-memory representation (:mod:`~os2d.data.records`) read from three annotation formats.

Readers: :func:`read_reference_csv` (the reference OS2D CSV, relative coordinates), :func:`read_simple_csv`
(pixel boxes CSV + class CSV) and :func:`read_coco` (COCO JSON). Each validates what it reads and raises one
:class:`AnnotationError` listing the problems (:mod:`~os2d.data.validate`). :mod:`~os2d.data.spec` names a
dataset as a typed record; :func:`suggest_image_size` picks the detection image size.
"""

from os2d.data.coco import read_coco
from os2d.data.records import ClassRecord, DetectionDataset, ImageRecord, image_size
from os2d.data.reference_csv import read_reference_csv
from os2d.data.scales import suggest_image_size
from os2d.data.simple_csv import read_simple_csv
from os2d.data.validate import MAX_ERRORS, AnnotationError

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
