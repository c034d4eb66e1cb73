"""Typed, frozen configuration of the model and of inference. Every hyperparameter lives here with its default."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Reference eval pyramid (eval.scales_of_image_pyramid).
REFERENCE_PYRAMID = (0.5, 0.625, 0.8, 1.0, 1.2, 1.4, 1.6)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an OS2D model.

    V2 (paper's best): full affine, 6 parameters, inverted (weakalign convention). V1: scale+translation,
    4 parameters, used directly.
    """

    backbone: str = "efficientnet_lite0"  # resnet50 | resnet101 | efficientnet_lite0 | efficientnet_lite2
    num_transform_params: int = 6  # 6 = full affine (V2), 4 = scale + translation (V1)
    invert_transform: bool = True  # V2 inverts the regressed matrix; V1 does not
    class_image_size: int = 240  # class images resized to area class_image_size^2
    class_grid_size: int = 15  # class feature maps resized to S x S
    pool_border: int = 2  # border cells dropped when pooling the resampled correlation
    anchor_size: float = 240.0  # stride * (S - 1) + 16
    frozen_bn: bool = True  # backbone BatchNorm in eval mode during training
    frozen_bn_transform: bool = True  # TransformNet BatchNorm in eval mode during training (V2: True)

    def __post_init__(self) -> None:
        if self.num_transform_params not in (4, 6):
            raise ValueError("num_transform_params must be 4 (V1) or 6 (V2)")
        if self.class_grid_size < 2 * self.pool_border + 1:
            raise ValueError("class_grid_size too small for pool_border")
        if self.class_image_size < 16:
            raise ValueError("class_image_size must be at least 16 pixels")

    @property
    def variant(self) -> str:
        return "v2" if self.num_transform_params == 6 else "v1"

    @classmethod
    def v1(cls, backbone: str = "resnet101", **kw: Any) -> ModelConfig:
        return cls(backbone=backbone, num_transform_params=4, invert_transform=False, frozen_bn_transform=False, **kw)

    @classmethod
    def v2(cls, backbone: str = "resnet50", **kw: Any) -> ModelConfig:
        return cls(backbone=backbone, num_transform_params=6, invert_transform=True, **kw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class InferenceConfig:
    """How detections are produced from a model.

    ``image_size``: the input is first resized so that sqrt(w*h) = image_size (None: keep the original size);
    each pyramid level then scales that by one of ``scales``. Boxes are always reported in original pixels.
    """

    image_size: int | None = 1024  # sqrt(w*h) of pyramid level 1.0 (reference demo: 1500)
    scales: tuple[float, ...] = (1.0,)  # pyramid levels; REFERENCE_PYRAMID for the full evaluation setting
    nms_iou_threshold: float = 0.3
    score_threshold: float | None = None  # None keeps every box (reference: -inf)
    max_detections: int | None = 100  # per image after NMS; None = all
    pre_nms_top_k: int | None = 4000  # best boxes kept per class view and level before NMS (None = all, as the reference)
    rotations: bool = False  # add class views rotated by 90/180/270 degrees
    horizontal_flip: bool = False  # add horizontally flipped class views
    nms_across_classes: bool = False
    class_chunk: int = 16  # class views per head batch (memory bound)
    shortlist_top_k: int | None = None  # run the heads only for the K classes ranked best by os2d.inference.shortlist

    def __post_init__(self) -> None:
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"pyramid scales must be positive, got {self.scales}")
        if not 0.0 <= self.nms_iou_threshold <= 1.0:
            raise ValueError("nms_iou_threshold must be in [0, 1]")
        if self.image_size is not None and self.image_size < 16:
            raise ValueError("image_size must be at least 16")
        if self.max_detections is not None and self.max_detections < 0:
            raise ValueError("max_detections must be >= 0")
        if self.shortlist_top_k is not None and self.shortlist_top_k < 1:
            raise ValueError(f"shortlist_top_k must be >= 1 or None, got {self.shortlist_top_k}")
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))

    def replace(self, **changes: Any) -> InferenceConfig:
        """A copy with the given fields changed (``None`` is a value: e.g. ``image_size=None`` keeps sizes)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown inference options: {sorted(unknown)}")
        d = asdict(self)
        d.update(changes)
        return InferenceConfig(**d)


__all__ = ["ModelConfig", "InferenceConfig", "REFERENCE_PYRAMID", "field"]
