"""Photometric augmentations of pasted objects and of whole scenes (PIL + numpy; every draw from an ``rng``)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter


def _split_alpha(img: Image.Image) -> tuple[Image.Image, Image.Image]:
    rgba = img.convert("RGBA")
    return rgba.convert("RGB"), rgba.getchannel("A")


def jitter_colour(img: Image.Image, rng: np.random.Generator, amount: float) -> Image.Image:
    """Brightness, contrast and saturation factors in ``1 +- amount`` (RGBA in, RGBA out; alpha kept)."""
    rgb, alpha = _split_alpha(img)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        rgb = enhancer(rgb).enhance(1.0 + rng.uniform(-amount, amount))
    out = rgb.convert("RGBA")
    out.putalpha(alpha)
    return out


def shift_hue(img: Image.Image, degrees: float) -> Image.Image:
    """Rotate the hue of every pixel (RGBA in, RGBA out)."""
    rgb, alpha = _split_alpha(img)
    hsv = np.array(rgb.convert("HSV"), dtype=np.int32)
    hsv[..., 0] = (hsv[..., 0] + int(round(degrees / 360.0 * 256))) % 256
    out = Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB").convert("RGBA")
    out.putalpha(alpha)
    return out


def lookalike(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A different-looking sibling of a product: same layout, other colours (hue rotated by 70-290 degrees,
    sometimes with colour channels permuted). Used as an unannotated distractor."""
    out = shift_hue(img, rng.uniform(70.0, 290.0))
    if rng.random() < 0.3:
        rgb, alpha = _split_alpha(out)
        arr = np.asarray(rgb)[..., rng.permutation(3)]
        out = Image.fromarray(np.ascontiguousarray(arr)).convert("RGBA")
        out.putalpha(alpha)
    return out


def variant(img: Image.Image, donor: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A labelled sibling of a product (another flavour or size of one package): a horizontal band of 20-40% of
    its height, between 15% and 85% of it, replaced by the same band of ``donor`` (resized to the product; the
    flavour picture / text of another product) or, half of the time, recoloured (hue rotated by 60-300 degrees).
    RGBA in, RGBA out; the alpha channel (the package's outline) is kept."""
    rgb, alpha = _split_alpha(img)
    w, h = rgb.size
    band = max(1, round(rng.uniform(0.2, 0.4) * h))
    top = int(rng.integers(round(0.15 * h), max(round(0.15 * h) + 1, round(0.85 * h) - band + 1)))
    box = (0, top, w, min(h, top + band))
    if rng.random() < 0.5:
        patch = donor.convert("RGB").resize((w, h), Image.BILINEAR).crop(box)
    else:
        patch = shift_hue(rgb.crop(box).convert("RGBA"), rng.uniform(60.0, 300.0)).convert("RGB")
    out = rgb.copy()
    out.paste(patch, box[:2])
    out = out.convert("RGBA")
    out.putalpha(alpha)
    return out


def blur(img: Image.Image, radius: float) -> Image.Image:
    """Gaussian blur (defocus) of any mode."""
    return img.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else img


def light_ramp(canvas: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Multiply an (H, W, 3) float image by a linear ramp ``1 +- amount`` in a random direction."""
    h, w = canvas.shape[:2]
    angle = rng.uniform(0.0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (np.cos(angle) * (xs / max(w - 1, 1) - 0.5) + np.sin(angle) * (ys / max(h - 1, 1) - 0.5))  # in [-0.71, 0.71]
    gain = 1.0 + rng.uniform(-amount, amount) * t / 0.71 + rng.uniform(-amount, amount) * 0.5
    return canvas * gain[..., None]


def add_noise(canvas: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    """Additive Gaussian noise (0-255 scale)."""
    return canvas + rng.normal(0.0, std, canvas.shape).astype(np.float32) if std > 0 else canvas
