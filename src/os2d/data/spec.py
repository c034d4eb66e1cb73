"""Dataset specifications: where a detection dataset lives and which part of it to use, as a typed,
serialisable record (a YAML/JSON file for ``os2d eval --dataset``, a section of a training config).

A :class:`DatasetSpec` names one of the three annotation formats of :mod:`os2d.data`, the files,
an optional class subset and the image size at which objects are about 240 px; :func:`load_dataset` turns it
into a :class:`~os2d.data.records.DetectionDataset`.

FlickrLogos-27 (``../shared/data/flickrlogos27-dev``) brand split used by the project's benchmarks and
training configs: the 20 brand names sorted alphabetically, every third one starting with the third
(``sorted(FL27_BRANDS)[2::3]``) is a validation brand (:data:`FL27_VAL_BRANDS`, 6 brands), the other 14 are
training brands (:data:`FL27_TRAIN_BRANDS`). The stride keeps both sides a mix of logo kinds (cars, sports,
food, tech) instead of cutting the alphabet.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from os2d.data.coco import read_coco
from os2d.data.csv_rows import read_csv_rows
from os2d.data.records import DetectionDataset
from os2d.data.reference_csv import read_reference_csv
from os2d.data.scales import suggest_image_size
from os2d.data.simple_csv import CLASS_NAME_COLUMNS, read_simple_csv
from os2d.data.validate import AnnotationError

logger = logging.getLogger(__name__)

FL27_BRANDS: tuple[str, ...] = (
    "Adidas", "BMW", "Citroen", "Cocacola", "Fedex", "Ford", "Google", "HP", "Intel", "McDonalds",
    "Nbc", "Nike", "Pepsi", "Porsche", "Puma", "RedBull", "Sprite", "Texaco", "Vodafone", "Yahoo",
)
"""The 20 brands of ``flickrlogos27-dev`` (sorted)."""

FL27_VAL_BRANDS: tuple[str, ...] = tuple(sorted(FL27_BRANDS)[2::3])
"""Validation brands of the fixed split: Citroen, Ford, Intel, Nike, Puma, Texaco."""

FL27_TRAIN_BRANDS: tuple[str, ...] = tuple(b for b in sorted(FL27_BRANDS) if b not in FL27_VAL_BRANDS)
"""The 14 training brands (the rest)."""

FORMATS = ("reference_csv", "simple_csv", "coco")

_PATH_FIELDS = ("annotations", "classes", "image_dir", "class_image_dir")
_SOURCE_COLUMNS = ("source_image", "source")


@dataclass(frozen=True)
class DatasetSpec:
    """Where a detection dataset lives and which part of it to use.

    Paths are kept as given; relative ones are resolved against ``base_dir`` by :meth:`from_dict` /
    :func:`load_spec` (the folder of the spec file) or against the working directory.

    Format-specific fields:
        * ``reference_csv``: ``annotations`` (OS2D CSV), ``image_dir``, ``class_image_dir``, optional
          ``split`` (keep rows whose ``split`` column equals it);
        * ``simple_csv``: ``annotations`` (``image,class,x1,y1,x2,y2[,difficult]`` in pixels), ``classes``
          (class CSV ``name,path`` or ``class,class_image[,source_image]``), optional ``image_dir`` (root of
          the image paths; default: the annotations' folder);
        * ``coco``: ``annotations`` (JSON), ``image_dir``, ``class_image_dir`` (``<category name>.jpg``).
    """

    format: str = "simple_csv"  # reference_csv | simple_csv | coco
    annotations: str = ""  # the annotation file (CSV or COCO JSON)
    classes: str | None = None  # class CSV (simple_csv only)
    image_dir: str | None = None  # scene images (simple_csv: root of the image paths, default the CSV's folder)
    class_image_dir: str | None = None  # class images (reference_csv, coco)
    split: str | None = None  # reference_csv: keep rows with this value in the ``split`` column
    class_names: tuple[str, ...] | None = None  # keep only these classes; other boxes dropped, images kept
    exclude_class_sources: bool = False  # drop the images the (kept) class images were cropped from
    image_size: int | None = None  # sqrt(w*h) at which objects are ~240 px; None = suggest_image_size
    name: str | None = None  # dataset name (default: the annotation file's stem)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"dataset format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if not self.annotations or not str(self.annotations).strip():
            raise ValueError("dataset spec: 'annotations' (the annotation file) is required")
        for key in _PATH_FIELDS:
            value = getattr(self, key)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise ValueError(f"dataset spec: {key!r} must be a path string, got {value!r}")
            if value is not None:
                object.__setattr__(self, key, os.fspath(value))
        if self.format == "simple_csv":
            if not self.classes:
                raise ValueError("dataset spec: format simple_csv needs 'classes' (the class CSV name,path)")
            if self.class_image_dir is not None:
                raise ValueError("dataset spec: 'class_image_dir' is not used by simple_csv (class image paths "
                                 "are relative to the class CSV)")
        else:
            missing = [k for k in ("image_dir", "class_image_dir") if not getattr(self, k)]
            if missing:
                raise ValueError(f"dataset spec: format {self.format} needs {' and '.join(map(repr, missing))}")
            if self.classes is not None:
                raise ValueError(f"dataset spec: 'classes' (a class CSV) is only used by simple_csv, "
                                 f"not by {self.format}")
            if self.exclude_class_sources:
                raise ValueError("dataset spec: exclude_class_sources needs a class CSV with a source_image "
                                 "column (simple_csv)")
        if self.split is not None and self.format != "reference_csv":
            raise ValueError("dataset spec: 'split' is only used by reference_csv")
        if self.class_names is not None:
            if isinstance(self.class_names, str) or not all(isinstance(c, str) for c in self.class_names):
                raise ValueError(f"dataset spec: 'class_names' must be a list of names, got {self.class_names!r}")
            names = tuple(self.class_names)
            if not names:
                raise ValueError("dataset spec: 'class_names' is empty (omit it to keep every class)")
            if len(set(names)) != len(names):
                raise ValueError(f"dataset spec: 'class_names' has duplicates: {list(names)}")
            object.__setattr__(self, "class_names", names)
        if self.image_size is not None:
            if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 16:
                raise ValueError(f"dataset spec: 'image_size' must be an integer >= 16, got {self.image_size!r}")
        if not isinstance(self.exclude_class_sources, bool):
            raise ValueError("dataset spec: 'exclude_class_sources' must be true or false")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-friendly dict (``class_names`` as a list)."""
        d = asdict(self)
        if d["class_names"] is not None:
            d["class_names"] = list(d["class_names"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, base_dir: str | os.PathLike[str] | None = None) -> DatasetSpec:
        """Build from a dict; unknown keys are an error; relative paths are joined to ``base_dir`` if given."""
        if not isinstance(d, dict):
            raise ValueError(f"dataset spec must be a mapping, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown dataset spec keys: {sorted(unknown)}; allowed: {sorted(names)}")
        d = dict(d)
        if isinstance(d.get("class_names"), list):
            d["class_names"] = tuple(d["class_names"])
        spec = cls(**d)
        return spec.resolve(base_dir) if base_dir is not None else spec

    def resolve(self, base_dir: str | os.PathLike[str]) -> DatasetSpec:
        """A copy whose relative paths are joined to ``base_dir``."""
        base = Path(base_dir)
        changes = {}
        for key in _PATH_FIELDS:
            value = getattr(self, key)
            if value is not None and not Path(value).expanduser().is_absolute():
                changes[key] = str(base / value)
            elif value is not None:
                changes[key] = str(Path(value).expanduser())
        d = asdict(self)
        d.update(changes)
        return DatasetSpec(**d)

    def display_name(self) -> str:
        return self.name or Path(self.annotations).stem


def load_spec(path: str | os.PathLike[str]) -> DatasetSpec:
    """Read a spec from a YAML or JSON file; relative paths in it are relative to the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset spec not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - YAML and JSON raise many error types
        raise ValueError(f"{path}: cannot parse the dataset spec: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("dataset"), dict) and len(data) == 1:
        data = data["dataset"]  # a file with one top-level "dataset:" section
    try:
        return DatasetSpec.from_dict(data, base_dir=path.resolve().parent)  # absolute: the spec reloads from anywhere
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _class_sources(class_csv: Path) -> dict[str, list[str]]:
    """Class name -> source images (as written) from a class CSV with a ``source_image`` column."""
    header, rows = read_csv_rows(class_csv)
    name_col = next((c for c in CLASS_NAME_COLUMNS if c in header), None)
    src_col = next((c for c in _SOURCE_COLUMNS if c in header), None)
    if name_col is None or src_col is None:
        raise AnnotationError(f"{class_csv}:1: exclude_class_sources needs columns name (or class) and "
                              f"source_image; header is {header}")
    out: dict[str, list[str]] = {}
    for _, row in rows:
        name = (row.get(name_col) or "").strip()
        src = (row.get(src_col) or "").strip()
        if name and src:
            out.setdefault(name, []).append(src)
    return out


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def load_dataset(spec: DatasetSpec, *, check_class_images: bool = True) -> DetectionDataset:
    """Read the dataset a spec describes, then apply its class subset and source-image exclusion.

    ``class_names`` keeps those classes (in dataset order) and drops the boxes of the others; every image stays
    (images left without boxes count for false positives). ``exclude_class_sources`` removes the images that
    a kept class's image was cropped from (class CSV column ``source_image``, a path relative to the class
    CSV's folder or an image id of the annotations): detecting a crop in its own source is trivial.

    Raises:
        AnnotationError (a ValueError): bad files/rows (see :mod:`os2d.data.validate`), unknown class names.
    """
    name = spec.display_name()
    ann = Path(spec.annotations)
    if spec.format == "reference_csv":
        dataset = read_reference_csv(ann, spec.image_dir, spec.class_image_dir, split=spec.split,  # type: ignore[arg-type]
                                     check_class_images=check_class_images, name=name)
    elif spec.format == "simple_csv":
        dataset = read_simple_csv(ann, spec.classes, image_root=spec.image_dir,  # type: ignore[arg-type]
                                  check_class_images=check_class_images, name=name)
    else:
        dataset = read_coco(ann, spec.image_dir, spec.class_image_dir,  # type: ignore[arg-type]
                            check_class_images=check_class_images, name=name)

    kept_names = list(dataset.class_names)
    if spec.class_names is not None:
        by_name = {c.name: c.class_id for c in dataset.classes}
        unknown = [c for c in spec.class_names if c not in by_name]
        if unknown:
            raise AnnotationError(f"{ann}: unknown class name(s) {unknown}; the dataset has {kept_names}")
        dataset = dataset.subset(class_ids=[by_name[c] for c in spec.class_names], name=name)
        kept_names = list(dataset.class_names)

    if spec.exclude_class_sources:
        class_csv = Path(spec.classes)  # type: ignore[arg-type]
        sources = _class_sources(class_csv)
        drop: set[str] = set()
        for cname in kept_names:
            for src in sources.get(cname, []):
                src_path = class_csv.parent / src
                hits = [im.image_id for im in dataset.images
                        if im.image_id == src or _same_file(im.path, src_path)]
                if not hits:
                    logger.warning("class %s: source image %s is not among the dataset's images", cname, src)
                drop.update(hits)
        if drop:
            dataset = dataset.subset(image_ids=[im.image_id for im in dataset.images if im.image_id not in drop],
                                     name=name)
    if not dataset.images:
        raise AnnotationError(f"{ann}: the dataset spec selects no image")
    return dataset


def dataset_image_size(spec: DatasetSpec, dataset: DetectionDataset) -> int:
    """The spec's ``image_size``, or :func:`suggest_image_size` of the dataset when it is not set."""
    return spec.image_size if spec.image_size is not None else suggest_image_size(dataset)


__all__ = [
    "FL27_BRANDS",
    "FL27_TRAIN_BRANDS",
    "FL27_VAL_BRANDS",
    "FORMATS",
    "DatasetSpec",
    "dataset_image_size",
    "load_dataset",
    "load_spec",
]
