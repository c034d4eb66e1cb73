"""Robust image loading and the resizing rules of OS2D.

Every loader returns an RGB :class:`PIL.Image.Image` with EXIF orientation applied, and every failure
is an :class:`ImageError` (a ``ValueError``) whose message names the image. Decompression bombs are
refused from the header, before any pixel is decoded.

Convention:
    Sizes are ``(width, height)`` in pixels as in PIL; tensors are ``(3, H, W)``.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from os2d.config import MAX_IMAGE_PIXELS
from os2d.errors import Os2dError

__all__ = [
    "ImageError",
    "ImageSource",
    "image_to_tensor",
    "load_image",
    "resize_to_area",
    "resize_to_scale",
    "size_after_resize_to_area",
    "validate_class_image",
]

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray]
"""Anything :func:`load_image` accepts: a path, encoded bytes, a binary file object, a PIL image or an
``H x W x 3`` uint8 RGB array."""

DEFAULT_MAX_PIXELS = MAX_IMAGE_PIXELS

_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
_PIL_LIMIT_LOCK = threading.Lock()


class ImageError(Os2dError):
    """An image cannot be used: missing, unreadable, corrupt, too large, empty or degenerate.

    Attributes:
        source: the name of the offending image (its path, or ``<bytes>``, ``<numpy array>``...).
    """

    def __init__(self, message: str, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


# ------------------------------------------------------------------------------------------ loading


def _describe(source: object) -> str:
    """Human-readable name of an image source, for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(source, np.ndarray):
        return "<numpy array>"
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "<PIL image>"
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, (str, os.PathLike)) else "<file object>"


def _check_pixels(size: tuple[int, int], name: str, max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"image {name} has zero size ({width}x{height})", name)
    if width * height > max_pixels:
        raise ImageError(
            f"image too large: {name} is {width}x{height} = {width * height} pixels, more than the limit of "
            f"{max_pixels} pixels (possible decompression bomb; raise max_pixels if the image is genuine)", name)


@contextmanager
def _pil_pixel_limit(max_pixels: int) -> Iterator[None]:
    """Let our ``max_pixels`` check, not Pillow's global ``Image.MAX_IMAGE_PIXELS``, decide.

    Pillow's warning for images above its limit is silenced (our check replaces it). Pillow raises
    for images above twice its limit, which can only refuse images that ``max_pixels`` refuses too,
    unless ``max_pixels`` is larger: only then is Pillow's global check switched off, temporarily,
    under a lock, while our header check is in charge, and restored on exit.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        limit = Image.MAX_IMAGE_PIXELS
        if limit is None or max_pixels <= 2 * limit:
            yield
            return
        with _PIL_LIMIT_LOCK:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = saved


def _bomb_error(exc: Exception, name: str, max_pixels: int) -> ImageError:
    found = _BOMB_PIXELS.search(str(exc))
    size = f"{found.group(1)} pixels" if found else "too many pixels"
    return ImageError(f"image too large: {name} has {size}, more than the limit of {max_pixels} pixels "
                      "(possible decompression bomb; raise max_pixels if the image is genuine)", name)


def _decode(fp: BinaryIO, name: str, max_pixels: int) -> Image.Image:
    """Open ``fp``, check the header size, then decode (all pixels read before returning)."""
    with _pil_pixel_limit(max_pixels):
        try:
            img = Image.open(fp)
        except Image.DecompressionBombError as e:
            raise _bomb_error(e, name, max_pixels) from e
        except UnidentifiedImageError as e:
            raise ImageError(f"cannot read image {name}: not an image or an unsupported format", name) from e
        except (ImageError, MemoryError):
            raise
        except Exception as e:  # noqa: BLE001 - plugins raise many types on malformed headers
            raise ImageError(f"cannot read image {name}: {e or type(e).__name__}", name) from e
        _check_pixels(img.size, name, max_pixels)  # from the header only: nothing decoded yet
        try:
            img.load()
        except Image.DecompressionBombError as e:
            raise _bomb_error(e, name, max_pixels) from e
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - truncated/corrupt data: OSError, SyntaxError, zlib.error...
            raise ImageError(f"cannot read image {name}: corrupt or truncated data ({e or type(e).__name__})",
                             name) from e
    return img


def _open_regular_file(path: Path, name: str) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file (after following links).

    The open itself never blocks: ``O_NONBLOCK`` makes a named pipe without a writer open at once (a plain
    open would wait forever), and ``fstat`` of the opened file then refuses it, so a file swapped for a pipe
    after a check cannot hang the run either.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError as e:
        raise ImageError(f"image not found: {name}", name) from e
    except IsADirectoryError as e:
        raise ImageError(f"cannot read image {name}: is a directory", name) from e
    except OSError as e:  # permission denied, file name too long, not a directory...
        raise ImageError(f"cannot read image {name}: {e.strerror or e}", name) from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "is a directory" if stat.S_ISDIR(mode) else "not a regular file (a named pipe, socket or device)"
        raise ImageError(f"cannot read image {name}: {kind}", name)
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _open_path(path: Path, max_pixels: int) -> Image.Image:
    name = str(path)
    with _open_regular_file(path, name) as f:
        try:
            return _decode(f, name, max_pixels)
        except OSError as e:  # I/O error while reading (decoding errors are already ImageError)
            raise ImageError(f"cannot read image {name}: {e.strerror or e}", name) from e


def _from_array(arr: np.ndarray, max_pixels: int) -> Image.Image:
    name = "<numpy array>"
    if arr.dtype != np.uint8:
        raise ImageError(f"numpy image must be uint8 (H x W x 3 RGB), got dtype {arr.dtype}", name)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ImageError(f"numpy image must have shape H x W x 3 (RGB), got {arr.shape}", name)
    _check_pixels((arr.shape[1], arr.shape[0]), name, max_pixels)
    return Image.fromarray(np.ascontiguousarray(arr))


def _from_pil(img: Image.Image, max_pixels: int) -> Image.Image:
    name = _describe(img)
    _check_pixels(img.size, name, max_pixels)
    try:
        img.load()  # a lazily opened image may still fail here
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ImageError(f"cannot read image {name}: corrupt or truncated data ({e or type(e).__name__})",
                         name) from e
    return img


def _exif_transpose(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a malformed EXIF block is ignored rather than fatal."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001
        return img


def _on_white(img: Image.Image) -> Image.Image:
    """Composite an image with alpha over a white background -> RGB."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb(img: Image.Image, name: str = "<image>") -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Palette images with transparency and all modes with alpha are composited over white. 16-bit grey
    (``I;16*``, and ``I``, read as 16-bit data as PNG/TIFF store it) is scaled by 255/65535. Float
    (``F``) images are taken as [0, 1] if their maximum is at most 1, else as [0, 255] (clipped).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        return _on_white(img) if "transparency" in img.info else img.convert("RGB")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        return _on_white(img)
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            arr = arr * 255.0 if arr.size and np.nanmax(arr) <= 1.0 else arr
        else:
            arr = np.clip(arr, 0, 65535) * (255.0 / 65535.0)
        grey = np.clip(np.nan_to_num(np.rint(arr)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    try:
        return img.convert("RGB")  # L, 1, CMYK, YCbCr, HSV, RGBX ...
    except (ValueError, OSError) as e:
        raise ImageError(f"cannot read image {name}: cannot convert mode {mode} to RGB ({e})", name) from e


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load an image as RGB with EXIF orientation applied.

    Args:
        source: a path (``str`` / ``os.PathLike``), encoded image bytes, a binary file object, a PIL
            image, or a numpy ``H x W x 3`` uint8 RGB array (``H x W`` grey and ``H x W x 4`` RGBA are
            accepted too).
        max_pixels: refuse images with more pixels than this; checked on the header before decoding
            (decompression-bomb guard). Pillow's own global limit is not modified at import.

    Returns:
        A new RGB image (the input object is never modified). Transparent areas are made white.

    Raises:
        ImageError: missing file (``image not found: PATH``), unreadable / corrupt / truncated data
            (``cannot read image PATH: ...``), too many pixels, zero size, unsupported array.
        TypeError: ``source`` is of an unsupported type.
    """
    if not isinstance(max_pixels, int) or isinstance(max_pixels, bool) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    name = _describe(source)
    if isinstance(source, Image.Image):
        img = _from_pil(source, max_pixels)
    elif isinstance(source, np.ndarray):
        img = _from_array(source, max_pixels)
    elif isinstance(source, (str, os.PathLike)):
        img = _open_path(Path(source), max_pixels)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        img = _decode(io.BytesIO(bytes(source)), name, max_pixels)
    elif hasattr(source, "read"):
        fp = source
        seekable = getattr(fp, "seekable", None)
        if not (callable(seekable) and seekable()):
            fp = io.BytesIO(fp.read())
        img = _decode(fp, name, max_pixels)
    else:
        raise TypeError(f"unsupported image source of type {type(source).__name__}; expected a path, bytes, "
                        "a binary file object, a PIL image or a numpy array")
    out = _to_rgb(_exif_transpose(img), name)
    if out is source:  # never hand back (and let callers mutate) the caller's own object
        out = out.copy()
    _check_pixels(out.size, name, max_pixels)
    return out


def validate_class_image(img: Image.Image, *, min_side: int = 8) -> None:
    """Refuse degenerate class (query) images.

    Args:
        img: the class image (any mode; usually the output of :func:`load_image`).
        min_side: smallest acceptable width and height, in pixels.

    Raises:
        ImageError: a side is shorter than ``min_side``, or the image is nearly constant (standard
            deviation of its grey levels below 1.0: ``class image is empty/uniform``).
    """
    name = _describe(img)
    width, height = img.size
    if width < min_side or height < min_side:
        raise ImageError(f"class image {name} is too small: {width}x{height} px (each side must be at least "
                         f"{min_side} px)", name)
    grey = np.asarray(_to_rgb(img, name).convert("L"), dtype=np.float64)
    std = float(grey.std())
    if std < 1.0:
        raise ImageError(f"class image is empty/uniform: {name} has grey-level std {std:.3f} < 1.0", name)


# ------------------------------------------------------------------------------- tensors and resizing


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> ``(3, H, W)`` float32 tensor in [0, 1] (converted to RGB first if needed)."""
    if not isinstance(img, Image.Image):
        raise TypeError(f"image_to_tensor expects a PIL image, got {type(img).__name__}")
    arr = np.array(_to_rgb(img), dtype=np.uint8)  # (H, W, 3), a writable copy
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div_(255.0)


def size_after_resize_to_area(width: int, height: int, target_side: int) -> tuple[int, int]:
    """OS2D's class-image size rule: keep the aspect ratio, make the area about ``target_side ** 2``.

    ``new_w = int(S / sqrt(h / w))``, ``new_h = int(S * sqrt(h / w))``, each at least 1 (exactly as in
    the original OS2D code).

    Returns:
        ``(new_width, new_height)``.
    """
    if width <= 0 or height <= 0:
        raise ImageError(f"cannot resize an image of zero size ({width}x{height})")
    if isinstance(target_side, bool) or not isinstance(target_side, int) or target_side <= 0:
        raise ValueError(f"target_side must be a positive integer, got {target_side!r}")
    aspect_h_to_w = float(height) / width
    new_w = int(target_side / math.sqrt(aspect_h_to_w))
    new_h = int(target_side * math.sqrt(aspect_h_to_w))
    return max(new_w, 1), max(new_h, 1)


def resize_to_area(img: Image.Image, target_side: int, *,
                   resample: Image.Resampling | int = Image.Resampling.BILINEAR) -> Image.Image:
    """Resize a class image with :func:`size_after_resize_to_area` (PIL bilinear by default).

    Args:
        img: the image.
        target_side: ``S``; the result has about ``S * S`` pixels and the aspect ratio of ``img``.
        resample: PIL resampling filter.

    Returns:
        The resized image (a new image).
    """
    return img.resize(size_after_resize_to_area(*img.size, target_side), resample=resample)


def resize_to_scale(img: Image.Image, scale: float, *,
                    resample: Image.Resampling | int = Image.Resampling.BILINEAR) -> Image.Image:
    """Resize by a factor: new size ``(int(w * scale), int(h * scale))``, each at least 1.

    Args:
        img: the image.
        scale: positive, finite factor.
        resample: PIL resampling filter.

    Returns:
        The resized image (a new image).
    """
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError(f"cannot resize an image of zero size ({width}x{height})")
    new_size = (max(int(width * scale), 1), max(int(height * scale), 1))
    return img.resize(new_size, resample=resample)
