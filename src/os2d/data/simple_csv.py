"""Reader of the simple CSV format: a boxes CSV ``image,class,x1,y1,x2,y2[,difficult]`` in pixels plus a class
CSV ``name,path`` (a name repeated = several class images, i.e. few-shot). Problems are reported as in
:mod:`os2d.data.validate`."""

from __future__ import annotations

import os
from pathlib import Path

from os2d.data.csv_rows import read_csv_rows, require_columns
from os2d.data.records import ClassRecord, DetectionDataset
from os2d.data.validate import AnnotationError, ErrorList, PendingImage, finish_dataset, parse_fields

CLASS_NAME_COLUMNS = ("name", "class")
"""Accepted spellings of the class-name column of a class CSV (the first present wins)."""
CLASS_PATH_COLUMNS = ("path", "class_image", "image")
"""Accepted spellings of the class-image column of a class CSV (the first present wins)."""


def read_simple_csv(boxes_csv: str | os.PathLike[str], class_csv: str | os.PathLike[str], *,
                    image_root: str | os.PathLike[str] | None = None, clip: bool = False,
                    check_class_images: bool = True, name: str | None = None) -> DetectionDataset:
    """Read a pixel-coordinate boxes CSV and a class CSV.

    Boxes CSV: header ``image,class,x1,y1,x2,y2[,difficult]``; one row per box; ``image`` is a path
    relative to ``image_root`` (default: the boxes CSV's folder); it is also the image id.
    Class CSV: header ``name,path`` (``class,class_image`` is accepted too, e.g. FlickrLogos-27's
    ``class_images.csv``; other columns are ignored); paths relative to the class CSV's folder; a name
    repeated on several rows gives that class several class images (few-shot). Classes keep the order
    of the class CSV; class id = class name.

    Raises:
        AnnotationError: missing files or columns, bad rows (all of them, up to ``MAX_ERRORS``).
    """
    boxes_csv, class_csv = Path(boxes_csv), Path(class_csv)
    root = Path(image_root) if image_root is not None else boxes_csv.parent
    errors = ErrorList(f"{boxes_csv} / {class_csv}")

    c_header, c_rows = read_csv_rows(class_csv)
    name_col = next((c for c in CLASS_NAME_COLUMNS if c in c_header), None)
    path_col = next((c for c in CLASS_PATH_COLUMNS if c in c_header), None)
    if name_col is None or path_col is None:
        raise AnnotationError(f"{class_csv}:1: the class CSV needs columns name,path; header is {c_header}")
    class_index: dict[str, int] = {}
    classes: list[ClassRecord] = []
    class_where: dict[str, str] = {}
    for line, row in c_rows:
        where = f"{class_csv}:{line}"
        cname = (row.get(name_col) or "").strip()
        cpath = (row.get(path_col) or "").strip()
        if not cname or not cpath:
            errors.add(f"{where}: empty class name or path")
            continue
        if cname not in class_index:
            class_index[cname] = len(classes)
            classes.append(ClassRecord(cname, cname, []))
            class_where[cname] = where
        classes[class_index[cname]].image_paths.append(class_csv.parent / cpath)

    b_header, b_rows = read_csv_rows(boxes_csv)
    require_columns(boxes_csv, b_header, ["image", "class", "x1", "y1", "x2", "y2"])
    images: dict[str, PendingImage] = {}
    for line, row in b_rows:
        where = f"{boxes_csv}:{line}"
        image_id = (row.get("image") or "").strip()
        cname = (row.get("class") or "").strip()
        if not image_id:
            errors.add(f"{where}: empty image path")
            continue
        if image_id not in images:
            images[image_id] = PendingImage.open(errors, where, root / image_id)
        image = images[image_id]
        if cname not in class_index:
            errors.add(f"{where}: unknown class {cname!r} (not in {class_csv})")
            continue
        fields = parse_fields(errors, where, row, ("x1", "y1", "x2", "y2"), "difficult")
        if fields is None or not image.ok:
            continue
        box, difficult = fields
        image.add_box(errors, where, box, class_index[cname], difficult, clip=clip)
    return finish_dataset(errors, name or boxes_csv.stem, images, classes,
                          class_where if check_class_images else None)


__all__ = ["CLASS_NAME_COLUMNS", "CLASS_PATH_COLUMNS", "read_simple_csv"]
