"""Checking annotations while they are read: one error report per file, box and image checks, CSV rows.

Every reader collects its problems in an :class:`ErrorList` and raises one :class:`AnnotationError` (a
``ValueError``) that lists up to :data:`MAX_ERRORS` of them, each naming the file and the row
(``FILE:ROW: ...``; for a bad number ``FILE:ROW:COLUMN: ...``). CSV rows are numbered as lines of the file
(the header is line 1; :mod:`~os2d.data.csv_rows`). The images of a file being read are :class:`PendingImage` s until
:func:`finish_dataset` turns them into a :class:`~os2d.data.records.DetectionDataset`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from os2d.data.records import ClassRecord, DetectionDataset, ImageRecord, image_size
from os2d.errors import Os2dError
from os2d.io import ImageError, load_image, validate_class_image

MAX_ERRORS = 20
"""At most this many problems are listed in one :class:`AnnotationError`."""

BOX_SLACK_PX = 1.0
"""A box may stick out of its image by this many pixels without being an error (it is clipped)."""


class AnnotationError(Os2dError):
    """Invalid annotations; ``errors`` holds the individual messages (each names its file and row)."""

    def __init__(self, message: str, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors) if errors else [message]


class ErrorList:
    """Collects the problems of one annotation file and raises them together."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.messages: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.messages) < MAX_ERRORS:
            self.messages.append(message)

    def __bool__(self) -> bool:
        return self.count > 0

    def raise_if_any(self) -> None:
        if not self.count:
            return
        head = f"{self.count} problem{'s' if self.count != 1 else ''} in {self.what}"
        if self.count > len(self.messages):
            head += f" (first {len(self.messages)} shown)"
        raise AnnotationError(head + ":\n  " + "\n  ".join(self.messages), self.messages)


def parse_number(errors: ErrorList, where: str, column: str, text: Any) -> float | None:
    """Parse a finite number; on failure record ``WHERE:COLUMN: ...`` and return None."""
    try:
        value = float(str(text).strip())
    except (TypeError, ValueError):
        errors.add(f"{where}:{column}: not a number: {text!r}")
        return None
    if not math.isfinite(value):
        errors.add(f"{where}:{column}: not a finite number: {text!r}")
        return None
    return value


def parse_flag(errors: ErrorList, where: str, column: str, text: Any) -> bool | None:
    """Parse a 0/1 flag (empty = 0); on failure record ``WHERE:COLUMN: ...`` and return None."""
    s = "" if text is None else str(text).strip().lower()
    if s in ("", "0", "0.0", "false", "no"):
        return False
    if s in ("1", "1.0", "true", "yes"):
        return True
    errors.add(f"{where}:{column}: expected 0 or 1, got {text!r}")
    return None


def parse_fields(errors: ErrorList, where: str, row: Mapping[str, Any], numbers: Sequence[str],
                 flag: str | None = None) -> tuple[list[float], bool] | None:
    """Parse the number columns ``numbers`` and the 0/1 column ``flag`` (absent = 0) of one row.

    Returns ``(values, flag value)``, or None when any of them is bad (every problem recorded).
    """
    values = [parse_number(errors, where, c, row.get(c)) for c in numbers]
    is_set = parse_flag(errors, where, flag, row.get(flag)) if flag is not None else False
    if is_set is None or any(x is None for x in values):
        return None
    return [float(x) for x in values if x is not None], is_set


def check_box(errors: ErrorList, where: str, box: Sequence[float], width: int | None, height: int | None,
              clip: bool) -> list[float] | None:
    """Validate one pixel box against its image; returns the (clipped) box or None (error recorded)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 <= x1 or y2 <= y1:
        errors.add(f"{where}: empty box: x2 <= x1 or y2 <= y1 in ({x1:g}, {y1:g}, {x2:g}, {y2:g})")
        return None
    if width is None or height is None:
        return [x1, y1, x2, y2]
    s = BOX_SLACK_PX
    outside = x1 < -s or y1 < -s or x2 > width + s or y2 > height + s
    if outside and not clip:
        errors.add(f"{where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is outside the image of size "
                   f"{width}x{height} (more than {s:g} px; pass clip=True to clip it)")
        return None
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        errors.add(f"{where}: box is empty after clipping to the image of size {width}x{height}")
        return None
    return [x1, y1, x2, y2]


def checked_image_size(errors: ErrorList, where: str, path: Path) -> tuple[int, int] | None:
    """``(width, height)`` of an image file, or None with the problem recorded (missing or unreadable)."""
    if not path.is_file():
        errors.add(f"{where}: image file not found: {path}")
        return None
    try:
        return image_size(path)
    except Exception as exc:  # noqa: BLE001 - any PIL failure is a bad image
        errors.add(f"{where}: cannot read image {path}: {exc}")
        return None


def check_class_images(errors: ErrorList, classes: Sequence[ClassRecord], where: Mapping[str, str]) -> None:
    """Load every class image and record the missing, tiny or uniform ones (``where``: class id -> place)."""
    for cls in classes:
        for path in cls.image_paths:
            try:
                validate_class_image(load_image(path))
            except ImageError as exc:
                errors.add(f"{where.get(cls.class_id, '?')}: class {cls.class_id!r} ({cls.name}): {exc}")


@dataclass
class PendingImage:
    """An image of a file being read: its size (None when unreadable) and its valid boxes so far."""

    path: Path
    size: tuple[int, int] | None
    boxes: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    difficult: list[bool] = field(default_factory=list)

    @classmethod
    def open(cls, errors: ErrorList, where: str, path: Path) -> PendingImage:
        """Read the size from the file header; an unreadable image is recorded as a problem of ``where``."""
        return cls(path, checked_image_size(errors, where, path))

    @property
    def ok(self) -> bool:
        return self.size is not None

    def add_box(self, errors: ErrorList, where: str, box: Sequence[float], label: int, difficult: bool, *,
                clip: bool) -> None:
        """Check a pixel box against the image (see :func:`check_box`) and keep it when valid."""
        width, height = self.size if self.size is not None else (None, None)
        checked = check_box(errors, where, box, width, height, clip)
        if checked is not None:
            self.boxes.append(checked)
            self.labels.append(label)
            self.difficult.append(difficult)

    def record(self, image_id: str) -> ImageRecord:
        width, height = self.size if self.size is not None else (None, None)
        return ImageRecord(image_id, self.path, width, height, self.boxes, self.labels, self.difficult)


def finish_dataset(errors: ErrorList, name: str, images: Mapping[str, PendingImage], classes: list[ClassRecord],
                   class_where: Mapping[str, str] | None) -> DetectionDataset:
    """Check the class images (when ``class_where`` is given), raise the collected problems, build the dataset.

    ``images`` maps image id -> image in dataset order.
    """
    if class_where is not None:
        check_class_images(errors, classes, class_where)
    errors.raise_if_any()
    return DetectionDataset(name, [im.record(image_id) for image_id, im in images.items()], classes)


__all__ = [
    "BOX_SLACK_PX",
    "MAX_ERRORS",
    "AnnotationError",
    "ErrorList",
    "PendingImage",
    "check_box",
    "check_class_images",
    "checked_image_size",
    "finish_dataset",
    "parse_fields",
    "parse_flag",
    "parse_number",
]
