"""Detections from an OS2D model: the image pyramid (:mod:`~os2d.inference.pyramid`), the heads on every level
(optionally on a class shortlist, :mod:`~os2d.inference.shortlist`), decoding and NMS (:mod:`~os2d.inference.decode`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from PIL import Image
from torch import Tensor

from os2d.config import AUTO, InferenceConfig
from os2d.inference.autoscale import below_level, fills_floor, plan_levels, probe_scores, resize_to_side
from os2d.inference.decode import LevelCandidates, level_candidates, merge_and_nms
from os2d.inference.exact_values import exact_detections, heads_precision_for
from os2d.inference.pyramid import prepare_levels
from os2d.inference.shortlist import shortlist_views
from os2d.model.os2d import Os2dModel
from os2d.results import Detections

Finish = Callable[[Detections], Detections] | None  # what the caller does to the merged detections (second look, ...)
Rescue = Callable[[Detections], bool] | None  # finished detections -> whether to run the plan's rescue levels
Counts = Callable[[Detections], Tensor] | None  # finished detections -> (N,) bool: the detection counts (is confident)


@torch.no_grad()
def detect_levels(model: Os2dModel, levels: list[Tensor], original_size: tuple[int, int], kernels: Tensor,
                  view_class: Tensor, class_names: list[str], config: InferenceConfig, *,
                  class_desc: Tensor | None = None, view_aspect: Tensor | None = None, finish: Finish = None,
                  rescue: Rescue = None, counts: Counts = None) -> Detections:
    """Detect every class of a gallery in an image pyramid from :func:`prepare_levels`.

    ``view_aspect``: (V,) aspect ratios (w / h) of the views' class images, for models whose anchors take them
    (``ModelConfig.anchor_aspect_power``); None = square anchors.

    With ``config.shortlist_top_k`` set (and fewer than the gallery's classes), the heads run only for the views
    of the K classes ranked best by :func:`os2d.inference.shortlist.shortlist_views` on the same backbone features;
    ``class_desc`` (V, C) are the kernels' precomputed ``os2d.inference.shortlist.class_descriptors(kernels,
    model.config.pool_border)`` (optional).

    ``finish``: applied to the merged detections before they are returned (the caller's re-scoring); ``rescue``: with
    ``image_size="auto"``, called on the finished detections of the planned levels; True runs the plan's rescue levels
    (:attr:`os2d.inference.autoscale.ScalePlan.rescue`) as well and finishes the merged candidates of all levels again;
    ``counts``: with ``auto_scale.up_confident``, says which finished detections count: the plan's up pairs
    (:attr:`~os2d.inference.autoscale.ScalePlan.up`) run afterwards, only for the classes of those (none without it).
    """
    if kernels.shape[0] == 0:
        return Detections.empty(class_names, original_size)
    device = next(model.parameters()).device
    levels = [lv.to(device, non_blocking=True) for lv in levels]
    if config.image_size == AUTO:
        return _detect_auto(model, levels[0], original_size, kernels, view_class, class_names, config,
                            class_desc=class_desc, view_aspect=view_aspect, finish=finish, rescue=rescue,
                            counts=counts)
    feats = [model.extract_features(lv[None], precision=config.trunk_precision) for lv in levels]
    kernels, view_class, view_aspect = _shortlisted(model, feats, kernels, view_class, len(class_names), config,
                                                    class_desc, view_aspect)
    kernels = kernels.to(device)
    config = _with_heads_precision(config, sum(kernels.shape[0] * f.shape[-2] * f.shape[-1] for f in feats))
    cands = [level_candidates(model, lv, kernels, original_size, config, features=f, aspect=view_aspect)
             for lv, f in zip(levels, feats, strict=True)]
    dets = _merged(model, cands, kernels, view_class, class_names, original_size, config, view_aspect)
    return dets if finish is None else finish(dets)


def _with_heads_precision(config: InferenceConfig, locations: int) -> InferenceConfig:
    """``config`` with the heads precision this image runs at (:func:`os2d.inference.exact_values.
    heads_precision_for`; ``locations``: class views x feature cells over the levels)."""
    precision = heads_precision_for(config, locations)
    return config if precision == config.heads_precision else replace(config, heads_precision=precision)


def _merged(model: Os2dModel, cands: list[LevelCandidates], kernels: Tensor, view_class: Tensor,
            class_names: list[str], original_size: tuple[int, int], config: InferenceConfig,
            view_aspect: Tensor | None) -> Detections:
    """The levels' candidates merged and NMS-ed; for ``heads_precision="int8-exact"`` with the reported
    detections' values recomputed exactly (:mod:`os2d.inference.exact_values`)."""
    if config.heads_precision == "int8-exact":
        return exact_detections(model, cands, kernels, view_class, class_names, original_size, config,
                                view_aspect=view_aspect)
    return merge_and_nms(cands, view_class, class_names, original_size, config)


def _shortlisted(model: Os2dModel, feats: list[Tensor], kernels: Tensor, view_class: Tensor, num_classes: int,
                 config: InferenceConfig, class_desc: Tensor | None,
                 view_aspect: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """The views (kernels, classes, aspect ratios) of the ``shortlist_top_k`` best classes (all views without a
    shortlist)."""
    k = config.shortlist_top_k
    if k is None or k >= num_classes:
        return kernels, view_class, view_aspect
    views, _ = shortlist_views(feats, kernels, view_class, num_classes, k, grid_size=model.config.class_grid_size,
                               pool_border=model.config.pool_border, class_desc=class_desc)
    return kernels[views], view_class.cpu()[views], None if view_aspect is None else view_aspect.cpu()[views]


def _detect_auto(model: Os2dModel, source: Tensor, original_size: tuple[int, int], kernels: Tensor,
                 view_class: Tensor, class_names: list[str], config: InferenceConfig, *,
                 class_desc: Tensor | None, view_aspect: Tensor | None = None, finish: Finish = None,
                 rescue: Rescue = None, counts: Counts = None) -> Detections:
    """``image_size="auto"``: probe the (3, h, w) ``source`` image, then run every view's heads on the level
    (times each of ``config.scales``) its :class:`~os2d.inference.autoscale.ScalePlan` gives it. When the plan has
    rescue pairs and ``rescue(finish(detections))`` says the planned levels found nothing credible, the heads run at
    those pairs too and the candidates of all levels are merged and finished again. With ``auto_scale.up_confident``
    the plan's up pairs run last, only for the classes with a detection that ``counts``, and finish once more."""
    auto = config.auto_scale
    probe = resize_to_side(source, auto.probe_size)
    probe_feats = model.extract_features(probe[None], precision=config.trunk_precision)
    kernels, view_class, view_aspect = _shortlisted(model, [probe_feats], kernels, view_class, len(class_names),
                                                    config, class_desc, view_aspect)
    kernels = kernels.to(probe.device)
    aspect = None if view_aspect is None else view_aspect.cpu()
    plan = plan_levels(probe_scores(probe_feats, kernels, auto.template_cells, aspect=aspect,
                                    aspect_power=auto.template_aspect_power, pool_above=auto.pool_above),
                        auto, model.config.class_grid_size)
    later = set(plan.up) if auto.up_confident else set()  # up pairs wait for the planned levels' verdict
    first = [(lv, views) for lv in plan.levels() if (views := [v for v in plan.views_at(lv) if (v, lv) not in later])]
    stride = float(model.stride)
    config = _with_heads_precision(config, int(sum(len(views) * (lv * s / stride) ** 2
                                                   for lv, views in first for s in config.scales)))
    grid_px = model.config.class_grid_size * model.stride
    used: dict[str, set[int]] = {}

    def sized(c: LevelCandidates, views: list[int] | tuple[int, ...], keep: Callable[..., Tensor],
              level: int) -> LevelCandidates:
        """``c`` without the boxes of ``views`` that ``keep`` (:func:`fills_floor` or :func:`below_level`) rejects."""
        mine = torch.isin(c.views, torch.tensor(views, dtype=torch.long, device=c.views.device))
        return c.subset(~mine | keep(c.boxes_xyxy, original_size, level, auto.level_step, grid_px))

    def run(pairs: list[tuple[int, list[int]]]) -> list[LevelCandidates]:
        """The heads of each (level, views) pair at every scale; records the levels each class ran at."""
        out = []
        for level, view_list in pairs:
            views = torch.tensor(view_list, dtype=torch.long)
            for s in config.scales:
                side = level * s
                image = probe if round(side) == auto.probe_size else resize_to_side(source, side)
                feats = probe_feats if image is probe else None
                c = level_candidates(model, image, kernels[views.to(kernels.device)], original_size, config,
                                     features=feats, aspect=None if aspect is None else aspect[views])
                c.views = views.to(c.views.device)[c.views]  # back to indices into ``kernels``
                if auto.floor_fill and plan.floor and level == auto.floor_level:
                    c = sized(c, plan.floor, fills_floor, level)
                upped = [v for v, lv in plan.up if lv == level] if auto.up_fill else []
                if upped:  # an up pair keeps only the boxes the level below would not fit
                    c = sized(c, upped, below_level, level)
                out.append(c)
                for v in view_list:
                    used.setdefault(class_names[int(view_class[v])], set()).add(round(side))
        return out

    def merged(cands: list[LevelCandidates]) -> Detections:
        dets = _merged(model, cands, kernels, view_class, class_names, original_size, config, aspect)
        dets.levels = {name: sorted(used.get(name, ())) for name in class_names}
        return dets if finish is None else finish(dets)

    cands = run(first)
    dets = merged(cands)
    if plan.rescue and rescue is not None and rescue(dets):
        cands += run(_grouped(plan.rescue))
        dets = merged(cands)
    if later and counts is not None:
        found = set(dets.labels[counts(dets)].tolist())
        up = [(v, lv) for v, lv in plan.up if int(view_class[v]) in found]
        if up:
            cands += run(_grouped(up))
            dets = merged(cands)
    return dets


def _grouped(pairs: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> list[tuple[int, list[int]]]:
    """(view, level) pairs -> (level, views) for each level, increasing."""
    return [(lv, sorted(v for v, x in pairs if x == lv)) for lv in sorted({lv for _, lv in pairs})]


@torch.no_grad()
def detect_image(model: Os2dModel, image: Image.Image, kernels: Tensor, view_class: Tensor,
                 class_names: list[str], config: InferenceConfig, *, class_desc: Tensor | None = None,
                 view_aspect: Tensor | None = None) -> Detections:
    """Detect every class of a gallery in one RGB PIL image.

    Args:
        kernels: (V, S*S, C) class-view kernels; ``view_class`` (V,) maps each view to its class index.
        class_desc: (V, C) precomputed shortlist descriptors of ``kernels`` (used with ``shortlist_top_k``).
        view_aspect: (V,) aspect ratios of the views' class images (models with ``anchor_aspect_power``).
    """
    if kernels.shape[0] == 0:
        return Detections.empty(class_names, image.size)
    return detect_levels(model, prepare_levels(image, config), image.size, kernels, view_class, class_names,
                         config, class_desc=class_desc, view_aspect=view_aspect)


__all__ = ["detect_image", "detect_levels"]
