"""Second look: re-score the best detections by comparing their crops with the class at the class image's size.

The heads score a location on the stride-16 feature map of a pyramid level, where a detection covers ~15 x 15
cells of a photo that was resized for the whole image. This step takes each of an image's ``verify_top`` best
detections, resamples the photo inside it to area ``verify_size``^2 (``InferenceConfig.verify_size``, 160; None:
``class_image_size``^2 = 240^2) with the class image's aspect ratio and encodes that crop exactly like a class image
(backbone, S x S grid, L2-normal cells). The class grids are the gallery's, encoded at ``class_image_size``: both
are pooled to the same S x S grid.
Its agreement ``v`` with the class is the mean over the pooled inner cells of the cell-wise cosine with the class
grid (the OS2D score at the identity alignment, now between two class-sized images; best over the class's views).
The new score is ``score * max(v, 0.01) ** gamma`` (``InferenceConfig.verify_rescore`` = gamma; a negative score
is divided), re-sorted; detections beyond the ``verify_top`` looked at are dropped (their raw scores are not
comparable with the re-scored ones).

Rivals (``InferenceConfig.verify_rivals`` = delta, 8 by default): the same crop is compared with every other class of
the gallery, r the best of those agreements, and the factor is also multiplied by ``(v / max(v, r)) ** delta`` (both
clamped to ``MIN_AGREEMENT``): a look-alike whose crop fits another class better goes down; a crop that fits its
own class best keeps its factor.

Colour in the rivals (``InferenceConfig.verify_colour`` = g > 0; g = 1, m = 1.1 by default): both sides of the
rivals' comparison are multiplied by the colour agreement s (Bhattacharyya coefficient of 36-bin histograms,
:mod:`os2d.inference.colour`) of the crop's inner 80% with the class view compared: ``a = max(v, 0.01) * s_own ** g`` against the best
``max(r_u, 0.01) * s_u ** g`` over the views u of other classes. Colour then demotes a detection only where another
class fits better in features and colour together; views without a known histogram count with s = 1. With
``InferenceConfig.verify_colour_margin`` = m the colour ratio ``(s_u / s_own) ** g`` is clamped to [1/m, m]: colour then
decides only between classes whose features agree within the factor m (a tie-breaker among look-alikes).

Chromatic colour (``InferenceConfig.verify_chroma`` = t > 0; off by default since recipes/verify_chroma_real): the factor is also multiplied by
``max(CHROMA_FLOOR, min(1, sim / t))`` (floor 0.25), ``sim`` the Bhattacharyya coefficient of the coloured bins alone
(greys dropped, renormalised; :func:`os2d.inference.colour.chromatic_similarity`) of the crop's inner 80% and the best
view of the detection's own class, computed only where both have at least ``CHROMA_MIN_MASS`` (30%) of their pixels
coloured; otherwise the factor is 1. Packages are mostly white or grey and the rivals' full histograms hardly tell
them apart; their printed colours do. It also acts on look-alikes that are not in the gallery, which the rivals
cannot see.

Crops (``InferenceConfig.verify_crop``):
    aligned  the parallelogram of the alignment the head estimated (``Detections.corners_xy``), warped into the
             class image's frame, so rotations and shears are undone before the cell-wise comparison;
    box      the detection's axis-aligned box.

Chosen by rules written before the measurement (README, "Second look"): ``aligned`` with gamma 2; crops of 160^2
(2.25x fewer pixels than 240^2, the same mAP on the tuning sets); rivals with delta 4 (+3.55 mAP on average), then 8 under the
later aspect anchors (+0.77 on three tuning sets); colour in the rivals with g = 1 bounded to m = 1.1 (+1.25 on three
tuning sets; unbounded, the logos lost 1.1); the chromatic factor with t = 0.5 (+1.32 / +3.63 / +0.15 on the three
tuning sets; recipes/verify_chroma), then its floor 0.25 (no tuning set moved by more than 0.01; recipes/verify_chroma_floor);
the chromatic factor off again by a rule judged on real photos alone (FL27 training brands +0.15, their other sixth
-0.24, real package photos +0.02; recipes/verify_chroma_real).

Shape search (``InferenceConfig.reshape_top`` = K > 0): the heads barely stretch the square anchor, so wide or tall
objects get squarish parallelograms. Each of the K best looked-at detections whose parallelogram's aspect ratio
differs from its class image's by more than ``RESHAPE_MIN_RATIO`` is looked at again stretched toward the class's
aspect ratio (centre and area kept; ``RESHAPE_BETAS``: aspect^(1 - beta) * class aspect^beta) and takes the shape
whose crop agrees best with the class; its score stays the one of its own shape.

Shape glossary: N detections, n of one class, V views, S the class grid side, C channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from os2d.inference.colour import NUM_BINS as NUM_COLOUR_BINS
from os2d.inference.colour import (
    apply_score_factors,
    chromatic_similarity,
    colour_histogram,
    colour_similarity,
    rescored,
)
from os2d.model.correlation import resize_class_grids
from os2d.model.resample import pool_mask
from os2d.results import Detections

VERIFY_CROPS = ("aligned", "box")
RESHAPE_SCOPES = ("image", "class")  # shape search on the K best of the image, or of each class
VERIFY_REST = ("drop", "floor")  # the detections beyond the top looked at: dropped, or kept at the lowest factor
MIN_AGREEMENT = 0.01  # agreements below this (and negative ones) count as this: a factor, never 0
CHROMA_FLOOR = 0.25  # the chromatic colour factor is at least this: colour alone lowers a score by at most 4x
CROP_CHUNK = 16  # crops per backbone call: 1.45x faster than 87 at once on a 2-core CPU (cache-resident)
RESHAPE_BETAS = (0.5, 1.0)  # shape search: how far toward the class's aspect ratio each candidate goes
RESHAPE_MIN_RATIO = 1.1  # shape search: parallelograms within this factor of the class's aspect ratio are kept
COLOUR_CROP_SIDE = 48  # the crops' colour histograms are read from crops of this area^(1/2) (a histogram needs few)
COLOUR_INSET = 0.1  # share of the crop's width / height dropped on each side before its histogram


def box_corners(boxes: Tensor) -> Tensor:
    """(N, 4) xyxy -> (N, 4, 2) corners in the order of ``Detections.corners_xy`` (tl, tr, bl, br)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([torch.stack([x1, y1], -1), torch.stack([x2, y1], -1), torch.stack([x1, y2], -1),
                        torch.stack([x2, y2], -1)], dim=1)


def crop_grid(corners: Tensor, out_h: int, out_w: int, width: int, height: int) -> Tensor:
    """(N, 4, 2) corners (pixels of a ``width`` x ``height`` image) -> (N, out_h, out_w, 2) ``grid_sample``
    coordinates (align_corners=False) of a crop spanning the parallelogram tl, tr, bl."""
    tl, tr, bl = corners[:, 0], corners[:, 1], corners[:, 2]  # (N, 2)
    u = (torch.arange(out_w, dtype=corners.dtype) + 0.5) / out_w  # (w,) in (0, 1)
    v = (torch.arange(out_h, dtype=corners.dtype) + 0.5) / out_h
    pts = (tl[:, None, None] + u[None, None, :, None] * (tr - tl)[:, None, None]
           + v[None, :, None, None] * (bl - tl)[:, None, None])  # (N, h, w, 2) pixels
    scale = torch.tensor([2.0 / width, 2.0 / height], dtype=corners.dtype)
    return pts * scale - 1.0


def class_views(c: int, view_class: Tensor, view_aspect: Tensor) -> tuple[Tensor, float]:
    """The (v,) view indices of class ``c`` and the aspect ratio (w / h) of its first (original) view's image
    (1.0 without aspect ratios or views)."""
    views = (view_class == c).nonzero().squeeze(1)
    aspect = float(view_aspect[views[0]]) if view_aspect.numel() and views.numel() else 1.0
    return views, aspect


def crop_shape(side: int, aspect: float, minimum: int) -> tuple[int, int]:
    """(w, h) of a crop of area ``side``^2 with aspect ratio ``aspect`` (w / h), each at least ``minimum``."""
    return max(minimum, round(side * math.sqrt(aspect))), max(minimum, round(side / math.sqrt(aspect)))


def sample_crops(image: Tensor, corners: Tensor, w: int, h: int) -> Tensor:
    """(3, H, W) image, (n, 4, 2) parallelograms in its pixels -> (n, 3, h, w) their bilinear resamplings."""
    grid = crop_grid(corners.float(), h, w, image.shape[-1], image.shape[-2])  # (n, h, w, 2)
    return F.grid_sample(image[None].float().expand(len(corners), -1, -1, -1), grid, mode="bilinear",
                         padding_mode="border", align_corners=False)


@torch.no_grad()
def crop_cells(model, image: Tensor, corners: Tensor, labels: Tensor, view_class: Tensor, view_aspect: Tensor, *,
               precision: str = "fp32", size: int | None = None) -> Tensor:
    """(N, S*S, C) the L2-normal class-grid cells (kernel layout) of each detection's crop, encoded like a class
    image: ``image`` (3, H, W) in [0, 1] resampled inside the (N, 4, 2) ``corners`` to area ``size``^2 with the
    aspect ratio of the class ``labels`` (N,) names, then the backbone and the S x S grid (:func:`agreement`'s
    arguments). Detections of a class without views get zeros."""
    cfg = model.config
    s, side = cfg.class_grid_size, size or cfg.class_image_size
    by_shape: dict[tuple[int, int], list[Tensor]] = {}  # crop (w, h) -> detection indices, class by class
    for c in labels.unique().tolist():
        views, aspect = class_views(c, view_class, view_aspect)
        if views.numel():
            by_shape.setdefault(crop_shape(side, aspect, 16), []).append((labels == c).nonzero().squeeze(1))
    out: Tensor | None = None
    # classes whose crops have the same shape share the backbone's batches: fewer, fuller calls (a crop's features do
    # not depend on the other crops of its batch)
    for (w, h), parts in by_shape.items():
        idx = torch.cat(parts)  # (n,)
        crops = sample_crops(image, corners[idx], w, h)  # (n, 3, h, w)
        chunk = math.ceil(len(idx) / math.ceil(len(idx) / CROP_CHUNK))  # <= CROP_CHUNK, near-equal: no tiny last call
        grids = torch.cat([resize_class_grids(model.extract_features(crops[i : i + chunk],
                                                                     align_to_anchors=False, precision=precision), s)
                           for i in range(0, len(idx), chunk)])  # (n, C, S, S)
        cells = grids.permute(0, 3, 2, 1).reshape(len(idx), s * s, -1)  # kernel layout (n, S*S, C)
        if out is None:
            out = cells.new_zeros(labels.shape[0], s * s, cells.shape[-1])
        out[idx] = cells
    return out if out is not None else image.new_zeros(labels.shape[0], s * s, 0)


@torch.no_grad()
def crop_colours(image: Tensor, corners: Tensor, labels: Tensor, view_class: Tensor, view_aspect: Tensor) -> Tensor:
    """(N, 36) colour histograms of the inner 80% of each detection's crop: ``image`` (3, H, W) in [0, 1] resampled
    inside the (N, 4, 2) ``corners`` to area ``COLOUR_CROP_SIDE``^2 with the aspect ratio of the class ``labels``
    (N,) names (the crop :func:`crop_cells` encodes, at a lower resolution)."""
    out = image.new_zeros(labels.shape[0], NUM_COLOUR_BINS)
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().squeeze(1)  # (n,)
        w, h = crop_shape(COLOUR_CROP_SIDE, class_views(c, view_class, view_aspect)[1], 8)
        crops = sample_crops(image, corners[idx], w, h)  # (n, 3, h, w)
        dy, dx = round(COLOUR_INSET * h), round(COLOUR_INSET * w)
        out[idx] = colour_histogram(crops[:, :, dy : h - dy, dx : w - dx].clamp(0, 1))
    return out


def colour_weights(image: Tensor, corners: Tensor, labels: Tensor, view_class: Tensor, view_aspect: Tensor,
                   view_colour: Tensor, power: float, crop_hist: Tensor | None = None) -> Tensor:
    """(N, V) ``s ** power``: each crop's colour agreement with every class view (:func:`crop_colours`,
    Bhattacharyya coefficient), 1 for views whose histogram is unknown (NaN). ``crop_hist``: the (N, 36) crop
    histograms if already computed."""
    known = ~torch.isnan(view_colour).any(dim=-1)  # (V,)
    if crop_hist is None:
        crop_hist = crop_colours(image, corners, labels, view_class, view_aspect)
    sims = colour_similarity(crop_hist, torch.nan_to_num(view_colour.float()))  # (N, V)
    sims = torch.where(known[None], sims, torch.ones_like(sims))
    return sims.clamp(min=MIN_AGREEMENT) ** power


def chroma_factors(crop_hist: Tensor, labels: Tensor, view_colour: Tensor, view_class: Tensor,
                   threshold: float) -> Tensor:
    """(N,) chromatic colour factors ``min(1, sim / threshold)`` (at least ``CHROMA_FLOOR``) of (N, 36) crop
    histograms (:func:`crop_colours`):
    ``sim`` the best chromatic agreement (:func:`os2d.inference.colour.chromatic_similarity`) with a view of the
    detection's own class (``labels`` (N,)); 1 where no own view can be compared (the crop or every own view mostly
    grey, or histograms unknown)."""
    if view_class.numel() == 0:
        return torch.ones(len(labels))
    sims = chromatic_similarity(crop_hist, torch.nan_to_num(view_colour.float(), nan=-1.0))  # (N, V) NaN: no colour
    own = view_class.view(1, -1) == labels.view(-1, 1)  # (N, V)
    best = sims.nan_to_num(-1.0).masked_fill(~own, -1.0).amax(dim=1)  # (N,) -1: nothing to compare
    return torch.where(best < 0, torch.ones_like(best), (best / threshold).clamp(min=CHROMA_FLOOR, max=1.0))


def project_cells(cells: Tensor, projection: Tensor | None) -> Tensor:
    """(..., C) L2-normal cells -> (..., D) the same through a learned (C, D) ``projection`` of the second look
    (trained by ``recipes/verify_projection``; not a default), L2-normalised again; unchanged without one."""
    if projection is None:
        return cells
    return F.normalize(cells.float() @ projection.to(cells.device, torch.float32), dim=-1, eps=1e-6)


@torch.no_grad()
def agreement(model, image: Tensor, corners: Tensor, labels: Tensor, kernels: Tensor, view_class: Tensor,
              view_aspect: Tensor, *, precision: str = "fp32", size: int | None = None,
              rivals: Tensor | None = None, projection: Tensor | None = None,
              colour: tuple[float, Tensor, float] | None = None, crop_hist: Tensor | None = None) -> Tensor:
    """(N,) agreement in [-1, 1] of each detection's crop with its class.

    Args:
        model: the :class:`~os2d.model.Os2dModel` that encoded ``kernels``.
        image: (3, H, W) RGB in [0, 1]; ``corners`` (N, 4, 2) in its pixels.
        labels: (N,) class index of each detection.
        kernels: (V, S*S, C) the gallery's normalised class grids; ``view_class`` (V,), ``view_aspect`` (V,).
        precision: the crops' trunk arithmetic (``InferenceConfig.trunk_precision``).
        size: the crops' side: area ``size``^2 with the class image's aspect ratio (None: ``class_image_size``,
            the size the class grids were encoded at; ``InferenceConfig.verify_size``).
        rivals: an (N,) tensor that receives, per detection, the crop's best agreement with any *other* class of
            ``view_class`` (-1 where there is none); None: not computed.
        projection: (C, D) learned projection of the cells before the cosines (:func:`project_cells`); None: the
            backbone's cells as they are.
        colour: (g, (V, 36) view colour histograms, m): with g > 0 and ``rivals``, colour enters the rivals'
            comparison (module docstring): ``rivals`` receives the best ``max(r_u, 0.01) * w_u`` with
            ``w_u = clamp((s_u / s_own) ** g, 1 / m, m)``, so that ``v / max(v, rivals)`` compares features times
            colour on both sides, colour moving it by at most the factor m.
    """
    cfg = model.config
    inner = pool_mask(cfg.class_grid_size, cfg.pool_border) > 0  # (S*S,) symmetric: kernel order does not matter
    out = torch.full((labels.shape[0],), -1.0)
    cells_all = crop_cells(model, image, corners, labels, view_class, view_aspect, precision=precision, size=size)
    kernels = project_cells(kernels, projection)
    # (V, I*C) the inner cells of every view, for the rivals: one matrix product per class's crops
    inner_kernels = kernels[:, inner].float().flatten(1) if rivals is not None else None
    weights = None  # (N, V) s ** g of every crop and view, for the rivals
    if rivals is not None and colour is not None and colour[0] > 0:  # view_colour has a (maybe NaN) row per view
        weights = colour_weights(image, corners, labels, view_class, view_aspect, colour[1], colour[0], crop_hist)
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().squeeze(1)  # (n,)
        views, _ = class_views(c, view_class, view_aspect)
        if views.numel() == 0:
            continue
        cells = project_cells(cells_all[idx], projection)  # (n, S*S, C)
        cos = torch.einsum("nkc,vkc->nvk", cells, kernels[views].to(cells.dtype))[..., inner].mean(-1)  # (n, V)
        out[idx] = cos.amax(dim=1).float()
        if inner_kernels is not None and bool((view_class != c).any()):
            theirs = cells[:, inner].float().flatten(1) @ inner_kernels.T / int(inner.sum())  # (n, V) every view
            mine = view_class.to(theirs.device) == c  # (V,)
            if weights is not None:  # features x colour on both sides, written as a rival for the own v alone
                w = weights[idx].to(theirs.device)  # (n, V)
                own_w = w[:, mine].amax(dim=1, keepdim=True)  # (n, 1) the best-coloured own view
                ratio = (w / own_w).clamp(min=1.0 / colour[2], max=colour[2])  # (n, V) at most m either way
                theirs = theirs.clamp(min=MIN_AGREEMENT) * ratio
            theirs[:, mine] = -math.inf
            rivals[idx] = theirs.amax(dim=1).cpu()  # (n,) the best view of another class
    return out


def stretched_corners(corners: Tensor, aspect: Tensor) -> Tensor:
    """(N, 4, 2) parallelograms (tl, tr, bl, br) -> the same with centre and area kept and the ratio of the sides
    |tr - tl| / |bl - tl| set to ``aspect`` (N,)."""
    tl, tr, bl = corners[:, 0], corners[:, 1], corners[:, 2]
    u, v = tr - tl, bl - tl  # (N, 2) the class's x and y axes
    k = (aspect / (u.norm(dim=1) / v.norm(dim=1).clamp(min=1e-6)).clamp(min=1e-6)).sqrt()[:, None]  # (N, 1)
    u, v = u * k, v / k
    centre = corners.mean(dim=1)  # (N, 2)
    tl = centre - (u + v) / 2
    return torch.stack([tl, tl + u, tl + v, tl + u + v], dim=1)


def reshape_candidates(corners: Tensor, class_aspect: Tensor) -> tuple[Tensor, Tensor]:
    """Shape-search candidates for (N, 4, 2) parallelograms with (N,) class aspect ratios (w / h): the (M, 4, 2)
    stretched parallelograms and the (M,) index of the detection each belongs to (none where the shape is already
    within ``RESHAPE_MIN_RATIO`` of the class's)."""
    tl, tr, bl = corners[:, 0], corners[:, 1], corners[:, 2]
    own = (tr - tl).norm(dim=1) / (bl - tl).norm(dim=1).clamp(min=1e-6)  # (N,)
    off = (class_aspect / own.clamp(min=1e-6)).log().abs() > math.log(RESHAPE_MIN_RATIO)
    idx = off.nonzero().squeeze(1)
    if idx.numel() == 0:
        return corners.new_zeros(0, 4, 2), idx
    cands = [stretched_corners(corners[idx], own[idx] ** (1 - b) * class_aspect[idx] ** b) for b in RESHAPE_BETAS]
    return torch.cat(cands), idx.repeat(len(RESHAPE_BETAS))


def reshape_looked(model, image: Tensor, corners: Tensor, labels: Tensor, own_v: Tensor, kernels: Tensor,
                   view_class: Tensor, view_aspect: Tensor, *, precision: str = "fp32",
                   size: int | None = None, projection: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Shape search: (N, 4, 2) corners (pixels of ``image``) with each replaced by its stretched candidate whose
    crop agrees best with the class, where that beats ``own_v`` (N,), the agreement of its own shape; and the (N,)
    mask of the replaced ones. A candidate whose box, clipped to the image, is empty is not a detection (as for
    the heads' boxes, ``os2d.inference.decode.clip_boxes``) and is not looked at: a parallelogram that mostly lies
    outside the photo can be stretched off it entirely, and its crop is then the photo's replicated border."""
    class_aspect = torch.tensor([class_views(c, view_class, view_aspect)[1] for c in labels.tolist()])
    cands, owner = reshape_candidates(corners.float(), class_aspect)
    bound = torch.tensor([image.shape[-1], image.shape[-2]], dtype=cands.dtype)
    lo, hi = cands.amin(dim=1).clamp(min=0), torch.minimum(cands.amax(dim=1), bound)  # (M, 2) the clipped box
    on_image = (hi > lo).all(dim=1)
    cands, owner = cands[on_image], owner[on_image]
    out, moved = corners.clone(), torch.zeros(len(corners), dtype=torch.bool)
    if owner.numel() == 0:
        return out, moved
    v = agreement(model, image, cands, labels[owner], kernels, view_class, view_aspect, precision=precision,
                  size=size, projection=projection)
    best_v = own_v.clone().float()
    for m in range(len(owner)):  # a handful: K detections x len(RESHAPE_BETAS)
        i = int(owner[m])
        if v[m] > best_v[i]:
            best_v[i], out[i], moved[i] = v[m], cands[m].to(out.dtype), True
    return out, moved


def verify_detections(model, dets: Detections, image: Tensor, kernels: Tensor, view_class: Tensor,
                      view_aspect: Tensor, gamma: float, *, crop: str = "aligned", top: int = 100,
                      score_threshold: float | None = None, max_detections: int | None = None,
                      precision: str = "fp32", reshape_top: int = 0, rest: str = "drop",
                      size: int | None = None, reshape_scope: str = "image", rival_power: float = 0.0,
                      projection: Tensor | None = None,
                      rival_colour: tuple[float, Tensor, float] | None = None,
                      chroma: tuple[float, Tensor] | None = None) -> Detections:
    """The ``top`` best of ``dets`` (original pixels, sorted by score) re-scored by their agreement, re-sorted;
    then ``score_threshold`` and ``max_detections`` on the new scores. ``image`` (3, h, w) in [0, 1] is the
    photo or a resized copy of it.

    A look never raises a score (the factor is at most 1; negative scores are divided by it), so detections are
    looked at in order of their score, CROP_CHUNK at a time, and the looks stop as soon as the next score is below
    ``score_threshold`` or below the ``max_detections``-th best new score so far: those could not be in the
    result. The result is the one of looking at all ``top``; a threshold or a small cap makes it cheaper.
    ``precision``: the crops' trunk arithmetic (``InferenceConfig.verify_precision``). ``reshape_top`` = K > 0:
    the shape search (module docstring) on the K best re-scored detections, on the shape that was looked at
    (with ``crop="box"``: the box; a moved detection's corners become its new box's), the K best of the image
    (``reshape_scope="image"``) or of each class (``"class"``: a class's boxes then do not depend on the other classes
    run). ``rest``: the detections beyond ``top`` are dropped (``"drop"``, the default) or kept with their raw score
    times the lowest factor of the looked-at ones (``"floor"``; measured in ``benchmarks/verify_top.py``, not adopted). ``size``: the crops' side
    (:func:`agreement`; ``InferenceConfig.verify_size``). ``rival_power`` = delta > 0: the factor is also multiplied
    by ``(v / max(v, r)) ** delta`` (both clamped to ``MIN_AGREEMENT``), r the crop's best agreement with another
    class of the gallery: a detection whose crop looks more like another class goes down
    (``InferenceConfig.verify_rivals``). ``projection``: (C, D) learned projection of the cells before every cosine
    (:func:`project_cells`; None: the backbone's cells). ``rival_colour``: (g, (V, 36) view colour histograms,
    m), colour in the rivals' comparison where g > 0, moving it by at most the factor m (module docstring;
    ``InferenceConfig.verify_colour`` and ``verify_colour_margin``). ``chroma``: (t, (V, 36) view colour histograms):
    with t > 0 the factor is also multiplied by the crop's chromatic agreement with its class, ``min(1, sim / t)``
    (:func:`chroma_factors`; ``InferenceConfig.verify_chroma``)."""
    if crop not in VERIFY_CROPS:
        raise ValueError(f"verify crop must be one of {VERIFY_CROPS}, got {crop!r}")
    if reshape_scope not in RESHAPE_SCOPES:
        raise ValueError(f"reshape scope must be one of {RESHAPE_SCOPES}, got {reshape_scope!r}")
    if rest not in VERIFY_REST:
        raise ValueError(f"verify rest must be one of {VERIFY_REST}, got {rest!r}")
    order = torch.argsort(dets.scores, descending=True, stable=True)
    kept = dets.filter(order if rest == "floor" else order[:top])  # sorted by raw score
    if len(kept) == 0 or gamma == 0:
        return apply_score_factors(kept, torch.ones(len(kept)), score_threshold=score_threshold,
                                   max_detections=max_detections)
    width, height = dets.image_size
    scale = torch.tensor([image.shape[-1] / width, image.shape[-2] / height])
    n_all, n = len(kept), min(top, len(kept))
    corners = (kept.corners_xy[:n] if crop == "aligned" else box_corners(kept.boxes_xyxy[:n])).float() * scale
    prunable = score_threshold is not None or (max_detections is not None and max_detections < n)
    step = CROP_CHUNK if prunable else n
    factors, agreements = torch.ones(n_all), torch.full((n,), -1.0)
    use_chroma = chroma is not None and chroma[0] > 0
    done = 0
    while done < n:
        if done and prunable and kept.scores[done] < _bound(kept.scores[:done], factors[:done], score_threshold,
                                                            max_detections):
            break
        end = min(n, done + step)
        rivals = torch.full((end - done,), -1.0) if rival_power > 0 else None
        hist = None  # the crops' colour histograms, where the rivals' colour or the chromatic factor reads them
        if use_chroma or (rivals is not None and rival_colour is not None and rival_colour[0] > 0):
            hist = crop_colours(image, corners[done:end], kept.labels[done:end], view_class, view_aspect)
        v = agreement(model, image, corners[done:end], kept.labels[done:end], kernels, view_class, view_aspect,
                      precision=precision, size=size, rivals=rivals, projection=projection, colour=rival_colour,
                      crop_hist=hist)
        own = v.clamp(min=MIN_AGREEMENT)
        factors[done:end] = own ** gamma
        if rivals is not None:
            factors[done:end] *= (own / torch.maximum(own, rivals)) ** rival_power
        if use_chroma:
            factors[done:end] *= chroma_factors(hist, kept.labels[done:end], chroma[1], view_class, chroma[0])
        agreements[done:end] = v
        done = end
    if rest == "floor" and done:
        looked, factors[done:] = kept, factors[:done].min()  # the unlooked: the image's lowest factor
    else:
        looked, factors = kept.filter(torch.arange(done)), factors[:done]
    if reshape_top > 0:
        new = rescored(looked.scores[:done], factors[:done])
        best = top_per_scope(new, looked.labels[:done], reshape_top, reshape_scope)  # (K,) or (<= K per class,)
        shaped, moved = reshape_looked(model, image, corners[best], looked.labels[best], agreements[best], kernels,
                                       view_class, view_aspect, precision=precision, size=size,
                                       projection=projection)
        idx, new = best[moved], (shaped[moved] / scale).to(looked.corners_xy.dtype)  # (m, 4, 2) original pixels
        bound = torch.tensor([width, height], dtype=new.dtype)
        looked.corners_xy[idx] = new  # looked is a copy (filter): nothing outside is written
        looked.boxes_xyxy[idx] = torch.cat([new.amin(dim=1).clamp(min=0), torch.minimum(new.amax(dim=1), bound)],
                                           dim=1).to(looked.boxes_xyxy.dtype)
    return apply_score_factors(looked, factors, score_threshold=score_threshold, max_detections=max_detections)


def top_per_scope(scores: Tensor, labels: Tensor, k: int, scope: str) -> Tensor:
    """Indices of the ``k`` best of (N,) ``scores``, best first: over all (``scope="image"``) or of each class
    (``"class"``: the ``k`` best of every label, in the order of their scores)."""
    order = torch.argsort(scores, descending=True, stable=True)
    if scope == "image":
        return order[:k]
    ranked = labels[order]
    rank = torch.zeros_like(order)
    for c in ranked.unique():
        mask = ranked == c
        rank[mask] = torch.arange(int(mask.sum()))
    return order[rank < k]


def _bound(scores: Tensor, factors: Tensor, score_threshold: float | None, max_detections: int | None) -> float:
    """The score a detection not yet looked at must reach to possibly be in the result."""
    bound = -math.inf if score_threshold is None else score_threshold
    if max_detections and len(scores) >= max_detections:
        bound = max(bound, float(rescored(scores, factors).topk(max_detections).values[-1]))
    return bound


__all__ = ["CHROMA_FLOOR", "COLOUR_CROP_SIDE", "COLOUR_INSET", "MIN_AGREEMENT", "RESHAPE_BETAS", "RESHAPE_MIN_RATIO", "RESHAPE_SCOPES", "VERIFY_CROPS", "VERIFY_REST",
           "agreement", "box_corners", "chroma_factors", "class_views", "colour_weights", "crop_cells", "crop_colours", "crop_grid", "crop_shape", "project_cells", "reshape_candidates",
           "reshape_looked", "sample_crops", "stretched_corners", "top_per_scope", "verify_detections"]
