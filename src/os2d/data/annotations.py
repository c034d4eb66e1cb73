"""Detection-dataset readers: one in-memory representation for three annotation formats.

Formats:
    * :func:`read_reference_csv` - the reference OS2D CSV (one row per box, RELATIVE coordinates);
    * :func:`read_simple_csv` - a boxes CSV ``image,class,x1,y1,x2,y2[,difficult]`` in pixels plus a class
      CSV ``name,path`` (a name repeated = several class images, i.e. few-shot);
    * :func:`read_coco` - COCO detection JSON, class images found by category name.

Every reader validates what it reads and raises one :class:`AnnotationError` (a ``ValueError``) that
lists up to :data:`MAX_ERRORS` problems, each naming the file and the row (``FILE:ROW: ...``; for a bad
number ``FILE:ROW:COLUMN: ...``). CSV rows are numbered as lines of the file (the header is line 1).

Convention:
    Boxes are ``x1, y1, x2, y2`` float32 in pixels of the ORIGINAL image (EXIF orientation applied, the
    same frame :func:`os2d.io.load_image` returns); labels are indices into ``DetectionDataset.classes``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from os2d.errors import Os2dError
from os2d.io import ImageError, load_image, validate_class_image

MAX_ERRORS = 20
"""At most this many problems are listed in one :class:`AnnotationError`."""

BOX_SLACK_PX = 1.0
"""A box may stick out of its image by this many pixels without being an error (it is clipped)."""

CLASS_IMAGE_EXTENSIONS = (".jpg", ".png", ".jpeg")


class AnnotationError(Os2dError):
    """Invalid annotations; ``errors`` holds the individual messages (each names its file and row)."""

    def __init__(self, message: str, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors) if errors else [message]


# ----------------------------------------------------------------------------------------- records


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
        sizes = []
        for im in self.images:
            keep = np.ones(im.num_boxes, bool) if include_difficult else ~im.difficult
            b = im.boxes_xyxy[keep].astype(np.float64)
            sizes.append(np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)))
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


# ------------------------------------------------------------------------------------------ helpers


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


class _Errors:
    """Collects problems and raises them together."""

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


def _number(errors: _Errors, where: str, column: str, text: Any) -> float | None:
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


def _flag(errors: _Errors, where: str, column: str, text: Any) -> bool | None:
    s = "" if text is None else str(text).strip().lower()
    if s in ("", "0", "0.0", "false", "no"):
        return False
    if s in ("1", "1.0", "true", "yes"):
        return True
    errors.add(f"{where}:{column}: expected 0 or 1, got {text!r}")
    return None


def _check_box(errors: _Errors, where: str, box: Sequence[float], width: int | None, height: int | None,
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


def _size_or_error(errors: _Errors, where: str, path: Path) -> tuple[int, int] | None:
    if not path.is_file():
        errors.add(f"{where}: image file not found: {path}")
        return None
    try:
        return image_size(path)
    except Exception as exc:  # noqa: BLE001 - any PIL failure is a bad image
        errors.add(f"{where}: cannot read image {path}: {exc}")
        return None


def _check_class_images(errors: _Errors, classes: Sequence[ClassRecord], where: dict[str, str]) -> None:
    for cls in classes:
        for path in cls.image_paths:
            try:
                validate_class_image(load_image(path))
            except ImageError as exc:
                errors.add(f"{where.get(cls.class_id, '?')}: class {cls.class_id!r} ({cls.name}): {exc}")


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header (stripped, lower-case) and ``(line_number, row)`` pairs."""
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise AnnotationError(f"{path}: empty file (no header row)") from None
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            rows.append((reader.line_num, dict(zip(header, values, strict=False))))
    return header, rows


def _require(path: Path, header: Sequence[str], columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in header]
    if missing:
        raise AnnotationError(f"{path}:1: missing column(s) {', '.join(missing)}; header is {list(header)}")


def _build(name: str, order: list[str], per_image: dict[str, dict[str, Any]],
           classes: list[ClassRecord]) -> DetectionDataset:
    images = []
    for image_id in order:
        d = per_image[image_id]
        images.append(ImageRecord(image_id, d["path"], d["width"], d["height"],
                                  np.asarray(d["boxes"], np.float32).reshape(-1, 4),
                                  np.asarray(d["labels"], np.int64), np.asarray(d["difficult"], bool)))
    return DetectionDataset(name, images, classes)


# ------------------------------------------------------------------------------------------ readers


def _new_image(errors: _Errors, where: str, path: Path) -> dict[str, Any]:
    """An image's record for the row-by-row readers; ``ok`` is False (and an error recorded) when unreadable."""
    size = _size_or_error(errors, where, path)
    return {"path": path, "width": size[0] if size else None, "height": size[1] if size else None,
            "ok": size is not None, "boxes": [], "labels": [], "difficult": []}


def _add_box(record: dict[str, Any], box: list[float], label: int, difficult: bool) -> None:
    record["boxes"].append(box)
    record["labels"].append(label)
    record["difficult"].append(difficult)


def _finish(errors: _Errors, name: str, order: list[str], per_image: dict[str, dict[str, Any]],
            classes: list[ClassRecord], class_where: dict[str, str] | None) -> DetectionDataset:
    """Check class images (when ``class_where`` is given), raise the collected errors, build the dataset."""
    if class_where is not None:
        _check_class_images(errors, classes, class_where)
    errors.raise_if_any()
    return _build(name, order, per_image, classes)


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
    """
    csv_path, image_dir, class_image_dir = Path(csv_path), Path(image_dir), Path(class_image_dir)
    header, rows = _read_csv(csv_path)
    _require(csv_path, header, ["imageid", "classid", "lx", "ty", "rx", "by"])
    if split is not None:
        _require(csv_path, header, ["split"])
        splits = {split} if isinstance(split, str) else set(split)
        rows = [(ln, r) for ln, r in rows if (r.get("split") or "").strip() in splits]
    errors = _Errors(str(csv_path))
    order: list[str] = []
    per_image: dict[str, dict[str, Any]] = {}
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
        if image_id not in per_image:
            image_file = (row.get("imagefilename") or "").strip() or f"{image_id}.jpg"
            path = image_dir / image_file
            per_image[image_id] = _new_image(errors, where, path)
            order.append(image_id)
        d = per_image[image_id]
        rel = [_number(errors, where, c, row.get(c)) for c in ("lx", "ty", "rx", "by")]
        difficult = _flag(errors, where, "difficult", row.get("difficult"))
        if any(v is None for v in rel) or difficult is None or not d["ok"]:
            continue
        w, h = d["width"], d["height"]
        box = _check_box(errors, where, [rel[0] * w, rel[1] * h, rel[2] * w, rel[3] * h], w, h, clip)
        if box is None:
            continue
        _add_box(d, box, class_index[class_id], difficult)
    return _finish(errors, name or csv_path.stem, order, per_image, classes,
                   class_where if check_class_images else None)


_CLASS_NAME_COLUMNS = ("name", "class")
_CLASS_PATH_COLUMNS = ("path", "class_image", "image")


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
    """
    boxes_csv, class_csv = Path(boxes_csv), Path(class_csv)
    root = Path(image_root) if image_root is not None else boxes_csv.parent
    errors = _Errors(f"{boxes_csv} / {class_csv}")

    c_header, c_rows = _read_csv(class_csv)
    name_col = next((c for c in _CLASS_NAME_COLUMNS if c in c_header), None)
    path_col = next((c for c in _CLASS_PATH_COLUMNS if c in c_header), None)
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

    b_header, b_rows = _read_csv(boxes_csv)
    _require(boxes_csv, b_header, ["image", "class", "x1", "y1", "x2", "y2"])
    order: list[str] = []
    per_image: dict[str, dict[str, Any]] = {}
    for line, row in b_rows:
        where = f"{boxes_csv}:{line}"
        image_id = (row.get("image") or "").strip()
        cname = (row.get("class") or "").strip()
        if not image_id:
            errors.add(f"{where}: empty image path")
            continue
        if image_id not in per_image:
            path = root / image_id
            per_image[image_id] = _new_image(errors, where, path)
            order.append(image_id)
        d = per_image[image_id]
        if cname not in class_index:
            errors.add(f"{where}: unknown class {cname!r} (not in {class_csv})")
            continue
        coords = [_number(errors, where, c, row.get(c)) for c in ("x1", "y1", "x2", "y2")]
        difficult = _flag(errors, where, "difficult", row.get("difficult"))
        if any(v is None for v in coords) or difficult is None or not d["ok"]:
            continue
        box = _check_box(errors, where, coords, d["width"], d["height"], clip)  # type: ignore[arg-type]
        if box is None:
            continue
        _add_box(d, box, class_index[cname], difficult)
    return _finish(errors, name or boxes_csv.stem, order, per_image, classes,
                   class_where if check_class_images else None)


def read_coco(json_path: str | os.PathLike[str], image_dir: str | os.PathLike[str],
              class_image_dir: str | os.PathLike[str], *, clip: bool = False,
              check_class_images: bool = True, name: str | None = None) -> DetectionDataset:
    """Read a COCO detection JSON (``images``, ``annotations`` with ``bbox = [x, y, w, h]`` in pixels,
    ``categories``).

    ``iscrowd = 1`` boxes become difficult. Image sizes come from the JSON (``width``/``height``) or,
    when absent, from the file header. Class images are ``class_image_dir/<category name>.{jpg,png,jpeg}``
    (one per category; the error lists every missing one). Classes keep the order of ``categories``
    (class id = ``str(category id)``); images the order of ``images``. Errors name
    ``FILE:annotations[i]`` / ``FILE:images[i]``.
    """
    json_path, image_dir, class_image_dir = Path(json_path), Path(image_dir), Path(class_image_dir)
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
    errors = _Errors(str(json_path))
    class_index: dict[Any, int] = {}
    classes: list[ClassRecord] = []
    class_where: dict[str, str] = {}
    missing: list[str] = []
    for i, cat in enumerate(data["categories"]):
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
    order: list[str] = []
    per_image: dict[str, dict[str, Any]] = {}
    by_coco_id: dict[Any, str] = {}
    for i, img in enumerate(data["images"]):
        where = f"{json_path}:images[{i}]"
        if not isinstance(img, dict) or "id" not in img or not img.get("file_name"):
            errors.add(f"{where}: an image needs 'id' and 'file_name'")
            continue
        path = image_dir / str(img["file_name"])
        size = _size_or_error(errors, where, path)
        if size is not None and "width" in img and "height" in img:
            w = _number(errors, where, "width", img["width"])
            h = _number(errors, where, "height", img["height"])
            if w is not None and h is not None:
                size = (int(w), int(h))
        image_id = str(img["id"])
        by_coco_id[img["id"]] = image_id
        per_image[image_id] = {"path": path, "width": size[0] if size else None,
                               "height": size[1] if size else None, "ok": size is not None,
                               "boxes": [], "labels": [], "difficult": []}
        order.append(image_id)
    for i, ann in enumerate(data["annotations"]):
        where = f"{json_path}:annotations[{i}]"
        if not isinstance(ann, dict):
            errors.add(f"{where}: not an object")
            continue
        if "id" in ann:
            where += f" (id={ann['id']})"
        if ann.get("image_id") not in by_coco_id:
            errors.add(f"{where}: unknown image_id {ann.get('image_id')!r}")
            continue
        if ann.get("category_id") not in class_index:
            errors.add(f"{where}: unknown category_id {ann.get('category_id')!r}")
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            errors.add(f"{where}:bbox: expected [x, y, w, h], got {bbox!r}")
            continue
        vals = [_number(errors, where, f"bbox[{k}]", v) for k, v in enumerate(bbox)]
        difficult = _flag(errors, where, "iscrowd", ann.get("iscrowd", 0))
        d = per_image[by_coco_id[ann["image_id"]]]
        if any(v is None for v in vals) or difficult is None or not d["ok"]:
            continue
        x, y, w, h = vals  # type: ignore[misc]
        box = _check_box(errors, where, [x, y, x + w, y + h], d["width"], d["height"], clip)
        if box is None:
            continue
        _add_box(d, box, class_index[ann["category_id"]], difficult)
    if check_class_images:
        _check_class_images(errors, [c for c in classes if c.image_paths], class_where)
    errors.raise_if_any()
    return _build(name or json_path.stem, order, per_image, classes)


# ---------------------------------------------------------------------------------------- scales


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
        keep = ~im.difficult
        if not keep.any():
            continue
        b = im.boxes_xyxy[keep].astype(np.float64)
        s = np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None))
        s = s[s > 0]
        if s.size == 0:
            continue
        width, height = im.size()
        candidates.append(math.sqrt(width * height) * float(target_object_size) / s)
    if not candidates:
        raise ValueError(f"dataset {dataset.name!r} has no non-difficult box to derive an image size from")
    return int(round(float(np.median(np.concatenate(candidates)))))
