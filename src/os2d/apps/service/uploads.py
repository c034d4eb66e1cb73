"""Request fields of the service, checked: image uploads (sniffed, not decoded yet), class names and their URLs,
boxes, numbers, image sizes. Each check raises an ``HTTPException`` (400, 404 or 413) with a message for the client."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import quote

from fastapi import HTTPException

from os2d.config import AUTO
from os2d.io import ImageError

API = "/api/v1"
MAX_CLASS_NAME = 100
MAX_LEVEL_SIDE = 4096  # sqrt(w*h) of the largest pyramid level a request may ask for
MAX_SCALES = 8

_MAGIC: tuple[tuple[int, bytes, str], ...] = (  # (offset, bytes, file suffix)
    (0, b"\x89PNG\r\n\x1a\n", ".png"), (0, b"\xff\xd8\xff", ".jpg"), (0, b"GIF87a", ".gif"), (0, b"GIF89a", ".gif"),
    (0, b"BM", ".bmp"), (0, b"II*\x00", ".tif"), (0, b"MM\x00*", ".tif"), (8, b"WEBP", ".webp"),
)


def image_suffix(data: bytes) -> str | None:
    """The file suffix of the PNG, JPEG, GIF, BMP, TIFF or WebP that ``data`` starts like, else None."""
    for off, magic, suffix in _MAGIC:
        if data[off:off + len(magic)] == magic and (suffix != ".webp" or data[:4] == b"RIFF"):
            return suffix
    return None


def sniff_image(data: bytes) -> bool:
    """True if ``data`` starts like PNG, JPEG, GIF, BMP, TIFF or WebP."""
    return image_suffix(data) is not None


def image_http_error(e: ImageError, what: str) -> HTTPException:
    msg = str(e).replace("<bytes>", what)
    return HTTPException(413 if msg.startswith("image too large") else 400, msg)


def parse_floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise HTTPException(400, f"{what}: expected comma-separated numbers, got {text!r}") from None
    if any(not math.isfinite(v) for v in vals):
        raise HTTPException(400, f"{what}: numbers must be finite, got {text!r}")
    return vals


def parse_image_size(text: str) -> int | str | None:
    """The ``image_size`` form field: ``auto``, 0 (keep the size) or a sqrt(w*h) in [16, MAX_LEVEL_SIDE]."""
    text = text.strip().lower()
    if text in ("", AUTO):
        return AUTO
    try:
        value = int(text)
    except ValueError:
        raise HTTPException(400, f"image_size: expected 'auto', a number of pixels or 0, got {text!r}") from None
    if value != 0 and not 16 <= value <= MAX_LEVEL_SIDE:
        raise HTTPException(400, f"image_size must be 'auto', 0 (keep size) or between 16 and {MAX_LEVEL_SIDE}")
    return value or None


def split_names(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def check_class_name(name: str) -> str:
    """``name`` stripped, if it can be a class name: 400 otherwise.

    A class name is one URL path segment of ``/api/v1/classes/{name}`` once percent-encoded; ``.`` and ``..``
    are refused because clients resolve them as dot segments (``/classes/../thumbnail``), and '/', '\\' and
    control characters because they split or end a segment. ',' separates names in form fields.
    """
    name = (name or "").strip()
    if not name:
        raise HTTPException(400, "class name must not be empty")
    if len(name) > MAX_CLASS_NAME:
        raise HTTPException(400, f"class name longer than {MAX_CLASS_NAME} characters")
    if any(c in name for c in ",/\\") or any(not c.isprintable() for c in name):
        raise HTTPException(400, f"class name {name!r} must not contain ',', '/', '\\' or control characters")
    if name in (".", ".."):
        raise HTTPException(400, f"class name {name!r} is not allowed (a URL dot segment)")
    return name


def class_url(name: str) -> str:
    """The URL of a class: its name percent-encoded as one path segment."""
    return f"{API}/classes/{quote(name, safe='')}"


def stored_name(name: str) -> str:
    """A class name from a URL, unchanged; 404 for a name no class can have (it would alias another)."""
    try:
        valid = check_class_name(name) == name
    except HTTPException:
        valid = False
    if not valid:
        raise HTTPException(404, f"unknown class {name[:MAX_CLASS_NAME]!r}")
    return name


@dataclass(frozen=True)
class Upload:
    """An accepted image upload, not decoded yet: its bytes stay in the request's spooled file until the worker
    decodes it (:meth:`Service.decode`)."""

    file: BinaryIO
    what: str


def parse_box(text: str, size: tuple[int, int]) -> tuple[int, int, int, int]:
    vals = parse_floats(text, "box")
    if len(vals) != 4:
        raise HTTPException(400, f"box: expected 'x1,y1,x2,y2', got {text!r}")
    w, h = size
    if all(-1.0 <= v for v in vals) and vals[0] <= w + 1 and vals[2] <= w + 1 and vals[1] <= h + 1 \
            and vals[3] <= h + 1:  # tolerate rounding of client-side coordinates by up to 1 px
        vals = [min(max(v, 0.0), float(w if i % 2 == 0 else h)) for i, v in enumerate(vals)]
    x1, y1, x2, y2 = vals
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise HTTPException(400, f"box {text!r} is not inside the {w}x{h} image with x1 < x2 and y1 < y2")
    return round(x1), round(y1), round(x2), round(y2)
