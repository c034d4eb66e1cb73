"""Automatic scale: run the heads at the pyramid level where each class view's objects have the size they expect.

The heads compare every location with a class grid of S x S cells (S = 15 cells of ``stride`` = 16 px: the
class image at area ``class_image_size^2`` = 240^2 px) and find objects of about that size, so a fixed
``image_size`` finds objects of one size only. Here a cheap probe picks the size for each photo and class view.

Probe: the photo at sqrt(w*h) = ``probe_size``, its backbone features L2-normalised per location. Each view's
class grid is resampled to templates of ``template_cells`` sides (square, or with the class image's aspect ratio
to the power ``template_aspect_power``, area kept) and slid over the probe (score = mean
cosine of the template cells with the cells under them: one convolution per view and size). The template with
the best peak plus ``size_prior * ln(s)`` (smaller templates peak higher on any photo: on a close-up whose product fills
the frame the 4-cell template scores best), s* cells, estimates the objects' size in probe cells (templates larger
than ``pool_above`` cells slide over 2 x 2-pooled features at half their side); the photo fills the class grid at
``image_size = probe_size * S / s* * ratio``, rounded to the ladder ``probe_size * level_step^k`` within
``[min_size, max_size]``. A view whose best probe score (with ``prior_strength``, off by default: plus the size
prior; recipes/autoscale_dense) is more than ``weak_margin`` below the best view's carries no size information (it
is probably absent): it joins the level most strong views chose, so an absent class adds no level (with ``hedge``,
on by default, a view strong only with the prior also runs at its own level; recipes/autoscale_hedge; with
``hedge_peak``, off, a strong view's clear plain peak over template sizes does too; recipes/autoscale_peak; with
``floor_level``, 384 by default, every view also runs at that small level unless it runs near it, where with
``floor_fill`` it keeps only frame-filling boxes; recipes/autoscale_floor; with ``up_steps``, 0 by default, every strong
view also runs that many steps above its highest level, with ``up_fill`` keeping there only boxes too small for the level
below, and with ``up_confident`` running there only for the classes the planned levels found with a detection that
counts; recipes/level_up, recipes/level_up_confident: not passed). At most
``max_levels`` levels run: those holding the best-scoring views; other views move to the nearest kept level.
With ``rescue_confidence`` the plan also names rescue levels (a strong view's clear prior-free peak, as
``hedge_peak``), which :func:`os2d.inference.detect.detect_levels` runs only when the planned levels' detections are not credible
(recipes/autoscale_rescue).

Shape glossary: V class views, C channels, S class grid side, H x W probe feature map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from os2d.config import AutoScaleConfig
from os2d.model.correlation import l2_normalize


@dataclass(frozen=True)
class ScalePlan:
    """Where the heads run for one photo.

    Attributes:
        probe_size: sqrt(w*h) of the probe level.
        view_levels: (V,) sqrt(w*h) of the level each class view runs at (before ``InferenceConfig.scales``).
        view_scores: (V,) best probe template score of each view.
        extra: (view, level) pairs: a view that runs at another level too (``AutoScaleConfig.hedge``, ``hedge_peak``,
            ``floor_level``).
        floor: the views of ``extra`` that run at ``floor_level`` only because of it (``AutoScaleConfig.floor_fill``
            keeps only their frame-filling detections there).
        up: the pairs of ``extra`` that run only because of ``AutoScaleConfig.up_steps`` (``up_fill`` keeps only their
            boxes too small for the level below there).
        rescue: (view, level) pairs that run only when the planned levels find nothing credible
            (``AutoScaleConfig.rescue_confidence``): strong views with a clear peak of the probe score over the template
            sizes (without the size prior), at that peak's level, where the plan put them elsewhere.
    """

    probe_size: int
    view_levels: tuple[int, ...]
    view_scores: tuple[float, ...]
    extra: tuple[tuple[int, int], ...] = ()
    floor: tuple[int, ...] = ()
    rescue: tuple[tuple[int, int], ...] = ()
    up: tuple[tuple[int, int], ...] = ()

    def levels(self) -> list[int]:
        """The distinct level sizes, increasing."""
        return sorted(set(self.view_levels) | {lv for _, lv in self.extra})

    def views_at(self, level: int) -> list[int]:
        """Indices (increasing) of the views that run at ``level``."""
        return sorted({v for v, lv in enumerate(self.view_levels) if lv == level}
                      | {v for v, lv in self.extra if lv == level})


def kernel_grids(kernels: Tensor) -> Tensor:
    """(V, S*S, C) kernels in column-major cell order (:func:`os2d.model.correlation.class_kernels`) ->
    (V, C, S, S) class grids."""
    v, n, c = kernels.shape
    s = math.isqrt(n)
    return kernels.reshape(v, s, s, c).permute(0, 3, 2, 1)  # [v, x, y, c] -> [v, c, y, x]


def template_shapes(side: int, aspect: Tensor, power: float) -> list[tuple[int, int]]:
    """(V,) aspect ratios w / h -> (th, tw) cells of each view's template of sqrt-area ``side``: the aspect ratio
    (clamped to 1/4..4) to the power ``power``, area kept (square at ``power`` 0)."""
    stretch = aspect.float().clamp(0.25, 4.0).pow(power / 2).tolist()
    return [(max(1, round(side / k)), max(1, round(side * k))) for k in stretch]


@torch.no_grad()
def template_score_maps(features: Tensor, kernels: Tensor, cells: tuple[int, ...], *, aspect: Tensor | None = None,
                        aspect_power: float = 0.0, pool_above: int | None = None):
    """The probe's score maps, one template size and shape at a time (what :func:`probe_scores` takes the maxima of).

    Arguments as :func:`probe_scores`. Yields ``(j, views, maps)``: ``j`` the index into ``cells``, ``views`` the
    indices of the class views whose template of that size has one shape, ``maps`` (len(views), H', W') the mean
    cosine of that template at every position of the probe (or of the 2 x 2-pooled probe above ``pool_above``).
    """
    # channels-last for both operands: oneDNN's plain-layout path is 3x slower for the largest (20 x 20) templates
    feats = l2_normalize(features.float(), dim=1)
    pooled = None
    if pool_above is not None and max(cells) > pool_above:
        pooled = l2_normalize(F.avg_pool2d(feats, 2, ceil_mode=True), dim=1).contiguous(memory_format=torch.channels_last)
    feats = feats.contiguous(memory_format=torch.channels_last)
    grids = kernel_grids(kernels.to(device=feats.device, dtype=torch.float32))  # (V, C, S, S)
    v = grids.shape[0]
    for j, s in enumerate(cells):
        shapes = [(s, s)] * v if aspect is None or aspect_power == 0 else template_shapes(s, aspect, aspect_power)
        fmap = feats
        if pooled is not None and s > pool_above:  # half the side on the 2x2-pooled features
            shapes, fmap = [(max(1, round(th / 2)), max(1, round(tw / 2))) for th, tw in shapes], pooled
        for th, tw in sorted(set(shapes)):
            views = [i for i, shape in enumerate(shapes) if shape == (th, tw)]
            group = grids if len(views) == v else grids[views]
            t = l2_normalize(F.interpolate(group, size=(th, tw), mode="bilinear", align_corners=True), dim=1)
            t = t.contiguous(memory_format=torch.channels_last)
            yield j, views, (F.conv2d(fmap, t, padding=(th // 2, tw // 2)) / (th * tw))[0]  # (V', H', W')


@torch.no_grad()
def probe_scores(features: Tensor, kernels: Tensor, cells: tuple[int, ...], *, aspect: Tensor | None = None,
                 aspect_power: float = 0.0, pool_above: int | None = None) -> Tensor:
    """Best template score of every class view and template size on the probe.

    Args:
        features: (1, C, H, W) probe features (normalised here).
        kernels: (V, S*S, C) class kernels.
        cells: template sides to try, in probe cells (the square root of the template's area).
        aspect: (V,) aspect ratios w / h of the views' class images; with ``aspect_power`` p != 0 a template of
            side s is s * r^(p/2) cells wide and s * r^(-p/2) tall (rounded; r clamped to 1/4..4). None or p = 0:
            square templates.
        pool_above: templates of a side larger than this many cells slide over the features average-pooled 2 x 2
            (and normalised again), at half their side: 16x fewer operations for the largest templates, whose
            full-resolution convolutions would cost more than all the others together. None: never.
    Returns:
        (V, len(cells)) best mean cosine of each template over the probe (templates may hang over the border by
        half their size; the missing cells count as 0).
    """
    out = torch.empty(kernels.shape[0], len(cells))
    for j, views, maps in template_score_maps(features, kernels, cells, aspect=aspect, aspect_power=aspect_power,
                                              pool_above=pool_above):
        out[views, j] = maps.flatten(1).amax(dim=1).cpu()
    return out


def ladder(config: AutoScaleConfig) -> list[int]:
    """The level sizes (sqrt(w*h)) a view may get: ``probe_size * level_step^k`` within [min_size, max_size]."""
    lo = math.ceil(math.log(config.min_size / config.probe_size, config.level_step) - 1e-9)
    hi = math.floor(math.log(config.max_size / config.probe_size, config.level_step) + 1e-9)
    return [round(config.probe_size * config.level_step**k) for k in range(lo, hi + 1)]


def plan_levels(scores: Tensor, config: AutoScaleConfig, grid_size: int) -> ScalePlan:
    """(V, T) probe scores from :func:`probe_scores` -> the :class:`ScalePlan` of one photo."""
    sizes = ladder(config)
    log_sizes = torch.tensor([math.log(s) for s in sizes])
    all_cells = torch.tensor(config.template_cells, dtype=torch.float32)
    if scores.shape[1] != len(all_cells):
        raise ValueError(f"probe scores for {scores.shape[1]} templates, config has {len(all_cells)} template_cells")
    # the size: the best template after the size prior (smaller templates peak higher on any photo); the strength
    # of a view (weak_margin, level ranking): its score there, with the prior too when ``prior_strength``
    corrected = scores + config.size_prior * all_cells.log()[None]  # (V, T)
    arg = corrected.argmax(dim=1)  # (V,)
    best = scores.gather(1, arg[:, None])[:, 0]
    best_corrected = corrected.gather(1, arg[:, None])[:, 0]
    strength = best_corrected if config.prior_strength else best
    level = _level_index(all_cells[arg], log_sizes, grid_size, config)  # (V,) index into sizes
    strong = strength >= strength.max() - config.weak_margin
    kept = _top_levels(level, strength, strong, config.max_levels)
    votes = torch.bincount(level[strong], minlength=len(sizes))[kept]
    main = int(kept[votes.argmax()])  # most strong views; ties: the better-scoring level
    view_levels = [sizes[_nearest_kept(int(level[v]), kept, log_sizes) if strong[v] else main]
                   for v in range(scores.shape[0])]
    extra = ()
    if config.hedge and not config.prior_strength:
        extra = _hedged(best_corrected, strong, level, view_levels, sizes, log_sizes, config)
    if config.hedge_peak:
        extra += _peak_hedged(scores, strength, strong, view_levels, extra, sizes, log_sizes, grid_size, config)
    upped = _upped(strong, view_levels, extra, sizes, config) if config.up_steps else ()
    extra += upped
    floored = _floored(view_levels, extra, config) if config.floor_level is not None else ()
    rescue = ()
    if config.rescue_confidence is not None:  # hedge_peak's pairs, run only if the planned levels find nothing credible
        # (recipes/autoscale_rescue round 2; round 1 took every strong view's prior-free level: 1.35x on close-ups)
        rescue = _peak_hedged(scores, strength, strong, view_levels, extra + floored, sizes, log_sizes, grid_size,
                              config)
    return ScalePlan(config.probe_size, tuple(view_levels), tuple(best.tolist()), extra + floored,
                     tuple(v for v, _ in floored), rescue, upped)


def _level_index(cells: Tensor, log_sizes: Tensor, grid_size: int, config: AutoScaleConfig) -> Tensor:
    """(V,) object sizes in probe cells -> (V,) index of the ladder level nearest (in log size) to the one where the
    object fills the class grid."""
    target = config.probe_size * grid_size / cells * config.ratio  # (V,)
    return (target.log()[:, None] - log_sizes[None]).abs().argmin(dim=1)


def _top_levels(level: Tensor, score: Tensor, mask: Tensor, n: int) -> Tensor:
    """The (at most ``n``) distinct levels of the ``mask``ed views, ranked by the best ``score`` among their views.
    (V,) tensors; ``level`` holds level indices."""
    ranked = sorted({int(i) for i in level[mask]}, key=lambda i: -float(score[mask & (level == i)].max()))
    return torch.tensor(ranked[:n])


def _nearest_kept(i: int, kept: Tensor, log_sizes: Tensor) -> int:
    """The kept level index nearest (in log size) to level index ``i``."""
    return int(kept[(log_sizes[kept] - log_sizes[i]).abs().argmin()])


def _hedged(corrected: Tensor, strong: Tensor, level: Tensor, view_levels: list[int], sizes: list[int],
            log_sizes: Tensor, config: AutoScaleConfig) -> tuple[tuple[int, int], ...]:
    """``hedge``: the views that are weak by their plain score but strong by their score with the size prior (a
    large template picked on a close-up, or a too-large estimate of a small logo) run at their own level as well as
    where the plan put them. At most ``max_levels`` such extra levels (ranked by the best prior-corrected score among
    their views); a view whose own level is not kept takes the nearest kept one. (V,) tensors; ``level`` indexes
    ``sizes``."""
    hedged = ~strong & (corrected >= corrected.max() - config.weak_margin)
    if not bool(hedged.any()):
        return ()
    kept = _top_levels(level, corrected, hedged, config.max_levels)
    pairs = ((v, sizes[_nearest_kept(int(level[v]), kept, log_sizes)]) for v in hedged.nonzero().flatten().tolist())
    return tuple((v, lv) for v, lv in pairs if lv != view_levels[v])


def _peak_hedged(scores: Tensor, strength: Tensor, strong: Tensor, view_levels: list[int],
                 extra: tuple[tuple[int, int], ...], sizes: list[int], log_sizes: Tensor, grid_size: int,
                 config: AutoScaleConfig) -> tuple[tuple[int, int], ...]:
    """``hedge_peak``: a strong view whose plain best template (no size prior) is larger than the smallest one (a real
    peak of the score over the template sizes, not the small templates' bias) runs at that template's level too, when
    the plan put it elsewhere: on a shelf of small near-identical facings the size prior picks a group of them. Only a
    clear peak counts: its score ``peak_margin`` above the smallest template's, and the view's plain score within
    ``peak_top`` of the photo's best view's. At most ``max_levels`` such levels (ranked by the best strength among
    their views). Off by default (recipes/autoscale_peak: not passed). Returns the pairs to add to ``extra``.
    (V, T) ``scores``, (V,) tensors."""
    all_cells = torch.tensor(config.template_cells, dtype=torch.float32)
    plain, arg = scores.max(dim=1)  # (V,)
    small = int(all_cells.argmin())
    peak = _level_index(all_cells[arg], log_sizes, grid_size, config)  # (V,)
    have = set(enumerate(view_levels)) | set(extra)
    new = torch.tensor([(v, sizes[int(i)]) not in have for v, i in enumerate(peak.tolist())])
    cand = (strong & new & (arg != small) & (plain - scores[:, small] >= config.peak_margin)
            & (plain >= plain.max() - config.peak_top))
    if not bool(cand.any()):
        return ()
    kept = set(_top_levels(peak, strength, cand, config.max_levels).tolist())
    return tuple((v, sizes[int(peak[v])]) for v in cand.nonzero().flatten().tolist() if int(peak[v]) in kept)


def _upped(strong: Tensor, view_levels: list[int], extra: tuple[tuple[int, int], ...], sizes: list[int],
           config: AutoScaleConfig) -> tuple[tuple[int, int], ...]:
    """``up_steps``: every strong view also runs at the ladder levels up to ``up_steps`` steps above its highest level
    (the plan's and ``extra``'s), where the ladder has them: small repeated objects (a shelf of cans) make the probe's
    best template cover a group of them, so their level comes out too small (recipes/level_up). Returns the pairs to
    add to ``extra``. (V,) ``strong``."""
    highest = list(view_levels)
    for v, lv in extra:
        highest[v] = max(highest[v], lv)
    have = set(enumerate(view_levels)) | set(extra)
    pairs = []
    for v in strong.nonzero().flatten().tolist():
        i = min(range(len(sizes)), key=lambda k: abs(math.log(sizes[k] / highest[v])))
        pairs += [(v, lv) for lv in sizes[i + 1 : i + 1 + config.up_steps] if (v, lv) not in have]
    return tuple(pairs)


def _floored(view_levels: list[int], extra: tuple[tuple[int, int], ...],
             config: AutoScaleConfig) -> tuple[tuple[int, int], ...]:
    """``floor_level``: every view whose levels (the plan's and ``extra``) all lie more than one ``level_step`` above
    ``floor_level`` also runs at ``floor_level`` (a product filling the frame of a close-up that the probe's templates
    missed). 384 by default (recipes/autoscale_floor). Returns the pairs to add to ``extra``."""
    lowest = list(view_levels)
    for v, lv in extra:
        lowest[v] = min(lowest[v], lv)
    limit = config.floor_level * config.level_step * 1.01  # a level one step up (rounded to pixels) is close enough
    return tuple((v, config.floor_level) for v, lv in enumerate(lowest) if lv > limit)


def fills_floor(boxes: Tensor, image_size: tuple[int, int], floor_level: int, level_step: float,
                grid_px: int) -> Tensor:
    """(M, 4) boxes in the photo's pixels -> (M,) bool: the box is an object of the floor level's size, i.e. its own
    level (where it fills the ``grid_px`` class grid) rounds to ``floor_level`` or below on a ladder of ``level_step``:
    sqrt(box area) >= grid_px / (floor_level * sqrt(level_step)) of sqrt(photo area)."""
    side = (boxes[:, 2] - boxes[:, 0]).clamp(min=0).mul((boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()
    return side >= grid_px / (floor_level * level_step**0.5) * math.sqrt(image_size[0] * image_size[1])


def below_level(boxes: Tensor, image_size: tuple[int, int], level: int, level_step: float, grid_px: int) -> Tensor:
    """(M, 4) boxes in the photo's pixels -> (M,) bool: the box is an object of ``level``'s size or smaller, i.e. its
    own level (where it fills the ``grid_px`` class grid) rounds to ``level`` or above on a ladder of ``level_step``
    (the mirror of :func:`fills_floor`): sqrt(box area) <= grid_px * sqrt(level_step) / level of sqrt(photo area)."""
    side = (boxes[:, 2] - boxes[:, 0]).clamp(min=0).mul((boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()
    return side <= grid_px * level_step**0.5 / level * math.sqrt(image_size[0] * image_size[1])


def resize_to_side(image: Tensor, side: float) -> Tensor:
    """(3, h, w) image -> (3, h', w') with sqrt(w'*h') = ``side`` (aspect kept; ``int`` sizes as the pyramid;
    bilinear with antialiasing when shrinking, like PIL's BILINEAR resize)."""
    h, w = image.shape[-2:]
    r = side / math.sqrt(w * h)
    size = (max(1, int(h * r)), max(1, int(w * r)))
    if size == (h, w):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=r < 1)[0]


__all__ = ["ScalePlan", "below_level", "fills_floor", "kernel_grids", "ladder", "plan_levels", "probe_scores",
           "resize_to_side", "template_score_maps", "template_shapes"]
