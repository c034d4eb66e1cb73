"""Upload sniffing of the service (os2d.apps.service.uploads): one magic-byte table for the check and the suffix."""

from __future__ import annotations

import io

import pytest

pytest.importorskip("fastapi")

from PIL import Image  # noqa: E402

from os2d.apps.service.uploads import image_suffix, sniff_image  # noqa: E402


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("GIF", ".gif"), ("BMP", ".bmp"),
                                         ("TIFF", ".tif"), ("WEBP", ".webp")])
def test_real_images_are_sniffed_with_their_suffix(fmt, suffix):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format=fmt)
    data = buf.getvalue()
    assert image_suffix(data) == suffix and sniff_image(data)


@pytest.mark.parametrize("data", [b"", b"not an image", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"GIF8", b"xxxxxxxxWEBP"])
def test_other_bytes_are_not_images(data):
    assert image_suffix(data) is None and not sniff_image(data)
