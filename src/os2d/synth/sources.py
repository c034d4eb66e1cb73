"""Inputs of the generator: class images (a folder or a ``name,path`` CSV) and background photos (a folder)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from os2d.io import ImageError, load_image, validate_class_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MAX_CLASS_SIDE = 800  # class images are pasted at most ~500 px large; bigger sources only cost time


@dataclass
class ClassImage:
    """One class image ready to paste: RGBA, cropped to its opaque part, at most ``MAX_CLASS_SIDE`` px."""

    name: str
    image: Image.Image
    source: Path
    opaque_fraction: float  # share of pixels with alpha >= 128 (1 for photos without transparency)


def list_images(root: str | os.PathLike[str], what: str = "image") -> list[Path]:
    """Image files under ``root`` (recursive, sorted); ``ValueError`` naming the folder when there are none."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{what} folder not found: {root}")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise ValueError(f"no {what}s ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    return paths


def _read_class_csv(path: Path) -> list[tuple[str, Path]]:
    rows = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if "name" not in header or "path" not in header:
            raise ValueError(f"{path}:1: a class CSV needs the columns name,path; header is {header}")
        ni, pi = header.index("name"), header.index("path")
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            line = reader.line_num
            if len(values) <= max(ni, pi) or not values[ni].strip() or not values[pi].strip():
                raise ValueError(f"{path}:{line}: empty class name or path")
            p = Path(values[pi].strip())
            rows.append((values[ni].strip(), p if p.is_absolute() else path.parent / p))
    if not rows:
        raise ValueError(f"{path}: no class images")
    return rows


def class_image_list(source: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """(name, path) of every class image: a folder (name = file stem; stems must be unique) or a CSV
    ``name,path`` (a repeated name = several images of one class)."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return _read_class_csv(source)
    paths = list_images(source, "class image")
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise ValueError(f"two class images named {p.stem!r}: {seen[p.stem]} and {p} (rename one, or list "
                             f"them in a name,path CSV)")
        seen[p.stem] = p
    return [(p.stem, p) for p in paths]


def load_class_image(name: str, path: Path) -> ClassImage:
    """Read a class image (EXIF orientation applied, transparency kept) and crop it to its opaque part."""
    try:
        with Image.open(path) as raw:
            img = ImageOps.exif_transpose(raw).convert("RGBA")
    except (OSError, ValueError) as e:
        raise ValueError(f"class {name!r}: cannot read {path}: {e}") from e
    bbox = img.getchannel("A").point(lambda a: 255 if a >= 128 else 0).getbbox()
    if bbox is None:
        raise ValueError(f"class {name!r}: {path} is fully transparent")
    img = img.crop(bbox)
    try:
        validate_class_image(load_image(path))
    except ImageError as e:
        raise ValueError(f"class {name!r}: {e}") from e
    if max(img.size) > MAX_CLASS_SIDE:
        s = MAX_CLASS_SIDE / max(img.size)
        img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.Resampling.LANCZOS)
    opaque = float((np.asarray(img.getchannel("A")) >= 128).mean())
    return ClassImage(name, img, path, opaque)


def load_background(path: Path, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A random crop of a photo with the aspect ``width / height`` (30-100% of the largest such crop),
    resized to ``width x height`` RGB."""
    img = load_image(path)
    pw, ph = img.size
    aspect = width / height
    cw, ch = (pw, pw / aspect) if pw / ph < aspect else (ph * aspect, ph)
    s = rng.uniform(0.55, 1.0)
    cw, ch = cw * s, ch * s
    x = rng.uniform(0, pw - cw)
    y = rng.uniform(0, ph - ch)
    return img.resize((width, height), Image.Resampling.BILINEAR, box=(x, y, x + cw, y + ch))
