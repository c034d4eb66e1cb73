"""Tests for os2d.io: robust loading, mode conversion, EXIF, bombs, class-image checks, resizing."""

from __future__ import annotations

import io
import math
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

import os2d.io
from os2d.io import (
    ImageError,
    image_to_tensor,
    load_image,
    resize_to_area,
    resize_to_scale,
    size_after_resize_to_area,
    validate_class_image,
)


def png_bytes_1bit(width: int, height: int) -> bytes:
    """A valid black 1-bit greyscale PNG of any size, built row by row (huge sizes stay tiny)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def noise_rgb(w: int = 64, h: int = 48, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record any attempt to decode pixel data from a file."""
    calls: list[str] = []
    original = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        calls.append(type(self).__name__)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


# ------------------------------------------------------------------------------------------ sources


def test_load_from_path_str_bytes_filelike_pil_numpy(tmp_path: Path) -> None:
    img = noise_rgb()
    path = tmp_path / "a.png"
    img.save(path)
    expected = np.asarray(img)
    arr = np.asarray(img).copy()
    with open(path, "rb") as f:
        from_file = load_image(f)
    for out in (load_image(path), load_image(str(path)), load_image(path.read_bytes()),
                load_image(bytearray(path.read_bytes())), load_image(io.BytesIO(path.read_bytes())),
                from_file, load_image(img), load_image(arr)):
        assert out.mode == "RGB" and out.size == (64, 48)
        np.testing.assert_array_equal(np.asarray(out), expected)


def test_load_does_not_return_or_modify_the_callers_image() -> None:
    img = noise_rgb()
    snapshot = np.asarray(img).copy()
    out = load_image(img)
    assert out is not img
    out.paste((1, 2, 3), (0, 0, 10, 10))
    np.testing.assert_array_equal(np.asarray(img), snapshot)


def test_non_seekable_stream() -> None:
    data = encode(noise_rgb())

    class Stream:
        def __init__(self) -> None:
            self._buf = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._buf.read(n)

        def seekable(self) -> bool:
            return False

    assert load_image(Stream()).size == (64, 48)


def test_numpy_grey_rgba_and_bad_arrays() -> None:
    grey = np.full((10, 12), 77, dtype=np.uint8)
    assert load_image(grey).getpixel((0, 0)) == (77, 77, 77)
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)  # fully transparent -> white
    assert load_image(rgba).getpixel((3, 3)) == (255, 255, 255)
    with pytest.raises(ImageError, match="uint8"):
        load_image(np.zeros((10, 12, 3), dtype=np.float32))
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((10, 12, 2), dtype=np.uint8))
    with pytest.raises(ImageError, match="zero size"):
        load_image(np.zeros((0, 12, 3), dtype=np.uint8))
    # non-contiguous views are fine
    big = np.asarray(noise_rgb())
    np.testing.assert_array_equal(np.asarray(load_image(big[::2, ::3])), big[::2, ::3])


def test_unsupported_source_type() -> None:
    with pytest.raises(TypeError):
        load_image(12345)  # type: ignore[arg-type]


def test_invalid_max_pixels() -> None:
    with pytest.raises(ValueError):
        load_image(noise_rgb(), max_pixels=0)


# ------------------------------------------------------------------------------------------- errors


def test_missing_file_message_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "missing.jpg"
    with pytest.raises(ImageError, match="image not found") as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert info.value.source == str(path)
    assert isinstance(info.value, ValueError)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"cannot read image .*directory"):
        load_image(tmp_path)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageError, match="cannot read image") as info:
        load_image(path)
    assert str(path) in str(info.value)
    with pytest.raises(ImageError, match=r"cannot read image <bytes>"):
        load_image(b"\x00\x01garbage")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(empty)


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = encode(noise_rgb(128, 128), "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot read image .*cut.jpg.*truncated"):
        load_image(path)


def test_corrupt_png_data(tmp_path: Path) -> None:
    data = bytearray(encode(noise_rgb(64, 64)))
    start = data.index(b"IDAT") + 40
    data[start:start + 64] = bytes(64)  # damage the compressed stream
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="cannot read image .*bad.png"):
        load_image(path)


def test_zero_size_pil_image() -> None:
    with pytest.raises(ImageError, match="zero size"):
        load_image(Image.new("RGB", (0, 10)))


# ------------------------------------------------------------------------------ decompression bombs


def test_bomb_refused_before_decoding(tmp_path: Path, no_decoding: list[str]) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes_1bit(30000, 30000))  # 900 Mpixel, ~110 KB on disk
    assert path.stat().st_size < 1_000_000
    limit_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match="too large") as info:
        load_image(path)
    msg = str(info.value)
    assert str(path) in msg and "900000000" in msg and "100000000" in msg
    # a limit above Pillow's own hard limit: our check runs on the header and reports the dimensions
    with pytest.raises(ImageError, match="30000x30000") as info:
        load_image(path, max_pixels=500_000_000)
    assert "500000000" in str(info.value)
    assert no_decoding == []
    assert Image.MAX_IMAGE_PIXELS == limit_before  # global state restored


def test_small_limit_refuses_before_decoding(no_decoding: list[str]) -> None:
    data = png_bytes_1bit(300, 200)
    with pytest.raises(ImageError, match=r"300x200 = 60000 pixels.*limit of 10000"):
        load_image(data, max_pixels=10_000)
    assert no_decoding == []
    assert load_image(data, max_pixels=60_000).size == (300, 200)
    assert no_decoding  # decoding does go through ImageFile.load


def test_pillow_bomb_warning_is_replaced_by_our_check() -> None:
    data = png_bytes_1bit(10000, 9500)  # above Pillow's warning limit, below its error limit
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match="10000x9500"):
            load_image(data, max_pixels=50_000_000)


def test_pil_and_numpy_sources_respect_limit() -> None:
    with pytest.raises(ImageError, match="too large"):
        load_image(Image.new("RGB", (200, 100)), max_pixels=100)
    with pytest.raises(ImageError, match="too large"):
        load_image(np.zeros((100, 200, 3), np.uint8), max_pixels=100)


def test_no_global_state_changed_at_import() -> None:
    code = ("import warnings, numpy, torch; from PIL import Image, ImageFile; state = lambda: (Image.MAX_IMAGE_PIXELS, "
            "ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters)); before = state(); "
            "import os2d.io; assert state() == before")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(os2d.io.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --------------------------------------------------------------------------------- mode conversions


def test_palette_with_transparency_composited_on_white(tmp_path: Path) -> None:
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    pal.paste(1, (4, 0, 8, 8))  # right half: red
    path = tmp_path / "pal.png"
    pal.save(path, transparency=0)  # index 0 (left half) transparent
    out = load_image(path)
    assert out.mode == "RGB"
    assert out.getpixel((1, 1)) == (255, 255, 255)
    assert out.getpixel((6, 1)) == (255, 0, 0)
    # without transparency the palette colours are used
    pal.info.pop("transparency", None)
    assert load_image(encode(pal)).getpixel((1, 1)) == (0, 0, 0)


def test_gif_palette_transparency() -> None:
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([10, 20, 30, 0, 255, 0] + [0] * (256 * 3 - 6))
    pal.paste(1, (0, 0, 4, 8))
    out = load_image(encode(pal, "GIF", transparency=1))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((6, 0)) == (10, 20, 30)


def test_grey_la_rgba_1bit_cmyk() -> None:
    assert load_image(encode(Image.new("L", (4, 4), 100))).getpixel((0, 0)) == (100, 100, 100)
    assert load_image(encode(Image.new("LA", (4, 4), (30, 0)))).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(encode(Image.new("LA", (4, 4), (30, 255)))).getpixel((0, 0)) == (30, 30, 30)
    half = load_image(encode(Image.new("RGBA", (4, 4), (0, 0, 0, 128)))).getpixel((0, 0))
    assert all(abs(c - 127) <= 1 for c in half)
    assert load_image(encode(Image.new("1", (4, 4), 1))).getpixel((0, 0)) == (255, 255, 255)
    cmyk = encode(Image.new("CMYK", (4, 4), (0, 0, 0, 0)), "JPEG", quality=100)
    assert all(c >= 250 for c in load_image(cmyk).getpixel((0, 0)))
    assert load_image(Image.new("CMYK", (4, 4), (0, 255, 255, 0))).getpixel((0, 0)) == (255, 0, 0)


def test_16bit_grey_is_scaled_not_clipped() -> None:
    arr = np.array([[0, 257 * 100, 65535, 32896]], dtype=np.uint16)
    img = Image.fromarray(arr)
    out = load_image(encode(img))  # 16-bit PNG round trip
    assert [out.getpixel((x, 0))[0] for x in range(4)] == [0, 100, 255, 128]
    out_i = load_image(Image.fromarray(arr.astype(np.int32)))  # mode "I"
    assert [out_i.getpixel((x, 0))[0] for x in range(4)] == [0, 100, 255, 128]


def test_float_image() -> None:
    f01 = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert [load_image(f01).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    f255 = Image.fromarray(np.array([[0.0, 100.0, 300.0]], dtype=np.float32))
    assert [load_image(f255).getpixel((x, 0))[0] for x in range(3)] == [0, 100, 255]


# ------------------------------------------------------------------------------------------- EXIF


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_applied(tmp_path: Path, fmt: str) -> None:
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    path = tmp_path / f"rot.{fmt.lower()}"
    stored.save(path, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    out = load_image(path)
    assert out.size == (20, 40)
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # red on top
    assert bottom[2] > 200 and bottom[0] < 60  # blue at the bottom
    # an image without EXIF keeps its orientation
    assert load_image(encode(stored)).size == (40, 20)


# ------------------------------------------------------------------------------------ class images


def test_validate_class_image() -> None:
    validate_class_image(noise_rgb(32, 32))
    with pytest.raises(ImageError, match="empty/uniform"):
        validate_class_image(Image.new("RGB", (64, 64), (120, 30, 200)))
    nearly = np.full((64, 64, 3), 128, np.uint8)
    nearly[0, 0] = 129  # std ~ 0.02
    with pytest.raises(ImageError, match="empty/uniform"):
        validate_class_image(Image.fromarray(nearly))
    with pytest.raises(ImageError, match="too small"):
        validate_class_image(noise_rgb(5, 100))
    with pytest.raises(ImageError, match="too small"):
        validate_class_image(noise_rgb(40, 7))
    validate_class_image(noise_rgb(5, 100), min_side=4)
    # a transparent (white after compositing) class image is uniform
    with pytest.raises(ImageError, match="empty/uniform"):
        validate_class_image(load_image(np.zeros((32, 32, 4), np.uint8)))


# ----------------------------------------------------------------------------------- tensors, resize


def test_image_to_tensor() -> None:
    img = Image.new("RGB", (5, 3), (10, 20, 255))
    img.putpixel((4, 2), (0, 0, 0))
    t = image_to_tensor(img)
    assert t.shape == (3, 3, 5) and t.dtype == torch.float32 and t.is_contiguous()
    torch.testing.assert_close(t[:, 0, 0], torch.tensor([10, 20, 255]) / 255.0)
    assert t[:, 2, 4].tolist() == [0.0, 0.0, 0.0]
    assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0
    assert image_to_tensor(Image.new("L", (2, 2), 255)).shape == (3, 2, 2)
    with pytest.raises(TypeError):
        image_to_tensor(np.zeros((2, 2, 3), np.uint8))  # type: ignore[arg-type]


@pytest.mark.parametrize(("size", "side", "expected"), [
    ((100, 400), 240, (120, 480)),
    ((400, 100), 240, (480, 120)),
    ((50, 50), 240, (240, 240)),
    ((300, 200), 240, (293, 195)),
    ((1, 10000), 10, (1, 1000)),
    ((10000, 1), 10, (1000, 1)),
])
def test_resize_to_area_values(size: tuple[int, int], side: int, expected: tuple[int, int]) -> None:
    w, h = size
    # the OS2D formula, written out independently
    ratio = float(h) / w
    ref = (max(int(side / math.sqrt(ratio)), 1), max(int(side * math.sqrt(ratio)), 1))
    assert ref == expected
    assert size_after_resize_to_area(w, h, side) == expected
    assert resize_to_area(Image.new("RGB", size), side).size == expected


def test_resize_to_area_resample_and_errors() -> None:
    img = Image.new("RGB", (2, 2), (0, 0, 0))
    img.putpixel((0, 0), (255, 255, 255))
    nearest = np.asarray(resize_to_area(img, 20, resample=Image.Resampling.NEAREST))
    assert set(np.unique(nearest).tolist()) == {0, 255}
    bilinear = np.asarray(resize_to_area(img, 20))
    assert len(np.unique(bilinear)) > 2  # interpolated
    expected = np.asarray(img.resize((20, 20), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(bilinear, expected)
    with pytest.raises(ValueError):
        resize_to_area(img, 0)
    with pytest.raises(ImageError):
        size_after_resize_to_area(0, 5, 10)


def test_resize_to_scale() -> None:
    img = noise_rgb(101, 51)
    assert resize_to_scale(img, 0.5).size == (50, 25)
    assert resize_to_scale(img, 2.0).size == (202, 102)
    assert resize_to_scale(img, 1e-6).size == (1, 1)
    np.testing.assert_array_equal(np.asarray(resize_to_scale(img, 0.5)),
                                  np.asarray(img.resize((50, 25), Image.Resampling.BILINEAR)))
    with pytest.raises(ValueError):
        resize_to_scale(img, 0)
    with pytest.raises(ValueError):
        resize_to_scale(img, float("nan"))
