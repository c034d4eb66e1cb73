"""Class shortlist: rank the gallery's classes for one image cheaply, before the full OS2D heads.

With thousands of classes the heads dominate: each class view costs a correlation with all S*S class cells, a
TransformNet pass and a resampling at every location (~0.1 s per class at 60x80 on a CPU), while the backbone
runs once per image. The shortlist scores every class with one matrix product per pyramid level and keeps the
heads for the K best classes only.

Score of a class view (R-MAC-style regional matching, Tolias et al. 2016): the class descriptor is the mean of
the normalised class cells the heads pool over (the S x S grid without its ``pool_border``), re-normalised; an
image window descriptor is the mean of the normalised input features over a window of the same size (11 x 11
cells for S = 15, border 2) around each location, re-normalised; the view's score is the best cosine over all
windows and pyramid levels. A class's score is the best over its views (rotations, flips, several class
images). On FlickrLogos-27 (20 brands, ImageNet features) leaving the border cells out of the class descriptor
raised the recall of the GT brand in a 10-shortlist from 0.68 to 0.76 (in a 3-shortlist from 0.35 to 0.45);
window sides from 7 to 13 cells and 2x2 or 3x3 sub-block matching changed it by at most 0.03.

Shape glossary: V class views, C channels, S the class grid side, H x W a level's feature map, R = H*W windows.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch import Tensor

from os2d.model.correlation import l2_normalize

# Views scored per matrix product: bounds the (views, windows) score matrix to ~256 MB at 64x64 windows.
VIEW_CHUNK = 16384


def class_descriptors(kernels: Tensor, border: int = 0) -> Tensor:
    """(V, S*S, C) normalised class kernels -> (V, C) unit descriptors: the mean of the cells at least
    ``border`` cells inside the S x S grid, re-normalised."""
    if kernels.dim() != 3:
        raise ValueError(f"kernels must have shape (V, S*S, C), got {tuple(kernels.shape)}")
    v, n, c = kernels.shape
    s = int(round(n**0.5))
    if s * s != n or border < 0 or s - 2 * border < 1:
        raise ValueError(f"cannot take a border of {border} cells from a grid of {n} cells")
    grid = kernels.float().reshape(v, s, s, c)[:, border : s - border, border : s - border]  # symmetric in p, q
    return l2_normalize(grid.mean(dim=(1, 2)), dim=1)


def _window_mean(x: Tensor, window: int, dim: int) -> Tensor:
    """Mean over ``window`` consecutive entries along ``dim``, centred, cut at both ends (prefix sums: O(L))."""
    n = x.shape[dim]
    lo = window // 2
    shape = [1] * x.dim()
    prefix = torch.cat([torch.zeros_like(x.narrow(dim, 0, 1)), x.cumsum(dim)], dim=dim)  # (.., n + 1, ..)
    idx = torch.arange(n, device=x.device)
    start, end = (idx - lo).clamp(0, n), (idx - lo + window).clamp(0, n)
    shape[dim] = n
    count = (end - start).to(x.dtype).view(shape)
    return (prefix.index_select(dim, end) - prefix.index_select(dim, start)) / count


def window_descriptors(features: Tensor, window: int) -> Tensor:
    """(1, C, H, W) input features -> (C, H*W) unit descriptors of the ``window x window`` cell windows.

    Windows are centred on each location (odd ``window``; an even one is centred half a cell up-left) and
    cut at the border: a window partly outside the map averages its inside cells only, so objects at the image
    border still get a full-strength descriptor. The box mean is separable (rows, then columns) and computed
    with prefix sums: the cost does not grow with the window.
    """
    if features.dim() != 4 or features.shape[0] != 1:
        raise ValueError(f"features must have shape (1, C, H, W), got {tuple(features.shape)}")
    if window < 1:
        raise ValueError(f"window must be >= 1 cell, got {window}")
    feats = l2_normalize(features[0].float(), dim=0)  # (C, H, W), same normalisation as the correlation
    pooled = _window_mean(_window_mean(feats, window, dim=1), window, dim=2)  # (C, H, W)
    return l2_normalize(pooled.reshape(pooled.shape[0], -1), dim=0)


@torch.no_grad()
def view_scores(level_features: Sequence[Tensor], class_desc: Tensor, windows: Sequence[int]) -> Tensor:
    """Best window cosine of each class view over all levels and window sizes.

    Args:
        level_features: per pyramid level, (1, C, H, W) input features.
        class_desc: (V, C) from :func:`class_descriptors`.
        windows: window sides in cells.
    Returns:
        (V,) float32 scores in [-1, 1] (in [0, 1] for post-ReLU features).
    """
    v = class_desc.shape[0]
    best = torch.full((v,), -float("inf"))
    if v == 0:
        return best
    for feats in level_features:
        desc = class_desc.to(device=feats.device, dtype=torch.float32)
        for window in windows:
            win = window_descriptors(feats, window)  # (C, R)
            level_best = torch.cat([(desc[i : i + VIEW_CHUNK] @ win).amax(dim=1)
                                    for i in range(0, v, VIEW_CHUNK)])  # (V,)
            best = torch.maximum(best, level_best.float().cpu())
    return best


def class_scores(view_score: Tensor, view_class: Tensor, num_classes: int) -> Tensor:
    """(V,) view scores -> (num_classes,) best view of each class (-inf for a class without views)."""
    out = torch.full((num_classes,), -float("inf"))
    return out.scatter_reduce(0, view_class.cpu().long(), view_score.float().cpu(), reduce="amax")


def top_classes(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` best classes, in increasing index order (ties: the lower index wins)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = scores.numel()
    if k >= n:
        return torch.arange(n)
    # stable sort: equal scores keep index order, so the choice is deterministic
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    return order.sort().values


def views_of_classes(view_class: Tensor, classes: Tensor) -> Tensor:
    """Indices (increasing) of the views that belong to any of ``classes``."""
    return torch.isin(view_class.cpu(), classes.cpu()).nonzero().flatten()


class ClassDescriptorCache:
    """Keeps the class descriptors of the last kernels tensor seen (a gallery's kernels change rarely).

    A new tensor object (a class added or removed makes one) or an in-place change recomputes them.
    """

    def __init__(self) -> None:
        self._source: weakref.ref[Tensor] | None = None
        self._key: tuple[int, int] = (-1, -1)  # (tensor version, border)
        self._desc: Tensor | None = None

    def get(self, kernels: Tensor, border: int = 0) -> Tensor:
        src = self._source() if self._source is not None else None
        key = (kernels._version, border)
        if src is not kernels or self._key != key or self._desc is None:
            self._desc = class_descriptors(kernels, border)
            self._source = weakref.ref(kernels)
            self._key = key
        return self._desc


def shortlist_views(level_features: Sequence[Tensor], kernels: Tensor, view_class: Tensor, num_classes: int,
                    top_k: int, *, grid_size: int, pool_border: int, class_desc: Tensor | None = None,
                    windows: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """The class views to run the heads for: all views of the ``top_k`` best-scoring classes.

    Args:
        level_features: per pyramid level, (1, C, H, W) input features.
        kernels: (V, S*S, C) class-view kernels; ``view_class`` (V,) their classes.
        grid_size, pool_border: the model's class grid side S and the border its heads leave out of pooling.
        class_desc: (V, C) precomputed ``class_descriptors(kernels, pool_border)`` (optional).
        windows: window sides in cells (default: ``grid_size - 2 * pool_border``).
    Returns:
        (view indices (V',) increasing, class scores (num_classes,)).
    """
    desc = class_descriptors(kernels, pool_border) if class_desc is None else class_desc
    if desc.shape[0] != kernels.shape[0]:
        raise ValueError(f"{desc.shape[0]} class descriptors for {kernels.shape[0]} kernels")
    windows = windows or (grid_size - 2 * pool_border,)
    scores = class_scores(view_scores(level_features, desc, windows), view_class, num_classes)
    return views_of_classes(view_class, top_classes(scores, top_k)), scores
