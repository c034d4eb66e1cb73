"""Colour re-scoring: a detection's score times the colour agreement of its region with its class image.

OS2D's score is a correlation of backbone features, which are trained for shape more than colour: a package in
another colour (the neighbouring flavour, a hue-shifted look-alike) scores almost as high as the real one. This
step multiplies each detection's score by ``sim ** gamma`` (``InferenceConfig.colour_rescore`` = gamma; 0 = off;
a negative score is divided by it, so that a poor colour match always demotes),
where ``sim`` in [0, 1] is the Bhattacharyya coefficient of two colour histograms:

- of the class image (each view, computed when the class is added; :attr:`ClassGallery.view_colour`), and
- of the detection's box, its inner 80% (10% off each side, where the box's border is mostly background), in
  the largest image of the pyramid reduced to at most 512 px (antialiased).

The histogram (36 bins, sums to 1) is over hue and saturation for coloured pixels (16 hue x 2 saturation bins:
saturation >= 0.25 and value >= 0.2; saturation split at 0.6) and over value for the others (4 grey bins), so
it ignores where colours are (boxes are loose, views rotate) and most of the illumination's brightness.
The second look's chromatic factor (:func:`chromatic_similarity`, ``InferenceConfig.verify_chroma``, off by default)
compares the 32 coloured bins alone, renormalised, where both histograms have at least ``CHROMA_MIN_MASS`` of them.

Off by default: gamma 0.5 passed a rule written before the measurement on two tuning sets, but lowered mAP on
the held-out sets (README, "Colour re-scoring"); it helps where look-alikes differ mainly in colour. With several
views of a class the best-agreeing view counts; a view without a histogram (galleries saved before it was kept)
leaves the score unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from os2d.results import Detections

NUM_BINS = 36  # 16 hues x 2 saturations + 4 greys
_HUES, _GREYS = 16, 4
_MIN_SAT, _MIN_VAL, _HIGH_SAT = 0.25, 0.2, 0.6
REGION_IMAGE_SIDE = 512  # the image is reduced to at most this side before the boxes' histograms
REGION_INSET = 0.1  # share of the box's width / height dropped on each side
CHROMATIC_BINS = 2 * _HUES  # the first bins of a histogram: the coloured pixels (hue x saturation)
CHROMA_MIN_MASS = 0.3  # chromatic agreement only between histograms with at least this share of coloured pixels


def pixel_bins(image: Tensor) -> Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> (..., H, W) int64 histogram bin of every pixel."""
    r, g, b = image.unbind(dim=-3)
    value, _ = image.max(dim=-3)
    low, _ = image.min(dim=-3)
    span = value - low
    sat = torch.where(value > 0, span / value.clamp_min(1e-12), torch.zeros_like(value))
    safe = span.clamp_min(1e-12)
    # hue in [0, 1): sector of the largest channel, as in colorsys / PIL
    hue = torch.where(value == r, (g - b) / safe, torch.where(value == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = torch.where(span > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    chromatic = (sat >= _MIN_SAT) & (value >= _MIN_VAL)
    hue_bin = (hue * _HUES).long().clamp_(max=_HUES - 1) * 2 + (sat >= _HIGH_SAT).long()
    grey_bin = 2 * _HUES + (value * _GREYS).long().clamp_(max=_GREYS - 1)
    return torch.where(chromatic, hue_bin, grey_bin)


def colour_histogram(image: Tensor) -> Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> (..., 36) normalised hue/saturation/grey histogram (sums to 1)."""
    bins = pixel_bins(image).flatten(-2)  # (..., H*W)
    counts = torch.zeros(*bins.shape[:-1], NUM_BINS, dtype=image.dtype, device=image.device)
    counts.scatter_add_(-1, bins, torch.ones_like(bins, dtype=image.dtype))
    return counts / counts.sum(dim=-1, keepdim=True).clamp_min(1)


def _reduced(image: Tensor, side: int) -> Tensor:
    """(3, H, W) -> the same image with its longer side at most ``side`` (antialiased bilinear), or itself."""
    h, w = image.shape[-2:]
    scale = side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def class_colour(image: Tensor) -> Tensor:
    """(3, H, W) class image in [0, 1] -> (36,) its histogram (after an antialiased resize to at most 128 px)."""
    return colour_histogram(_reduced(image, 128))


def region_colours(image: Tensor, boxes_xyxy: Tensor) -> Tensor:
    """(3, H, W) image in [0, 1], (N, 4) boxes in its pixels -> (N, 36) histograms of the boxes' inner regions.

    The image is first reduced (antialiased) to at most :data:`REGION_IMAGE_SIDE` px; every box's histogram is then
    read from per-bin integral images (four lookups per box), so thousands of boxes cost about as much as one.
    Boxes are clipped to the image; a box with no pixel inside gets an all-zero histogram (similarity 0)."""
    _, h, w = image.shape
    image = _reduced(image, REGION_IMAGE_SIDE)
    small_h, small_w = image.shape[-2:]
    bins = pixel_bins(image.clamp(0, 1))  # (h, w)
    onehot = torch.zeros(NUM_BINS, small_h, small_w).scatter_(0, bins[None], 1.0)  # (36, h, w)
    integral = F.pad(onehot.cumsum(1).cumsum(2), (1, 0, 1, 0))  # (36, h+1, w+1); float32 counts < 2^24: exact
    sx, sy = small_w / w, small_h / h
    x0, y0, x1, y1 = boxes_xyxy.float().unbind(dim=-1)
    dx, dy = REGION_INSET * (x1 - x0), REGION_INSET * (y1 - y0)
    left = ((x0 + dx) * sx).round().long().clamp(0, small_w)
    right = ((x1 - dx) * sx).round().long().clamp(0, small_w)
    top = ((y0 + dy) * sy).round().long().clamp(0, small_h)
    bottom = ((y1 - dy) * sy).round().long().clamp(0, small_h)
    right, bottom = torch.maximum(right, left), torch.maximum(bottom, top)
    counts = (integral[:, bottom, right] - integral[:, top, right] - integral[:, bottom, left]
              + integral[:, top, left]).T  # (N, 36)
    return counts / counts.sum(dim=-1, keepdim=True).clamp_min(1)


def colour_similarity(regions: Tensor, views: Tensor) -> Tensor:
    """Bhattacharyya coefficients: (N, 36) x (M, 36) -> (N, M) in [0, 1]."""
    return regions.clamp_min(0).sqrt() @ views.clamp_min(0).sqrt().T


def chromatic_similarity(regions: Tensor, views: Tensor, min_mass: float = CHROMA_MIN_MASS) -> Tensor:
    """Bhattacharyya coefficients of the coloured parts alone: (N, 36) x (M, 36) -> (N, M) in [0, 1], each
    histogram's :data:`CHROMATIC_BINS` renormalised to sum 1 (greys dropped); NaN where either has less than
    ``min_mass`` of its pixels coloured (a grey crop or class image: no colour to compare)."""
    h, c = regions[:, :CHROMATIC_BINS].clamp_min(0), views[:, :CHROMATIC_BINS].float().clamp_min(0)
    mh, mc = h.sum(dim=1), c.sum(dim=1)  # (N,), (M,) chromatic mass
    sims = (h / mh.clamp_min(1e-12)[:, None]).sqrt() @ (c / mc.clamp_min(1e-12)[:, None]).sqrt().T  # (N, M)
    enough = (mh[:, None] >= min_mass) & (mc[None, :] >= min_mass)  # NaN masses (unknown views) compare False
    return torch.where(enough, sims, torch.full_like(sims, math.nan))


def rescore_factors(image: Tensor, scale: tuple[float, float], boxes_xyxy: Tensor, labels: Tensor,
                    view_colour: Tensor, view_class: Tensor, gamma: float) -> Tensor:
    """(N,) factors ``sim ** gamma`` for detections (boxes in original pixels, ``scale`` = (sx, sy) from
    original to ``image`` pixels); ``sim`` is the best over the views of each detection's class; views whose
    histogram is unknown (NaN) give factor 1."""
    n = boxes_xyxy.shape[0]
    if n == 0 or gamma == 0:
        return torch.ones(n)
    boxes = boxes_xyxy.float() * torch.tensor([scale[0], scale[1], scale[0], scale[1]])
    known = ~torch.isnan(view_colour).any(dim=-1)  # (V,)
    sims = colour_similarity(region_colours(image, boxes), torch.nan_to_num(view_colour.float()))  # (N, V)
    same = view_class.view(1, -1) == labels.view(-1, 1)  # (N, V)
    best = sims.masked_fill(~(same & known.view(1, -1)), -1.0).amax(dim=1)  # (N,)
    factor = best.clamp_min(1e-6) ** gamma
    return torch.where(best < 0, torch.ones_like(factor), factor)  # no known view of that class: unchanged


def rescore_detections(dets: Detections, image: Tensor, view_colour: Tensor, view_class: Tensor, gamma: float, *,
                       score_threshold: float | None = None, max_detections: int | None = None) -> Detections:
    """Detections (original pixels, any order) with every score times its colour factor (:func:`rescore_factors`),
    measured on ``image`` (3, h, w) in [0, 1] (the original or a resized copy); sorted by the new score, then
    ``score_threshold`` and ``max_detections`` applied to it (so a capped result is a prefix of an uncapped one)."""
    width, height = dets.image_size
    scale = (image.shape[-1] / width, image.shape[-2] / height)
    factors = rescore_factors(image, scale, dets.boxes_xyxy, dets.labels, view_colour, view_class, gamma)
    return apply_score_factors(dets, factors, score_threshold=score_threshold, max_detections=max_detections)


def rescored(scores: Tensor, factors: Tensor) -> Tensor:
    """(N,) scores times their (N,) positive factors; a factor < 1 demotes, so negative scores (correlations can be)
    are divided by it, not multiplied."""
    return torch.where(scores >= 0, scores * factors, scores / factors)


def apply_score_factors(dets: Detections, factors: Tensor, *, score_threshold: float | None = None,
                        max_detections: int | None = None) -> Detections:
    """Detections with every score times its (N,) positive factor (:func:`rescored`), re-sorted by the new score,
    then ``score_threshold`` and ``max_detections`` applied (a capped result is a prefix of an uncapped one)."""
    scores = rescored(dets.scores, factors)
    order = torch.argsort(scores, descending=True, stable=True)
    if score_threshold is not None:
        order = order[scores[order] >= score_threshold]
    if max_detections is not None:
        order = order[:max_detections]
    out = dets.filter(order)
    out.scores = scores[order]
    return out
