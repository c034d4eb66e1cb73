"""Checks of a class picture (an "exemplar") when it is added: warnings, never refusals.

A class picture the detector cannot use well still works, but detects worse; the user should know why:

* ``small``: the picture is upscaled more than :data:`MAX_UPSCALE` times to the model's class-image area
  (``class_image_size``^2 = 240^2 px): details are invented by interpolation.
* ``blurred``: blurring it further by a Gaussian of sigma 1.5 px (at the model's class-image size) keeps more than
  :data:`BLUR_RATIO` of its Laplacian variance, i.e. it has little fine detail left. Measured on the class
  pictures in ``../shared/data`` (102 FlickrLogos-27 crops, Grocery Store iconic images, the OS2D demo): at most
  0.10; the same pictures blurred by a Gaussian of radius 2-3 px: 0.19-0.48.
* ``background``: less than :data:`MIN_FOREGROUND` of the picture differs clearly from the colour of its border
  (a small product on a large plain background: crop it). The real pictures above: at least 7%.
* ``duplicate``: its class grid is nearly the grid of another class in the gallery (mean cosine of the 15 x 15
  cells of the original views at least :data:`DUPLICATE_SIMILARITY`): the detector will confuse the two. Among
  the distinct classes above the most similar pair (two Tropicana juices) scored 0.87, the median pair 0.31;
  the same picture rescaled, cropped or rotated by 5 degrees: 0.89-1.0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import Tensor

MAX_UPSCALE = 3.0
BLUR_RATIO = 0.2
MIN_FOREGROUND = 0.05
DUPLICATE_SIMILARITY = 0.85


@dataclass(frozen=True)
class ExemplarWarning:
    """One warning about a class picture: ``kind`` (small, blurred, background, duplicate) and a sentence."""

    kind: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


def _laplacian_variance(grey: np.ndarray) -> float:
    lap = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return float(lap.var())


def sharpness_ratio(img: Image.Image, class_image_size: int = 240) -> float:
    """Laplacian variance after / before a Gaussian blur of sigma 1.5 px, at area ``class_image_size``^2
    (near 0: sharp; near 1: already blurred)."""
    grey = img.convert("L")
    w, h = grey.size
    s = (class_image_size**2 / (w * h)) ** 0.5
    grey = grey.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.BILINEAR)
    before = _laplacian_variance(np.asarray(grey, np.float64))
    after = _laplacian_variance(np.asarray(grey.filter(ImageFilter.GaussianBlur(1.5)), np.float64))
    return after / before if before > 1e-9 else 1.0


def foreground_fraction(img: Image.Image) -> float:
    """Share of pixels (on a 120 x 120 thumbnail) whose colour differs from the border's median by more than 40
    grey levels in some channel."""
    rgb = np.asarray(img.convert("RGB").resize((120, 120), Image.Resampling.BILINEAR), np.float64)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    diff = np.abs(rgb - np.median(border, axis=0)).max(axis=-1)
    return float((diff > 40).mean())


def image_warnings(img: Image.Image, class_image_size: int = 240) -> list[ExemplarWarning]:
    """Warnings about one class picture on its own (size, blur, background)."""
    out = []
    w, h = img.size
    upscale = class_image_size / (w * h) ** 0.5
    if upscale > MAX_UPSCALE:
        out.append(ExemplarWarning("small", f"the picture is small ({w}x{h} px): it is upscaled {upscale:.1f}x to "
                                            f"the model's {class_image_size}x{class_image_size} px area; use a "
                                            "larger picture"))
    ratio = sharpness_ratio(img, class_image_size)
    if ratio > BLUR_RATIO:
        out.append(ExemplarWarning("blurred", f"the picture looks blurred (sharpness ratio {ratio:.2f} > "
                                              f"{BLUR_RATIO}); use a sharper one"))
    fg = foreground_fraction(img)
    if fg < MIN_FOREGROUND:
        out.append(ExemplarWarning("background", f"the picture is mostly background (object on {100 * fg:.1f}% of "
                                                 "it); crop it to the object"))
    return out


def grid_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Mean cosine of corresponding cells: a (A, S*S, C), b (B, S*S, C) normalised kernels -> (A, B)."""
    return torch.einsum("acd,bcd->ab", a, b) / a.shape[1]


def duplicate_warnings(name: str, kernels: Tensor, others: Tensor, other_names: list[str]) -> list[ExemplarWarning]:
    """Warn when the new views' ``kernels`` (V, S*S, C) nearly equal views of another class.

    Args:
        others: (W, S*S, C) the gallery's views of other classes; ``other_names`` (W,) their class names.
    """
    if kernels.numel() == 0 or others.numel() == 0:
        return []
    sim = grid_similarity(kernels.float(), others.float()).amax(dim=0)  # (W,) best over the new views
    best: dict[str, float] = {}
    for other, s in zip(other_names, sim.tolist(), strict=True):
        if other != name and s >= DUPLICATE_SIMILARITY:
            best[other] = max(best.get(other, 0.0), s)
    return [ExemplarWarning("duplicate", f"nearly identical to class {other!r} (similarity {s:.2f} >= "
                                         f"{DUPLICATE_SIMILARITY}): the detector may confuse them")
            for other, s in sorted(best.items(), key=lambda kv: -kv[1])]


__all__ = ["ExemplarWarning", "duplicate_warnings", "foreground_fraction", "grid_similarity", "image_warnings",
           "sharpness_ratio"]
