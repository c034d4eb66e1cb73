"""Typed configs of the class-agnostic detector + retrieval baseline (paper Sec. 6.2, "main baseline").

Three frozen sections: :class:`HeadConfig` (the dense objectness head on the frozen trunk's stride-16
features), :class:`RetrievalConfig` (GeM embeddings of box crops and class images) and
:class:`DetectorTrainConfig` (feature cache + head training, the command ``os2d train-detector``). The head and
retrieval sections are saved inside the detector weights file, the whole training config inside every
training checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, replace
from typing import Any

from os2d.data.spec import FL27_VAL_BRANDS


@dataclass(frozen=True)
class HeadConfig:
    """The dense class-agnostic head (FCOS-like, anchor-free, one stride-16 level)."""

    in_channels: int = 112  # trunk feature channels (EfficientNet-Lite0 stage 5)
    hidden_channels: int = 96  # width of the shared 3x3 convolutions
    dilations: tuple[int, ...] = (1, 2, 3)  # one 3x3 conv + GroupNorm + ReLU per entry (receptive field)
    center_radius: float = 1.5  # positive cells: centre within this many cells of a box centre (FCOS sampling)
    stride: int = 16  # feature stride in input pixels

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.hidden_channels < 1 or self.hidden_channels % 8:
            raise ValueError("in_channels must be >= 1 and hidden_channels a positive multiple of 8 (GroupNorm)")
        if not self.dilations or any(d < 1 for d in self.dilations):
            raise ValueError(f"dilations must be a non-empty list of positive ints, got {self.dilations}")
        if not self.center_radius > 0 or self.stride < 1:
            raise ValueError("center_radius must be > 0 and stride >= 1")


@dataclass(frozen=True)
class RetrievalConfig:
    """Proposals -> crops -> GeM embeddings -> cosine ranking against the class images."""

    crop_size: int = 128  # box crops and class images are resized to crop_size x crop_size (fixed area)
    gem_p: float = 3.0  # generalised-mean pooling exponent (Radenovic et al.): 1 = average, inf = max
    gem_signed: bool = True  # pool the positive and negative parts apart (2C dims): the trunk's output is signed
    num_proposals: int = 100  # class-agnostic boxes kept per image (after their NMS) and embedded
    proposal_nms_iou: float = 0.5  # class-agnostic NMS of the proposals over all pyramid levels
    objectness_weight: float = 0.0  # score = cosine * objectness ** objectness_weight (0: cosine only)
    use_whitening: bool = False  # apply the PCA whitening stored with the detector (it lost 6 mAP on the tuning sets)

    def __post_init__(self) -> None:
        if self.crop_size < 16 or self.num_proposals < 1:
            raise ValueError("crop_size must be >= 16 and num_proposals >= 1")
        if not (self.gem_p >= 1 and math.isfinite(self.gem_p)):
            raise ValueError(f"gem_p must be a finite number >= 1, got {self.gem_p}")
        if not 0 <= self.proposal_nms_iou <= 1 or not self.objectness_weight >= 0:
            raise ValueError("proposal_nms_iou must be in [0, 1] and objectness_weight >= 0")


@dataclass(frozen=True)
class DetectorTrainConfig:
    """``os2d train-detector``: cache frozen trunk features once, then train only the head for many epochs.

    Box CSVs have the columns ``image,class,x1,y1,x2,y2`` (pixels); image paths are relative to the CSV's folder
    unless absolute. Every image with a box of ``exclude_classes`` is dropped entirely (by default the 6 FL27
    validation brands, so the held-out table stays held out).
    """

    box_csvs: tuple[str, ...] = ()  # training boxes (FL27 dev + `os2d synth` annotations.csv)
    output_dir: str = ""  # run folder: cache/, checkpoints, detector.pt
    weights: str = "default"  # the os2d weights whose (frozen) trunk gives the features
    exclude_classes: tuple[str, ...] = FL27_VAL_BRANDS  # images showing any of these are never used
    object_sizes: tuple[float, ...] = (128.0, 288.0)  # each image is cached at levels where its median box has these sizes (px)
    level_side_range: tuple[int, int] = (320, 1024)  # sqrt(w*h) of a cached level is clipped into this range
    crop_cells: int = 32  # training crops of the cached maps, crop_cells x crop_cells cells
    epochs: int = 24
    batch_size: int = 16  # crops per step
    lr: float = 2e-3  # AdamW, cosine decay to 0
    weight_decay: float = 1e-4
    focal_alpha: float = 0.25  # focal loss of the objectness (FCOS / RetinaNet)
    focal_gamma: float = 2.0
    box_loss_weight: float = 1.0  # GIoU loss weight (the objectness focal loss has weight 1)
    center_loss_weight: float = 1.0  # centre-ness BCE weight
    whitening_crops: int = 2000  # training box crops for the PCA whitening (0: no whitening)
    whitening_shrinkage: float = 0.1  # eigenvalues + shrinkage * mean eigenvalue before the inverse sqrt
    seed: int = 0
    threads: int = 1  # torch CPU threads of the training process
    head: HeadConfig = field(default_factory=HeadConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)

    def __post_init__(self) -> None:
        if not self.object_sizes or any(s <= 0 for s in self.object_sizes):
            raise ValueError(f"object_sizes must be positive, got {self.object_sizes}")
        lo, hi = self.level_side_range
        if not 32 <= lo <= hi:
            raise ValueError(f"level_side_range must be (lo, hi) with 32 <= lo <= hi, got {self.level_side_range}")
        if self.crop_cells < 4 or self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("crop_cells >= 4, epochs >= 0, batch_size >= 1 and lr > 0 are required")
        if self.whitening_crops < 0 or self.whitening_shrinkage < 0 or self.threads < 1:
            raise ValueError("whitening_crops, whitening_shrinkage must be >= 0 and threads >= 1")

    def replace(self, **changes: Any) -> DetectorTrainConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return section_to_dict(self)


def section_to_dict(section: Any) -> dict[str, Any]:
    """A config (nested sections too) -> plain dict, tuples as lists (YAML/JSON/torch.save-safe)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        v = getattr(section, f.name)
        out[f.name] = section_to_dict(v) if dataclasses.is_dataclass(v) else (list(v) if isinstance(v, tuple) else v)
    return out


def section_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Inverse of :func:`section_to_dict` for a flat section (:class:`HeadConfig`, :class:`RetrievalConfig`):
    lists become tuples; an unknown key raises ``ValueError`` naming it."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {unknown}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


__all__ = ["DetectorTrainConfig", "HeadConfig", "RetrievalConfig", "section_from_dict", "section_to_dict"]
