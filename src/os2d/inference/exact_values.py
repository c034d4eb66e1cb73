"""``heads_precision="int8-exact"``: the int8 heads find the detections, the float32 heads give their values.

The int8 TransformNet (:mod:`os2d.model.int8_transform`) runs the dense heads 2.4-3.1x faster with a mean score
error of ~1e-4, but near-equal candidates can swap and a box can move by one cell. Here only the approximate pass
is dense: after its NMS, every reported detection's window of 3 x 3 locations (its location and the 8 around it)
is recomputed exactly (:func:`os2d.model.head_windows.head_windows`), the exact values replace the approximate
ones there, and NMS runs again. Detections that enter the report only then get their windows in the next round
(at most ``rounds``). Every reported detection then carries the exact float32 heads' score, box and corners, at
the best exact location within one cell of where the int8 heads put it. With ``InferenceConfig.exact_top`` = N,
only the N best reported detections get windows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from os2d.config import InferenceConfig
from os2d.inference.decode import LevelCandidates, clip_boxes, detections_at, merged_keep, to_original
from os2d.model.os2d import Os2dModel
from os2d.results import Detections

# The int8 search pays off only where the dense heads are large next to the windows: it saves ~60% of the dense
# float32 heads' work per map location, and each reported detection costs a 3x3 window (121 locations of the first
# convolution in float32) plus its share of the extra NMS rounds. ``benchmarks/exact_cost.py`` (FL27 training brands,
# a 6-class gallery; README, Speed): about even at ~330 head locations (class views x feature cells, summed over the
# levels) per reported detection; 400 stays on the safe side.
MIN_LOCATIONS_PER_DETECTION = 400


def heads_precision_for(config: InferenceConfig, locations: int) -> str:
    """The heads precision one image runs at: ``"int8-exact"`` falls back to ``"fp32"`` where its windows would
    cost more than the int8 search saves (fewer than ``MIN_LOCATIONS_PER_DETECTION`` dense head locations per
    reported detection) or where every candidate is reported (``max_detections`` None)."""
    if config.heads_precision != "int8-exact":
        return config.heads_precision
    reported = config.max_detections
    if config.exact_top is not None:
        reported = config.exact_top if reported is None else min(reported, config.exact_top)
    if reported is None or locations < MIN_LOCATIONS_PER_DETECTION * reported:
        return "fp32"
    return "int8-exact"


POOL_MARGIN = 0.05  # score margin below the last reported detection kept in the pool (int8 errors are ~1e-3)


def exact_detections(model: Os2dModel, cands: list[LevelCandidates], kernels: Tensor, view_class: Tensor,
                     class_names: list[str], original_size: tuple[int, int], config: InferenceConfig, *,
                     view_aspect: Tensor | None = None, radius: int = 1, rounds: int = 3) -> Detections:
    """:func:`~os2d.inference.decode.merge_and_nms` of ``cands`` (from ``level_candidates``; their ``views``
    index ``kernels``) with the reported detections' values made exact, as described in the module docstring.

    After the first NMS the rounds run on a pool: the candidates scoring at least the last reported one's score
    minus ``POOL_MARGIN``. A candidate below that can neither be reported nor suppress one that is (NMS only lets
    higher scores suppress), so while the pool still reports ``max_detections`` above that floor the result equals
    NMS over every candidate; otherwise the rounds run again on every candidate."""
    keep = merged_keep(cands, view_class, config)
    n = config.max_detections
    if keep is None or n is None or len(keep) < n:
        return _rounds(model, list(cands), keep, kernels, view_class, class_names, original_size, config,
                       view_aspect, radius, rounds)
    floor = float(torch.cat([c.scores for c in cands])[keep[-1]]) - POOL_MARGIN
    masks = [c.scores >= floor for c in cands]
    in_pool = torch.cat(masks)
    pool_keep = (torch.cumsum(in_pool.long(), 0) - 1)[keep]  # every reported candidate is in the pool
    dets = _rounds(model, [c.subset(m) for c, m in zip(cands, masks, strict=True)], pool_keep, kernels,
                   view_class, class_names, original_size, config, view_aspect, radius, rounds)
    if int((dets.scores >= floor).sum()) >= n:
        return dets
    return _rounds(model, list(cands), keep, kernels, view_class, class_names, original_size, config, view_aspect,
                   radius, rounds)


def _rounds(model: Os2dModel, cands: list[LevelCandidates], keep: Tensor | None, kernels: Tensor,
            view_class: Tensor, class_names: list[str], original_size: tuple[int, int], config: InferenceConfig,
            view_aspect: Tensor | None, radius: int, rounds: int) -> Detections:
    """From ``keep`` (:func:`merged_keep` of ``cands``): exact windows for the reported detections that are not
    exact yet, NMS again; at most ``rounds`` times."""
    for _ in range(rounds):
        if keep is None:
            break
        top = keep[: config.exact_top]
        todo = top[~torch.cat([c.exact for c in cands])[top]]
        if todo.numel() == 0:
            break
        start = 0
        for i, c in enumerate(cands):
            end = start + c.scores.numel()
            sel = todo[(todo >= start) & (todo < end)] - start
            if sel.numel():
                cands[i] = _exact_windows(model, c, sel, kernels, original_size, config, view_aspect, radius)
            start = end
        keep = merged_keep(cands, view_class, config)
    return detections_at(cands, keep, view_class, class_names, original_size)


def _exact_windows(model: Os2dModel, c: LevelCandidates, sel: Tensor, kernels: Tensor,
                   original_size: tuple[int, int], config: InferenceConfig, view_aspect: Tensor | None,
                   radius: int) -> LevelCandidates:
    """``c`` with the exact values of the windows around its candidates ``sel``: every location in a window
    replaces the candidate there (or is added; or removes it where the exact box is empty or below the
    threshold)."""
    if c.features is None or c.anchors is None or c.level_size is None or c.exact is None:
        raise ValueError("exact values need candidates from level_candidates (features, anchors, level size)")
    h, w = c.features.shape[-2:]
    views, ys, xs = c.views[sel], c.anchors[sel] // w, c.anchors[sel] % w
    r = 2 * radius + 1
    out = model.head_windows(c.features, kernels, views.to(kernels.device), ys - radius, xs - radius, (r, r),
                             aspect=view_aspect)  # one batch of equal windows: the convolutions run as one GEMM
    inside = out.inside.reshape(-1)  # (P*R*R,)
    v = views.view(-1, 1).expand(-1, r * r).reshape(-1)[inside]
    anchors = (out.ys * w + out.xs).reshape(-1)[inside]
    scores = out.scores.reshape(-1)[inside]
    boxes = out.boxes_xyxy.reshape(-1, 4)[inside]
    corners = out.corners_xy.reshape(-1, 4, 2)[inside]
    boxes, valid = clip_boxes(boxes, scores, c.level_size, config)
    keys = v * (h * w) + anchors  # one per (view, location); overlapping windows repeat a location
    keys, first = _first_of_each(keys)
    valid, v, anchors, scores, boxes, corners = (t[first] for t in (valid, v, anchors, scores, boxes, corners))
    stays = ~torch.isin(c.views * (h * w) + c.anchors, keys)
    boxes_o, corners_o = to_original(boxes[valid], corners[valid], c.level_size, original_size)
    return LevelCandidates(
        boxes_xyxy=torch.cat([c.boxes_xyxy[stays], boxes_o]),
        scores=torch.cat([c.scores[stays], scores[valid]]),
        views=torch.cat([c.views[stays], v[valid]]),
        corners_xy=torch.cat([c.corners_xy[stays], corners_o]),
        anchors=torch.cat([c.anchors[stays], anchors[valid]]),
        features=c.features,
        level_size=c.level_size,
        exact=torch.cat([c.exact[stays], torch.ones(int(valid.sum()), dtype=torch.bool, device=c.exact.device)]),
    )


def _first_of_each(keys: Tensor) -> tuple[Tensor, Tensor]:
    """(unique keys, index of each one's first occurrence in ``keys``)."""
    uniq, inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((len(uniq),), len(keys), dtype=torch.long, device=keys.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(keys), device=keys.device), reduce="amin")
    return uniq, first


__all__ = ["MIN_LOCATIONS_PER_DETECTION", "exact_detections", "heads_precision_for"]
