"""Reader of COCO detection JSON; class images are found by category name. Problems are reported as in
:mod:`os2d.data.validate`, naming ``FILE:annotations[i]`` / ``FILE:images[i]`` / ``FILE:categories[i]``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from os2d.data.records import ClassRecord, DetectionDataset
from os2d.data.validate import AnnotationError, ErrorList, PendingImage, finish_dataset, parse_fields

CLASS_IMAGE_EXTENSIONS = (".jpg", ".png", ".jpeg")
"""Extensions tried, in this order, for the class image ``<category name><ext>``."""


def _load_json(json_path: Path) -> dict[str, Any]:
    if not json_path.is_file():
        raise AnnotationError(f"annotation file not found: {json_path}")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{json_path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                              for k in ("images", "annotations", "categories")):
        raise AnnotationError(f"{json_path}: expected an object with lists 'images', 'annotations', "
                              "'categories'")
    return data


def _classes(errors: ErrorList, json_path: Path, categories: list[Any], class_image_dir: Path
             ) -> tuple[dict[Any, int], list[ClassRecord], dict[str, str]]:
    """COCO category id -> class index, the classes, class id -> where it was defined."""
    class_index: dict[Any, int] = {}
    classes: list[ClassRecord] = []
    class_where: dict[str, str] = {}
    missing: list[str] = []
    for i, cat in enumerate(categories):
        where = f"{json_path}:categories[{i}]"
        if not isinstance(cat, dict) or "id" not in cat or not str(cat.get("name", "")).strip():
            errors.add(f"{where}: a category needs 'id' and 'name'")
            continue
        cname = str(cat["name"]).strip()
        found = next((class_image_dir / f"{cname}{ext}" for ext in CLASS_IMAGE_EXTENSIONS
                      if (class_image_dir / f"{cname}{ext}").is_file()), None)
        if found is None:
            missing.append(cname)
        class_index[cat["id"]] = len(classes)
        classes.append(ClassRecord(str(cat["id"]), cname, [found] if found else []))
        class_where[str(cat["id"])] = where
    if missing:
        errors.add(f"{class_image_dir}: no class image <name>.{{jpg,png,jpeg}} for "
                   f"{len(missing)} categor{'y' if len(missing) == 1 else 'ies'}: {', '.join(missing)}")
    return class_index, classes, class_where


def _images(errors: ErrorList, json_path: Path, entries: list[Any], image_dir: Path) -> dict[Any, PendingImage]:
    """COCO image id -> image; the size from the JSON when given (and the file is readable), else the header."""
    images: dict[Any, PendingImage] = {}
    for i, img in enumerate(entries):
        where = f"{json_path}:images[{i}]"
        if not isinstance(img, dict) or "id" not in img or not img.get("file_name"):
            errors.add(f"{where}: an image needs 'id' and 'file_name'")
            continue
        if img["id"] in images:
            errors.add(f"{where}: duplicate image id {img['id']!r}")
            continue
        image = PendingImage.open(errors, where, image_dir / str(img["file_name"]))
        if image.ok and "width" in img and "height" in img:
            fields = parse_fields(errors, where, img, ("width", "height"))
            if fields is not None:
                (w, h), _ = fields
                image.size = (int(w), int(h))
        images[img["id"]] = image
    return images


def read_coco(json_path: str | os.PathLike[str], image_dir: str | os.PathLike[str],
              class_image_dir: str | os.PathLike[str], *, clip: bool = False,
              check_class_images: bool = True, name: str | None = None) -> DetectionDataset:
    """Read a COCO detection JSON (``images``, ``annotations`` with ``bbox = [x, y, w, h]`` in pixels,
    ``categories``).

    ``iscrowd = 1`` boxes become difficult. Image sizes come from the JSON (``width``/``height``) or,
    when absent, from the file header. Class images are ``class_image_dir/<category name>.{jpg,png,jpeg}``
    (one per category; the error lists every missing one). Classes keep the order of ``categories``
    (class id = ``str(category id)``); images the order of ``images`` (image id = ``str(id)``). Errors name
    ``FILE:annotations[i]`` / ``FILE:images[i]``.

    Raises:
        AnnotationError: a missing or malformed file, bad entries (all of them, up to ``MAX_ERRORS``).
    """
    json_path, image_dir, class_image_dir = Path(json_path), Path(image_dir), Path(class_image_dir)
    data = _load_json(json_path)
    errors = ErrorList(str(json_path))
    class_index, classes, class_where = _classes(errors, json_path, data["categories"], class_image_dir)
    images = _images(errors, json_path, data["images"], image_dir)
    for i, ann in enumerate(data["annotations"]):
        where = f"{json_path}:annotations[{i}]"
        if not isinstance(ann, dict):
            errors.add(f"{where}: not an object")
            continue
        if "id" in ann:
            where += f" (id={ann['id']})"
        if ann.get("image_id") not in images:
            errors.add(f"{where}: unknown image_id {ann.get('image_id')!r}")
            continue
        if ann.get("category_id") not in class_index:
            errors.add(f"{where}: unknown category_id {ann.get('category_id')!r}")
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            errors.add(f"{where}:bbox: expected [x, y, w, h], got {bbox!r}")
            continue
        row = {f"bbox[{k}]": v for k, v in enumerate(bbox)} | {"iscrowd": ann.get("iscrowd", 0)}
        fields = parse_fields(errors, where, row, [f"bbox[{k}]" for k in range(4)], "iscrowd")
        image = images[ann["image_id"]]
        if fields is None or not image.ok:
            continue
        (x, y, w, h), difficult = fields
        image.add_box(errors, where, [x, y, x + w, y + h], class_index[ann["category_id"]], difficult, clip=clip)
    return finish_dataset(errors, name or json_path.stem, {str(k): im for k, im in images.items()}, classes,
                          class_where if check_class_images else None)


__all__ = ["CLASS_IMAGE_EXTENSIONS", "read_coco"]
