"""Finding the input images of a run: folders (recursive), glob patterns, list files and plain paths."""

from __future__ import annotations

import glob
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})
_GLOB_CHARS = frozenset("*?[")


def is_image_name(path: str | Path) -> bool:
    """True when the file name ends in a supported image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def images_in_folder(folder: str | Path) -> list[str]:
    """Image files under ``folder``, recursively, sorted by path; hidden files and folders (``.name``) skipped,
    symbolic links to folders not followed (no cycles). Entries with an image name that are not regular files
    (named pipes, sockets, devices: reading them could block forever) are skipped with a logged warning."""
    found, odd = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            if not f.startswith(".") and is_image_name(f):
                path = os.path.join(root, f)
                (found if os.path.isfile(path) else odd).append(path)
    if odd:
        logger.warning("skipped %d entries of %s that are not regular files (named pipes, sockets, devices or "
                       "broken links), e.g. %s", len(odd), folder, sorted(odd)[0])
    return sorted(found)


def path_key(path: str | Path) -> str:
    """The identity of an image path: absolute, links and ``..`` resolved (``imgs/a.jpg`` and
    ``$PWD/imgs/a.jpg`` are one image). Relative paths are relative to the working directory."""
    try:
        return os.path.normcase(os.path.realpath(path))
    except (OSError, ValueError):  # a name the OS refuses: compare as written, made absolute
        return os.path.normcase(os.path.abspath(path))


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

    Each image is kept once, at its first occurrence, even when spelled differently (``imgs/a.jpg`` and
    ``/abs/imgs/a.jpg``: compared by :func:`path_key`); paths are returned as spelled there.

    Raises:
        ValueError: a folder without images, or a pattern matching no image.
    """
    out: list[str] = []
    seen: set[str] = set()
    for src in sources:
        src = str(src)
        kind = _kind(src)
        if kind == "dir":
            items = images_in_folder(src)
            if not items:
                raise ValueError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in folder {src}")
        elif kind == "file" and Path(src).suffix.lower() in LIST_EXTENSIONS:
            items = read_list_file(src)
        elif kind != "file" and _GLOB_CHARS & set(src):
            items = sorted(m for m in glob.glob(src, recursive=True) if os.path.isfile(m) and is_image_name(m))
            if not items:
                raise ValueError(f"no images match the pattern {src!r}")
        else:
            items = [src]
        for item in items:
            key = path_key(item)
            if key not in seen:
                seen.add(key)
                out.append(item)
    return out


def _kind(path: str) -> str:
    """"dir", "file" (regular), or "other" (missing, unreadable, a name too long, a pipe...: kept as an image
    path, whose reading then fails with a clear per-image error)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return "other"
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"
