"""Typed, frozen configuration of TransformNet pretraining on synthetic affine warps of real photos."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class WarpConfig:
    """Distribution of the random affine warps and of the crops that play the class image.

    The warp maps class-image pixels to input-canvas pixels: ``A = R(rotation) Sh(shear) diag(s a, s / a)``
    about the class-image centre, then a translation to the object's place on the canvas. ``s = 1`` puts
    the object at the anchor's area (the class image is resized to area ``class_image_size ** 2``).
    """

    scale_range: tuple[float, float] = (0.65, 1.5)  # s, log-uniform
    max_aspect: float = 1.25  # a, log-uniform in [1/max_aspect, max_aspect]
    max_rotation_deg: float = 15.0  # uniform in [-r, r]
    max_shear: float = 0.15  # x-shear, uniform in [-m, m]
    crop_area_range: tuple[float, float] = (0.25, 0.7)  # class crop area as a fraction of the photo's
    max_crop_aspect: float = 2.0  # crop w/h log-uniform in [1/m, m]
    centre_jitter_px: float = 8.0  # object centre offset from the centre location, uniform in [-j, j]
    brightness: float = 0.2  # input canvas photometric jitter: factor 1 + U(-b, b)
    contrast: float = 0.2
    saturation: float = 0.25
    noise_std: float = 0.02  # max std of additive Gaussian noise (uniform in [0, noise_std])

    def __post_init__(self) -> None:
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be 0 < lo <= hi, got {self.scale_range}")
        a_lo, a_hi = self.crop_area_range
        if not 0 < a_lo <= a_hi <= 1:
            raise ValueError(f"crop_area_range must be 0 < lo <= hi <= 1, got {self.crop_area_range}")
        if self.max_aspect < 1 or self.max_crop_aspect < 1:
            raise ValueError("max_aspect and max_crop_aspect must be >= 1")
        if not 0 <= self.max_rotation_deg < 90:
            raise ValueError("max_rotation_deg must be in [0, 90)")
        for name in ("max_shear", "centre_jitter_px", "brightness", "contrast", "saturation", "noise_std"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")


@dataclass(frozen=True)
class PretrainConfig:
    """Everything of one pretraining run except the model (its :class:`os2d.config.ModelConfig` is saved too).

    Pairs: each of ``num_pairs`` training samples is a (class crop, warped canvas) pair; ``warps_per_crop``
    canvases share one crop (its features are computed once). The TransformNet is supervised at the
    ``(2 * supervise_radius + 1) ** 2`` locations around the object centre, each with its own true transform.
    """

    warp: WarpConfig = WarpConfig()
    canvas_size: int = 352  # input canvas side in pixels (efficientnet-lite: 23 x 23 feature map)
    supervise_radius: int = 2  # supervised locations: centre +- radius in both axes
    num_pairs: int = 6000
    eval_pairs: int = 400
    warps_per_crop: int = 2
    shard_size: int = 250  # pairs per cached file (resumable feature extraction)
    epochs: int = 6
    batch_size: int = 32
    lr: float = 5e-4
    min_lr_ratio: float = 0.05  # cosine decay to lr * min_lr_ratio
    weight_decay: float = 0.0
    grad_clip: float = 5.0  # max gradient norm (0 = off); a near-singular predicted matrix must not blow up
    checkpoint_every: int = 50  # optimizer steps
    seed: int = 0

    def __post_init__(self) -> None:
        if self.canvas_size < 64:
            raise ValueError("canvas_size must be at least 64 pixels")
        if self.supervise_radius < 0:
            raise ValueError("supervise_radius must be >= 0")
        for name in ("num_pairs", "warps_per_crop", "shard_size", "epochs", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_pairs < 0:
            raise ValueError("eval_pairs must be >= 0")
        if not (self.lr > 0 and 0 <= self.min_lr_ratio <= 1 and self.weight_decay >= 0 and self.grad_clip >= 0):
            raise ValueError("need lr > 0, 0 <= min_lr_ratio <= 1, weight_decay >= 0, grad_clip >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        d = dict(d)
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown pretrain config keys: {sorted(unknown)}")
        warp = d.pop("warp", None)
        if isinstance(warp, dict):
            warp_names = {f.name for f in fields(WarpConfig)}
            bad = set(warp) - warp_names
            if bad:
                raise ValueError(f"unknown warp config keys: {sorted(bad)}")
            warp = WarpConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in warp.items()})
        return cls(warp=warp or WarpConfig(), **d)
