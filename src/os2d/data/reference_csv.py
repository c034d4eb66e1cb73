"""Reader of the reference OS2D annotation CSV (``grozi.csv``, ``dairy.csv``, ...): one row per box, RELATIVE
coordinates. Problems are reported as in :mod:`os2d.data.validate`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from os2d.data.csv_rows import read_csv_rows, require_columns
from os2d.data.records import ClassRecord, DetectionDataset
from os2d.data.validate import ErrorList, PendingImage, finish_dataset, parse_fields


def read_reference_csv(csv_path: str | os.PathLike[str], image_dir: str | os.PathLike[str],
                       class_image_dir: str | os.PathLike[str], *, split: str | Sequence[str] | None = None,
                       clip: bool = False, check_class_images: bool = True,
                       name: str | None = None) -> DetectionDataset:
    """Read an annotation CSV in the reference OS2D format (``grozi.csv``, ``dairy.csv``, ...).

    Columns: ``imageid, imagefilename, classid, classfilename, gtbboxid, difficult, lx, ty, rx, by``
    (``lx, ty, rx, by`` relative to the image width/height) and optionally ``split``.
    ``imagefilename`` defaults to ``<imageid>.jpg`` and ``classfilename`` to ``<classid>.jpg`` when the
    column is missing; ``difficult`` defaults to 0; an unnamed leading index column is ignored.
    One class image per class id: the first row's ``classfilename`` wins.

    Boxes are converted to pixels with the image sizes read from the file headers (cached). Images and
    classes are listed in order of first appearance.

    Args:
        split: keep only rows whose ``split`` column is this value (or one of these values).
        clip: clip boxes that stick out of the image instead of reporting them.
        check_class_images: load every class image and refuse missing/tiny/uniform ones.

    Raises:
        AnnotationError: missing files or columns, bad rows (all of them, up to ``MAX_ERRORS``).
    """
    csv_path, image_dir, class_image_dir = Path(csv_path), Path(image_dir), Path(class_image_dir)
    header, rows = read_csv_rows(csv_path)
    require_columns(csv_path, header, ["imageid", "classid", "lx", "ty", "rx", "by"])
    if split is not None:
        require_columns(csv_path, header, ["split"])
        splits = {split} if isinstance(split, str) else set(split)
        rows = [(ln, r) for ln, r in rows if (r.get("split") or "").strip() in splits]
    errors = ErrorList(str(csv_path))
    images: dict[str, PendingImage] = {}
    class_index: dict[str, int] = {}
    classes: list[ClassRecord] = []
    class_where: dict[str, str] = {}
    for line, row in rows:
        where = f"{csv_path}:{line}"
        image_id = (row.get("imageid") or "").strip()
        class_id = (row.get("classid") or "").strip()
        if not image_id or not class_id:
            errors.add(f"{where}: empty imageid or classid")
            continue
        if class_id not in class_index:
            class_file = (row.get("classfilename") or "").strip() or f"{class_id}.jpg"
            class_index[class_id] = len(classes)
            classes.append(ClassRecord(class_id, class_id, [class_image_dir / class_file]))
            class_where[class_id] = where
        if image_id not in images:
            image_file = (row.get("imagefilename") or "").strip() or f"{image_id}.jpg"
            images[image_id] = PendingImage.open(errors, where, image_dir / image_file)
        image = images[image_id]
        fields = parse_fields(errors, where, row, ("lx", "ty", "rx", "by"), "difficult")
        if fields is None or image.size is None:
            continue
        (lx, ty, rx, by), difficult = fields
        w, h = image.size
        image.add_box(errors, where, [lx * w, ty * h, rx * w, by * h], class_index[class_id], difficult, clip=clip)
    return finish_dataset(errors, name or csv_path.stem, images, classes,
                          class_where if check_class_images else None)


__all__ = ["read_reference_csv"]
