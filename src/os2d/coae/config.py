"""Typed configs of the CoAE baseline: :class:`CoaeHeadConfig` (the head, saved in the weights file) and
:class:`CoaeTrainConfig` (feature cache + head training, the command ``os2d train-coae``, saved in every checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from os2d.agnostic.config import section_to_dict
from os2d.data.spec import FL27_VAL_BRANDS


@dataclass(frozen=True)
class CoaeHeadConfig:
    """Co-attention + co-excitation + ranking head on RoI features of the frozen stride-16 trunk."""

    in_channels: int = 112  # trunk feature channels (EfficientNet-Lite0 stage 5)
    pool_size: int = 7  # RoIAlign output, pool_size x pool_size bins
    sampling: int = 2  # bilinear samples per bin side (RoIAlign's sampling ratio)
    attention_dim: int = 64  # key/query width of the non-local co-attention
    excitation_reduction: int = 4  # bottleneck of the co-excitation MLP (squeeze-and-excitation)
    hidden_channels: int = 128  # RoI conv tower width
    fc_dim: int = 256  # width of the ranking MLP
    query_size: int = 128  # class images are resized to query_size x query_size before the trunk
    target_object_size: float = 192.0  # at test time each proposal is pooled at the pyramid level closest to this size (px)
    stride: int = 16  # feature stride in input pixels

    def __post_init__(self) -> None:
        if min(self.in_channels, self.pool_size, self.sampling, self.attention_dim, self.excitation_reduction,
               self.hidden_channels, self.fc_dim) < 1:
            raise ValueError("CoaeHeadConfig: every size must be >= 1")
        if self.query_size < 32 or not self.target_object_size > 0 or self.stride < 1:
            raise ValueError("query_size must be >= 32, target_object_size > 0 and stride >= 1")


@dataclass(frozen=True)
class CoaeTrainConfig:
    """``os2d train-coae``: cache frozen trunk features of labelled training images once, then train the head.

    Box CSVs have the columns ``image,class,x1,y1,x2,y2`` (pixels), class CSVs ``class,class_image[,...]``; paths
    relative to each CSV's folder. ``box_csvs[i]`` goes with ``class_csvs[i]`` (a negative query is drawn from the
    classes of the same CSV). Every image with a box of ``exclude_classes`` is dropped entirely (by default the 6
    FL27 validation brands: the held-out table stays held out).
    """

    box_csvs: tuple[str, ...] = ()
    class_csvs: tuple[str, ...] = ()
    output_dir: str = ""  # run folder: cache/, checkpoint.pt, coae.pt
    weights: str = "default"  # the os2d weights whose (frozen) trunk gives the features
    detector: str = ""  # class-agnostic detector file (os2d train-detector) for the proposals; "" = the packaged one
    exclude_classes: tuple[str, ...] = FL27_VAL_BRANDS
    object_sizes: tuple[float, ...] = (128.0, 288.0)  # cached levels: the image's median box brought to these sizes
    level_side_range: tuple[int, int] = (320, 1024)  # sqrt(w*h) of a cached level is clipped into this range
    proposals_per_level: int = 100  # agnostic proposals kept per cached level (after NMS at 0.5)
    steps: int = 3000
    batch_size: int = 8  # (image level, query class) samples per step
    rois_per_sample: int = 48
    positive_fraction: float = 0.25  # at most this share of a sample's RoIs are positives
    positive_iou: float = 0.5  # RoI labelled positive at IoU >= this with a box of the query's class
    negative_iou: float = 0.4  # ... negative below this (boxes of other classes are negatives: look-alikes)
    absent_query_fraction: float = 0.25  # samples whose query class is absent from the image (all RoIs negative)
    lr: float = 1e-3  # AdamW, cosine decay to 0
    weight_decay: float = 1e-4
    box_loss_weight: float = 1.0  # smooth-L1 box refinement of positives
    rank_loss_weight: float = 1.0  # CoAE's margin-based ranking loss
    rank_margin: float = 0.3
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 250
    head: CoaeHeadConfig = field(default_factory=CoaeHeadConfig)

    def __post_init__(self) -> None:
        if len(self.box_csvs) != len(self.class_csvs):
            raise ValueError(f"box_csvs ({len(self.box_csvs)}) and class_csvs ({len(self.class_csvs)}) must pair up")
        if not self.object_sizes or any(s <= 0 for s in self.object_sizes):
            raise ValueError(f"object_sizes must be positive, got {self.object_sizes}")
        lo, hi = self.level_side_range
        if not 32 <= lo <= hi:
            raise ValueError(f"level_side_range must be (lo, hi) with 32 <= lo <= hi, got {self.level_side_range}")
        if min(self.steps + 1, self.batch_size, self.rois_per_sample, self.proposals_per_level, self.threads,
               self.checkpoint_every) < 1 or self.lr <= 0:
            raise ValueError("steps >= 0, batch_size, rois_per_sample, proposals_per_level, threads, "
                             "checkpoint_every >= 1 and lr > 0 are required")
        if not 0 < self.positive_fraction <= 1 or not 0 <= self.absent_query_fraction < 1:
            raise ValueError("positive_fraction must be in (0, 1], absent_query_fraction in [0, 1)")
        if not 0 < self.negative_iou <= self.positive_iou <= 1:
            raise ValueError("need 0 < negative_iou <= positive_iou <= 1")

    def replace(self, **changes: Any) -> CoaeTrainConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return section_to_dict(self)


__all__ = ["CoaeHeadConfig", "CoaeTrainConfig"]
