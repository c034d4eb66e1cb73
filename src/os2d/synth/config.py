"""Typed, frozen configuration of the synthetic one-shot detection data generator."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

_RANGES = ("aspect_range", "shelf_rows", "facings", "scatter_objects", "object_size", "classes_per_image",
           "product_height", "jpeg_quality", "occluder_cover")


@dataclass(frozen=True)
class SynthConfig:
    """How scenes are composed. Ranges are ``(low, high)``, sampled uniformly (integers inclusive).

    A scene is a real background photo with either dense shelf rows (runs of facings of one product side by
    side, neighbours from other classes and unannotated look-alikes) or a scatter of objects that may overlap.
    Every pasted class image is annotated; look-alikes (colour-shifted class images, patches of other photos)
    are not. With ``variant_prob`` > 0, classes also get *variant classes*: the same package with one band
    changed (another product's band, or recoloured), labelled as a class of their own and placed in the same
    scenes as their base class, the look-alikes a detector must tell apart. An instance occluded (or cut by the image border) by more than ``difficult_occlusion`` of its
    area, or smaller than ``min_box_px``, is marked difficult.
    """

    image_size: int = 1024  # longer side of the generated images, pixels
    aspect_range: tuple[float, float] = (0.75, 1.34)  # image width / height
    shelf_prob: float = 0.6  # share of shelf scenes (the rest: scattered objects)
    shelf_rows: tuple[int, int] = (1, 4)  # rows of a shelf scene (partial rows at the borders come on top)
    facings: tuple[int, int] = (1, 5)  # side-by-side copies of one product in a run
    product_height: tuple[float, float] = (0.6, 0.9)  # product height / shelf row height
    scatter_objects: tuple[int, int] = (3, 10)
    object_size: tuple[float, float] = (0.08, 0.35)  # scatter: sqrt(object area) / sqrt(image area)
    classes_per_image: tuple[int, int] = (1, 4)  # annotated classes used in one scene
    lookalike_prob: float = 0.3  # share of products that are unannotated look-alikes
    variant_prob: float = 0.0  # share of classes that get a labelled variant class (a band of the package changed)
    max_yaw_deg: float = 35.0
    max_pitch_deg: float = 20.0
    max_roll_deg: float = 20.0  # scatter; shelves use a fifth of it
    flip_prob: float = 0.15  # horizontally mirrored instance (still annotated as its class)
    blur_prob: float = 0.3
    max_blur_px: float = 1.5
    max_noise_std: float = 6.0  # additive Gaussian noise on the whole image, 0-255 scale
    colour_jitter: float = 0.25  # brightness / contrast / saturation factors in 1 +- jitter
    lighting: float = 0.25  # a linear light ramp across the image: factor 1 +- lighting
    occluder_prob: float = 0.4  # chance of each of up to 3 occluders per image
    occluder_cover: tuple[float, float] = (0.2, 0.75)  # share of the target instance an occluder covers
    difficult_occlusion: float = 0.5
    min_box_px: float = 8.0
    feather_px: float = 1.0  # Gaussian radius of the alpha edge
    jpeg_quality: tuple[int, int] = (80, 95)

    def __post_init__(self) -> None:
        for name in _RANGES:
            lo, hi = getattr(self, name)
            if not (lo <= hi):
                raise ValueError(f"{name} must be (low, high) with low <= high, got {getattr(self, name)}")
            object.__setattr__(self, name, (lo, hi))
        if self.image_size < 64:
            raise ValueError("image_size must be at least 64")
        if self.aspect_range[0] <= 0 or self.object_size[0] <= 0 or self.product_height[0] <= 0:
            raise ValueError("aspect_range, object_size and product_height must be positive")
        if self.product_height[1] > 1 or self.object_size[1] > 1:
            raise ValueError("product_height and object_size are fractions (<= 1)")
        if min(self.shelf_rows[0], self.facings[0], self.scatter_objects[0], self.classes_per_image[0]) < 1:
            raise ValueError("shelf_rows, facings, scatter_objects and classes_per_image must be >= 1")
        for name in ("shelf_prob", "lookalike_prob", "variant_prob", "flip_prob", "blur_prob", "occluder_prob",
                     "difficult_occlusion"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("max_yaw_deg", "max_pitch_deg", "max_roll_deg"):
            if not 0.0 <= getattr(self, name) < 70.0:
                raise ValueError(f"{name} must be in [0, 70) degrees")
        for name in ("max_blur_px", "max_noise_std", "colour_jitter", "lighting", "min_box_px", "feather_px"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if self.colour_jitter >= 1 or self.lighting >= 1:
            raise ValueError("colour_jitter and lighting must be < 1")
        if not (1 <= self.jpeg_quality[0] and self.jpeg_quality[1] <= 100):
            raise ValueError("jpeg_quality must be within 1..100")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SynthConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown synth config keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
