"""Finding the input images of a run: folders (recursive), glob patterns, list files and plain paths."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})
_GLOB_CHARS = frozenset("*?[")


def is_image_name(path: str | Path) -> bool:
    """True when the file name ends in a supported image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def images_in_folder(folder: str | Path) -> list[str]:
    """Image files under ``folder``, recursively, sorted by path; hidden files and folders (``.name``) skipped,
    symbolic links to folders not followed (no cycles)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in files if not f.startswith(".") and is_image_name(f)]
    return sorted(found)


def read_list_file(path: str | Path) -> list[str]:
    """One image path per line (relative paths are relative to the list's folder); blank lines and ``#``
    comments skipped."""
    path = Path(path)
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    return [ln if Path(ln).is_absolute() else str(path.parent / ln) for ln in lines if ln and not ln.startswith("#")]


def discover_images(sources: Iterable[str | Path]) -> list[str]:
    """Expand input sources into image paths, in a deterministic order, each path once (first occurrence).

    Each source is, in this order of precedence:
        * an existing folder: its images, recursively (extensions :data:`IMAGE_EXTENSIONS`, any case);
        * an existing list file (``.txt``, ``.lst``, ``.list``): the paths it lists;
        * a pattern with ``*``, ``?`` or ``[`` that is not an existing file: matching image files, sorted
          (``**`` matches folders recursively);
        * anything else: an image path, kept as given (a missing one becomes an error record of the run).

    Raises:
        ValueError: a folder without images, or a pattern matching no image.
    """
    out: list[str] = []
    seen: set[str] = set()
    for src in sources:
        src = str(src)
        p = Path(src)
        if p.is_dir():
            items = images_in_folder(p)
            if not items:
                raise ValueError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in folder {src}")
        elif p.is_file() and p.suffix.lower() in LIST_EXTENSIONS:
            items = read_list_file(p)
        elif not p.is_file() and _GLOB_CHARS & set(src):
            items = sorted(m for m in glob.glob(src, recursive=True) if os.path.isfile(m) and is_image_name(m))
            if not items:
                raise ValueError(f"no images match the pattern {src!r}")
        else:
            items = [src]
        for item in items:
            if item not in seen:
                seen.add(item)
                out.append(item)
    return out
