"""Typed, frozen configuration of the model and of inference. Every hyperparameter lives here with its default."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

# The most pixels an input image, and so a pyramid level, may have (decompression-bomb guard of os2d.io; a
# 10000 x 10000 level already needs tens of GB for the backbone features).
MAX_IMAGE_PIXELS = 100_000_000

# Reference eval pyramid (eval.scales_of_image_pyramid).
REFERENCE_PYRAMID = (0.5, 0.625, 0.8, 1.0, 1.2, 1.4, 1.6)

# Every class view at six fixed levels, sqrt(w*h) 384, 543, 768, 1086, 1536 and 2048 (the automatic scale's ladder
# from 384 up) instead of the one or two levels the automatic scale picks per view: ``InferenceConfig(image_size=
# ALL_LEVELS_SIZE, scales=ALL_LEVELS_SCALES)``, ``--all-levels``. More recall at 2.4-4.4x the time (README,
# "Automatic scale, what the levels leave").
ALL_LEVELS_SIZE = 768
ALL_LEVELS_SCALES = (0.5, 0.7071, 1.0, 1.4142, 2.0, 2.6667)


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
    # The anchor grid takes the class image's aspect ratio r = w / h: its width scales by r^(p/2), its height by
    # r^(-p/2) (area kept, r clamped to [1/4, 4]). 0 = the paper's square anchor (official weights); 1 = the class's
    # own aspect ratio (os2d.model.grids.stretch_to_aspect)
    anchor_aspect_power: float = 0.0

    def __post_init__(self) -> None:
        if self.num_transform_params not in (4, 6):
            raise ValueError("num_transform_params must be 4 (V1) or 6 (V2)")
        if self.class_grid_size < 2 * self.pool_border + 1:
            raise ValueError("class_grid_size too small for pool_border")
        if self.class_image_size < 16:
            raise ValueError("class_image_size must be at least 16 pixels")
        if not 0.0 <= self.anchor_aspect_power <= 1.0:
            raise ValueError(f"anchor_aspect_power must be in [0, 1], got {self.anchor_aspect_power}")

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
        """The fields; ``anchor_aspect_power`` only when it is not 0, so the files and fingerprints of models made
        before it existed stay the same."""
        d = asdict(self)
        if d["anchor_aspect_power"] == 0:
            del d["anchor_aspect_power"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


HEADS_PRECISIONS = ("fp32", "int8", "int8-exact")  # InferenceConfig.heads_precision (os2d.model.int8_transform)
BACKBONE_PRECISIONS = ("fp32", "bf16")  # InferenceConfig.trunk_precision and verify_precision (os2d.model.trunk_precision)
AUTO = "auto"  # InferenceConfig.image_size: levels chosen per image and class view (os2d.inference.autoscale)


@dataclass(frozen=True)
class AutoScaleConfig:
    """The probe that picks pyramid levels when ``InferenceConfig.image_size == "auto"``.

    See :mod:`os2d.inference.autoscale`; the defaults were fixed on the FlickrLogos-27 training brands and
    synthetic shelves (README model card), never on the held-out sets; the close-up settings (templates of 28 and 40
    cells, ``min_size`` 256, ``size_prior``, ``pool_above``) by recipes/autoscale_closeups on five tuning sets;
    ``hedge`` by recipes/autoscale_hedge on seven; ``floor_level`` and ``floor_fill`` by recipes/autoscale_floor on
    eight; ``rescue_confidence`` by recipes/autoscale_rescue on eight.
    """

    probe_size: int = 768  # sqrt(w*h) of the probe level
    template_cells: tuple[int, ...] = (4, 5, 7, 10, 14, 20, 28, 40)  # template sides tried on the probe (cells)
    ratio: float = 1.0  # multiplies the image size at which an object would fill the class grid
    level_step: float = 2.0**0.5  # levels are probe_size * level_step^k ...
    min_size: int = 256  # ... with sqrt(w*h) in [min_size, max_size]
    max_size: int = 2048
    max_levels: int = 2  # heads run on at most this many levels per image
    weak_margin: float = 0.1  # views whose probe score is this far below the best view's go to the main level
    template_aspect_power: float = 0.0  # templates take the class image's aspect ratio^p (area kept); 0: square
    size_prior: float = 0.06  # the template picked maximises score + size_prior * ln(cells) (small ones peak higher)
    pool_above: int = 20  # templates of more cells than this slide over 2x2-pooled features at half the side
    prior_strength: bool = False  # a view's strength (weak_margin, level ranking) includes the size prior too
    hedge: bool = True  # a view strong only with the prior also runs at its own level (recipes/autoscale_hedge)
    hedge_peak: bool = False  # a strong view whose plain best template is not the smallest also runs at its level,
    peak_margin: float = 0.02  # ... when that template's score beats the smallest template's by this much
    peak_top: float = 0.05  # ... and the view's plain score is within this of the best view's
    floor_level: int | None = 384  # every view whose levels all lie more than a step above this also runs at it,
    floor_fill: bool = True  # ... keeping there only boxes of that level's size (recipes/autoscale_floor, round 2)
    rescue_confidence: float | None = 0.01  # a photo whose best detection's calibrated confidence is below this
    # runs hedge_peak's levels too (peak_margin, peak_top; recipes/autoscale_rescue, round 2); None: never
    up_steps: int = 0  # every strong view also runs this many ladder steps above its highest level (recipes/level_up)
    up_fill: bool = False  # ... keeping there only boxes too small for the level below (recipes/level_up, round 2)
    up_confident: bool = False  # ... run only after the planned levels, for the classes found there with a detection
    # that counts (calibrated confidence >= the weights' threshold; recipes/level_up_confident)

    def __post_init__(self) -> None:
        if self.probe_size < 64 or not self.template_cells or min(self.template_cells) < 1:
            raise ValueError("auto_scale: probe_size >= 64 and positive template sizes needed")
        if not 64 <= self.min_size <= self.max_size:
            raise ValueError("auto_scale: 64 <= min_size <= max_size needed")
        if not (self.level_step > 1.0 and self.max_levels >= 1 and self.ratio > 0 and self.weak_margin >= 0
                and self.template_aspect_power >= 0 and math.isfinite(self.size_prior) and self.size_prior >= 0
                and self.pool_above >= 1 and (self.floor_level is None or self.floor_level >= 64)
                and (self.rescue_confidence is None or 0 < self.rescue_confidence < 1) and self.up_steps >= 0):
            raise ValueError("auto_scale: level_step > 1, max_levels >= 1, ratio > 0, weak_margin >= 0, "
                             "template_aspect_power >= 0, finite size_prior >= 0, pool_above >= 1, floor_level >= 64 "
                             "(or None), 0 < rescue_confidence < 1 (or None) and up_steps >= 0 needed")
        object.__setattr__(self, "template_cells", tuple(int(c) for c in self.template_cells))


@dataclass(frozen=True)
class InferenceConfig:
    """How detections are produced from a model.

    ``image_size``: ``"auto"`` (default) picks, per image and class view, the level at which the view's objects
    have the size the heads expect (a cheap probe, :mod:`os2d.inference.autoscale`; ``scales`` then multiply
    that level); an int resizes the input so that sqrt(w*h) = image_size at scale 1 (the reference's setting);
    None keeps the original size. Boxes are always reported in original pixels.
    """

    image_size: int | str | None = AUTO  # "auto" | sqrt(w*h) of pyramid level 1.0 (reference demo: 1500) | None
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
    negative_iou: float = 0.5  # a negative of the class scoring >= a detection on a box this close beats it
    negative_mode: str = "drop"  # a beaten detection is dropped, or "demote"d (score 2 s - negative's score)
    auto_scale: AutoScaleConfig = AutoScaleConfig()  # the probe of image_size="auto"
    heads_precision: str = "int8-exact"  # int8 finds the detections, float32 gives their values
    # (os2d.inference.exact_values); "fp32": the dense float32 heads (reference parity); "int8": int8 values
    # (os2d.model.int8_transform). Both int8 kinds fall back to fp32 where int8 does not apply (GPU, no VNNI).
    exact_top: int | None = None  # "int8-exact": only the N best reported detections get exact values; None = all
    trunk_precision: str = "fp32"  # "bf16": the photo's backbone in bfloat16 where the device has bf16 dot products
    verify_precision: str = "fp32"  # "bf16": the second look's crops through the backbone in bfloat16 (likewise)
    colour_rescore: float = 0.0  # > 0: scores x colour agreement with the class image ** this (os2d.inference.colour)
    verify_rescore: float = 2.0  # > 0: the verify_top best re-scored by a second look at class size (os2d.inference.verify)
    verify_crop: str = "aligned"  # the second look's crop: the head's "aligned" parallelogram or the "box"
    verify_top: int = 100  # detections the second look re-scores (the others are dropped)
    verify_size: int | None = 160  # the second look's crops at area verify_size^2 (None: class_image_size)
    reshape_top: int = 10  # > 0: the second look's shape search on its reshape_top best (os2d.inference.verify)
    reshape_scope: str = "image"  # the reshape_top best of the "image" or of each "class"
    verify_rivals: float = 8.0  # > 0: the second look also pushes down crops that look more like another class
    verify_colour: float = 1.0  # > 0: the rivals compare features x colour agreement ** this (os2d.inference.verify)
    verify_colour_margin: float = 1.1  # colour moves the rivals' comparison by at most this factor (>= 1; inf: no bound)
    verify_chroma: float = 0.0  # > 0: the second look's factor also x min(1, chromatic colour agreement / this)
    refine_top: int = 0  # > 0: the refine_top best re-localised by the heads on zoomed crops (os2d.inference.refine)
    refine_crop: str = "aspect"  # the zoomed crop: "aspect" (isotropic, aspect-shaped anchor) or "squeeze"
    refine_check: bool = True  # keep a new box only where the second look's agreement with the class is higher

    def __post_init__(self) -> None:
        if not self.scales or not all(math.isfinite(s) and s > 0 for s in self.scales):
            raise ValueError(f"pyramid scales must be positive finite numbers, got {self.scales}")
        if not 0.0 <= self.nms_iou_threshold <= 1.0:  # also refuses nan
            raise ValueError(f"nms_iou_threshold must be in [0, 1], got {self.nms_iou_threshold}")
        if not 0.0 < self.negative_iou <= 1.0:
            raise ValueError(f"negative_iou must be in (0, 1], got {self.negative_iou}")
        if self.exact_top is not None and self.exact_top < 1:
            raise ValueError("exact_top must be >= 1 or None")
        if self.heads_precision not in HEADS_PRECISIONS:
            raise ValueError(f"heads_precision must be one of {HEADS_PRECISIONS}, got {self.heads_precision!r}")
        for key in ("trunk_precision", "verify_precision"):
            if getattr(self, key) not in BACKBONE_PRECISIONS:
                raise ValueError(f"{key} must be 'fp32' or 'bf16', got {getattr(self, key)!r}")
        if not (math.isfinite(self.colour_rescore) and self.colour_rescore >= 0):
            raise ValueError(f"colour_rescore must be a finite number >= 0 (0: off), got {self.colour_rescore}")
        if not (math.isfinite(self.verify_rescore) and self.verify_rescore >= 0):
            raise ValueError(f"verify_rescore must be a finite number >= 0 (0: off), got {self.verify_rescore}")
        if self.verify_crop not in ("aligned", "box"):
            raise ValueError(f"verify_crop must be 'aligned' or 'box', got {self.verify_crop!r}")
        if self.verify_top < 1:
            raise ValueError(f"verify_top must be >= 1, got {self.verify_top}")
        if not (math.isfinite(self.verify_rivals) and self.verify_rivals >= 0):
            raise ValueError(f"verify_rivals must be >= 0, got {self.verify_rivals}")
        if not (math.isfinite(self.verify_colour) and self.verify_colour >= 0):
            raise ValueError(f"verify_colour must be a finite number >= 0 (0: off), got {self.verify_colour}")
        if not self.verify_colour_margin >= 1.0:  # also refuses nan
            raise ValueError(f"verify_colour_margin must be >= 1 (inf: unbounded), got {self.verify_colour_margin}")
        if not (math.isfinite(self.verify_chroma) and 0.0 <= self.verify_chroma <= 1.0):
            raise ValueError(f"verify_chroma must be in [0, 1] (0: off), got {self.verify_chroma}")
        if self.verify_size is not None and self.verify_size < 16:
            raise ValueError(f"verify_size must be at least 16 pixels (or None: class_image_size), got "
                             f"{self.verify_size}")
        if self.reshape_top < 0:
            raise ValueError(f"reshape_top must be >= 0 (0: off), got {self.reshape_top}")
        if self.reshape_scope not in ("image", "class"):
            raise ValueError(f"reshape_scope must be 'image' or 'class', got {self.reshape_scope!r}")
        if self.refine_top < 0:
            raise ValueError(f"refine_top must be >= 0 (0: off), got {self.refine_top}")
        if self.refine_crop not in ("aspect", "squeeze"):
            raise ValueError(f"refine_crop must be 'aspect' or 'squeeze', got {self.refine_crop!r}")
        if self.negative_mode not in ("drop", "demote"):
            raise ValueError(f"negative_mode must be 'drop' or 'demote', got {self.negative_mode!r}")
        if self.score_threshold is not None and not math.isfinite(self.score_threshold):
            raise ValueError(f"score_threshold must be a finite number (or None: keep every box), got "
                             f"{self.score_threshold}")
        if isinstance(self.image_size, str):
            if self.image_size != AUTO:
                raise ValueError(f"image_size must be 'auto', a number of pixels or None, got {self.image_size!r}")
        elif self.image_size is not None and self.image_size < 16:
            raise ValueError("image_size must be at least 16")
        if isinstance(self.auto_scale, dict):  # from JSON / YAML
            object.__setattr__(self, "auto_scale", AutoScaleConfig(**self.auto_scale))
        self._check_level_size()
        if self.max_detections is not None and self.max_detections < 0:
            raise ValueError("max_detections must be >= 0")
        if self.shortlist_top_k is not None and self.shortlist_top_k < 1:
            raise ValueError(f"shortlist_top_k must be >= 1 or None, got {self.shortlist_top_k}")
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))

    def _check_level_size(self) -> None:
        """The largest pyramid level must stay within the image pixel limit (:data:`MAX_IMAGE_PIXELS`): its side
        ``sqrt(w*h)`` is ``image_size`` (or ``auto_scale.max_size``) times the largest scale. With ``image_size``
        None the level is the image (at most that many pixels) times the scale."""
        base = self.auto_scale.max_size if self.image_size == AUTO else self.image_size
        if base is None or isinstance(base, str):
            return
        side = base * max(self.scales)
        if side * side > MAX_IMAGE_PIXELS:
            what = "auto_scale.max_size" if self.image_size == AUTO else "image_size"
            raise ValueError(f"{what} {base} x largest scale {max(self.scales):g} gives a pyramid level of "
                             f"{side:.0f} x {side:.0f} pixels, over the limit of {MAX_IMAGE_PIXELS:,} pixels "
                             f"(sqrt(w*h) at most {math.isqrt(MAX_IMAGE_PIXELS)})")

    def replace(self, **changes: Any) -> InferenceConfig:
        """A copy with the given fields changed (``None`` is a value: e.g. ``image_size=None`` keeps sizes)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown inference options: {sorted(unknown)}")
        return replace(self, **changes)


__all__ = ["AUTO", "MAX_IMAGE_PIXELS", "AutoScaleConfig", "InferenceConfig", "ModelConfig", "REFERENCE_PYRAMID",
           "field"]
