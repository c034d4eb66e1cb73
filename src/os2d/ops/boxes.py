"""Box utilities: areas, IoU, clipping and (batched) non-maximum suppression, in pure PyTorch.

Convention:
    Boxes are ``(x1, y1, x2, y2)`` ("xyxy") in pixels, ``x`` pointing right and ``y`` pointing down,
    with ``x1 <= x2`` and ``y1 <= y2``. Widths and heights are ``x2 - x1`` and ``y2 - y1`` (no "+1"
    convention). A box with ``x2 < x1`` or ``y2 < y1`` is treated as empty (zero area).

The NMS implementation needs no compiled extension (no torchvision) and works on any device. It
follows ``torchvision.ops.nms`` semantics (greedy, IoU strictly greater than the threshold suppresses)
but is vectorised: score-sorted boxes are processed in blocks of ``_BLOCK``; each block is tested with
tensor ops against the kept boxes that a spatial sweep index (bands in y, sorted by x1, windows derived
from the IoU threshold) reports as possible partners, and the greedy order inside a block is resolved
on a small boolean matrix. Temporaries are bounded by ``_MAX_PAIRS`` candidate pairs (no N x N matrix).
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor

__all__ = ["box_area", "box_iou", "clip_boxes_xyxy", "nonempty_mask", "nms", "batched_nms"]

# Boxes of the score-sorted list handled together; the within-block matrix is _BLOCK x _BLOCK.
_BLOCK = 512
# Candidate (block box, kept box) pairs evaluated at once: bounds temporary memory.
_MAX_PAIRS = 1 << 19
# Fixed-point sweeps tried before the exact sequential fallback inside a block.
_MAX_SWEEPS = 8


def _check_boxes(boxes: Tensor, name: str = "boxes") -> None:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dim() < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4), got {tuple(boxes.shape)}")


def _compute_dtype(boxes: Tensor) -> torch.dtype:
    """Floating dtype used for IoU arithmetic (float32/float64 kept; half and integers upcast)."""
    if boxes.dtype in (torch.float32, torch.float64):
        return boxes.dtype
    if boxes.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return torch.float64


def box_area(boxes_xyxy: Tensor, *, plus_one: bool = False) -> Tensor:
    """Area of boxes.

    Convention: xyxy in pixels (x right, y down); inverted boxes (``x2 < x1`` or ``y2 < y1``) have area 0.
    ``plus_one``: the Pascal VOC integer-pixel convention, width = ``x2 - x1 + 1`` (and height alike).

    Args:
        boxes_xyxy: (..., 4) boxes.

    Returns:
        (...) areas, floating point.
    """
    _check_boxes(boxes_xyxy)
    b = boxes_xyxy.to(_compute_dtype(boxes_xyxy))
    w = b[..., 2] - b[..., 0]
    h = b[..., 3] - b[..., 1]
    if plus_one:
        w, h = w + 1, h + 1
    return w.clamp(min=0) * h.clamp(min=0)


def _inter_union(a: Tensor, area_a: Tensor, b: Tensor, area_b: Tensor,
                 plus_one: bool = False) -> tuple[Tensor, Tensor]:
    """Pairwise intersection and union areas of (N, 4) ``a`` and (M, 4) ``b`` -> two (N, M) tensors."""
    iw = torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])
    ih = torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])
    if plus_one:
        iw, ih = iw.add_(1), ih.add_(1)
    inter = iw.clamp_(min=0).mul_(ih.clamp_(min=0))
    union = (area_a[:, None] + area_b[None, :]).sub_(inter)
    return inter, union


def box_iou(a: Tensor, b: Tensor, *, plus_one: bool = False) -> Tensor:
    """Pairwise intersection over union: the one IoU of the package (training targets, NMS checks, VOC
    metrics, the demo's recall).

    Convention: xyxy in pixels (x right, y down), no "+1" unless ``plus_one`` (the Pascal VOC / reference
    integer-pixel convention: widths, heights and overlaps are ``x2 - x1 + 1``, which slightly enlarges every
    box). The IoU of two boxes whose union is empty (both of zero area) is 0, never NaN.

    Args:
        a: (N, 4) boxes.
        b: (M, 4) boxes.
        plus_one: use the "+1" convention.

    Returns:
        (N, M) IoU values in [0, 1], floating point (float64 for integer inputs).
    """
    _check_boxes(a, "a")
    _check_boxes(b, "b")
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"box_iou expects (N, 4) and (M, 4), got {tuple(a.shape)} and {tuple(b.shape)}")
    dtype = torch.promote_types(_compute_dtype(a), _compute_dtype(b))
    a, b = a.to(dtype), b.to(dtype)
    inter, union = _inter_union(a, box_area(a, plus_one=plus_one), b, box_area(b, plus_one=plus_one), plus_one)
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(dtype).tiny), torch.zeros_like(inter))


def clip_boxes_xyxy(boxes: Tensor, width: float, height: float) -> Tensor:
    """Clip boxes to the image ``[0, width] x [0, height]``.

    Convention: xyxy in pixels (x right, y down).

    Args:
        boxes: (..., 4) boxes.
        width: image width in pixels.
        height: image height in pixels.

    Returns:
        (..., 4) clipped boxes, a new tensor (same dtype for floating boxes; integer boxes are promoted
        like ``torch.clamp`` does with float bounds).
    """
    _check_boxes(boxes)
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def nonempty_mask(boxes: Tensor, min_size: float = 0.0) -> Tensor:
    """Which boxes are larger than ``min_size`` in both directions.

    Convention: xyxy in pixels (x right, y down).

    Args:
        boxes: (..., 4) boxes.
        min_size: width and height must be strictly greater than this.

    Returns:
        (...) bool mask.
    """
    _check_boxes(boxes)
    return ((boxes[..., 2] - boxes[..., 0]) > min_size) & ((boxes[..., 3] - boxes[..., 1]) > min_size)


def _resolve_block(over: Tensor) -> Tensor:
    """Greedy keep mask inside one block.

    Args:
        over: (c, c) bool, ``over[i, j]`` true iff ``i < j`` (``i`` scores higher) and ``i`` would
            suppress ``j``.

    Returns:
        (c,) bool: ``keep[j] = not any(keep[i] and over[i, j] for i < j)``, the greedy result.
    """
    c = over.shape[0]
    if not bool(over.any()):
        return torch.ones(c, dtype=torch.bool, device=over.device)
    # Fixed-point sweeps: after t sweeps the first t entries are exact; the fixed point is unique,
    # so a sweep that changes nothing means the whole mask is the greedy answer (usually 2-3 sweeps).
    overf = over.to(torch.float32)
    keep = torch.ones(c, dtype=torch.bool, device=over.device)
    for _ in range(_MAX_SWEEPS):
        new = (keep.to(torch.float32) @ overf) == 0
        if torch.equal(new, keep):
            return keep
        keep = new
    # Long suppression chains: exact sequential pass, only over rows that suppress anything.
    m = over.cpu()
    keep_cpu = torch.ones(c, dtype=torch.bool)
    for i in m.any(dim=1).nonzero().flatten().tolist():
        if keep_cpu[i]:
            keep_cpu &= ~m[i]
    return keep_cpu.to(over.device)


def _partner_reach(extent: Tensor, partner_max: float, t: float) -> tuple[Tensor, Tensor]:
    """How far below / above a box's ``x1`` the ``x1`` of a box with IoU > t can lie (same for y).

    For boxes ``b`` and ``k`` with widths ``w_b``, ``w_k``: ``IoU <= ox / max(w_b, w_k)`` (``ox`` their
    overlap along x), so ``ox > t * max(w)``, which gives ``x1_b - x1_k < (1 - t) * w_k`` with
    ``w_k < w_b / t`` (and ``w_k <= partner_max``), and ``x1_k - x1_b < (1 - t) * w_b``. A relative
    slack keeps the windows supersets despite rounding (candidates are then checked exactly).

    Args:
        extent: (N,) float64 widths (or heights) of the querying boxes.
        partner_max: largest width (height) of a box found through the index.
        t: IoU threshold (>= 0).

    Returns:
        ``(below, above)``: two (N,) float64 reaches.
    """
    one_minus_t = max(1.0 - t, 0.0)
    partner = extent.new_full(extent.shape, partner_max)
    if t > 0:
        partner = torch.minimum(partner, extent / t)
    slack = 1e-3 * (extent + partner) + 1e-9 * partner_max
    return partner * one_minus_t + slack, extent * one_minus_t + slack


class _SweepIndex:
    """Spatial keys used to find, for each box, the kept boxes that may suppress it.

    Boxes are binned in horizontal bands by ``y1`` (per label); inside a (label, band) segment they
    are ordered by ``x1``. A box queries the segments of the bands where its partners' ``y1`` can lie,
    over the ``x1`` window where its partners' ``x1`` can lie (see :func:`_partner_reach`). Keys and
    windows use monotone float64 arithmetic, so a window never misses a box that belongs in it.

    The few unusually large boxes (and boxes with non-finite coordinates) are flagged ``big``: they are
    not indexed but compared with every box, so that they do not widen everybody's windows.
    """

    def __init__(self, boxes: Tensor, iou_threshold: float, labels: Tensor | None) -> None:
        b = boxes.to(torch.float64)
        n, device = b.shape[0], b.device
        finite = torch.isfinite(b).all(dim=1)
        b = torch.where(finite[:, None], b, torch.zeros_like(b))
        x1, y1, x2, y2 = b.unbind(1)
        w, h = (x2 - x1).clamp(min=0), (y2 - y1).clamp(min=0)
        q = min(n, int(0.99 * n) + 1)
        w_cap = 2.0 * float(w.kthvalue(q).values) + 1e-9
        h_cap = 2.0 * float(h.kthvalue(q).values) + 1e-9
        self.big = ~finite | (w > w_cap) | (h > h_cap)
        below_x, above_x = _partner_reach(w, w_cap, iou_threshold)
        below_y, above_y = _partner_reach(h, h_cap, iou_threshold)
        self.xlo, self.xhi = x1 - below_x, x1 + above_x
        ylo, yhi = y1 - below_y, y1 + above_y
        self._y0 = float(ylo.min())
        span_y = float(yhi.max()) - self._y0
        self._band_h = max(float((below_y + above_y).median()), span_y / 1024.0, 1e-9)
        self.num_bands = min(int(span_y / self._band_h) + 1, 1025)
        self._x0 = float(self.xlo.min())
        self._seg_len = float(self.xhi.max()) - self._x0 + 1.0
        rank = (torch.unique(labels, return_inverse=True)[1] if labels is not None
                else torch.zeros(n, dtype=torch.long, device=device))
        self.seg0 = rank * self.num_bands  # first segment of each box's label
        self.key = self._keys(self.seg0 + self._band(y1), x1)
        self.band_lo, self.band_hi = self._band(ylo), self._band(yhi)
        # A box with non-finite coordinates cannot be suppressed by a finite one: no queries.
        self.band_lo = torch.where(finite, self.band_lo, self.band_hi + 1)

    def _band(self, y: Tensor) -> Tensor:
        return ((y - self._y0) / self._band_h).floor().clamp(0, self.num_bands - 1).long()

    def _keys(self, segment: Tensor, x: Tensor) -> Tensor:
        return segment.to(torch.float64) * self._seg_len + (x - self._x0)

    def queries(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Key windows to search for boxes ``idx`` -> (owner position in ``idx``, low key, high key)."""
        nq = self.band_hi[idx] - self.band_lo[idx] + 1
        owner = torch.repeat_interleave(torch.arange(idx.numel(), device=idx.device), nq)
        start = (nq.cumsum(0) - nq)[owner]
        band = self.band_lo[idx][owner] + torch.arange(owner.numel(), device=idx.device) - start
        seg = self.seg0[idx][owner] + band
        box = idx[owner]
        return owner, self._keys(seg, self.xlo[box]), self._keys(seg, self.xhi[box])


def _suppressed_by_indexed(boxes: Tensor, areas: Tensor, labels: Tensor | None, cols: Tensor,
                           index: _SweepIndex, kept_keys: Tensor, kept: list[Tensor],
                           iou_threshold: float) -> Tensor:
    """(len(cols),) bool: which boxes ``cols`` overlap (IoU > t) an indexed kept box."""
    device = boxes.device
    suppressed = torch.zeros(cols.numel(), dtype=torch.bool, device=device)
    owner, qlo, qhi = index.queries(cols)
    first = torch.searchsorted(kept_keys, qlo, side="left")
    counts = (torch.searchsorted(kept_keys, qhi, side="right") - first).clamp_(min=0)
    ends = counts.cumsum(0)
    num_queries = owner.numel()
    q0 = 0
    while q0 < num_queries and int(ends[-1]):
        # Queries [q0, q1) holding at most _MAX_PAIRS candidate pairs (at least one query).
        base = int(ends[q0 - 1]) if q0 else 0
        q1 = min(max(int(torch.searchsorted(ends, base + _MAX_PAIRS, side="right")), q0 + 1), num_queries)
        c = counts[q0:q1]
        npairs = int(ends[q1 - 1]) - base
        if npairs:
            q = torch.repeat_interleave(torch.arange(q0, q1, device=device), c)
            pos = first[q] + torch.arange(npairs, device=device) - (ends[q0:q1] - c - base)[q - q0]
            rows = owner[q]
            b = cols[rows]
            kx1, ky1, kx2, ky2, ka = (col[pos] for col in kept[:5])
            iw = (torch.minimum(kx2, boxes[b, 2]) - torch.maximum(kx1, boxes[b, 0])).clamp_(min=0)
            ih = (torch.minimum(ky2, boxes[b, 3]) - torch.maximum(ky1, boxes[b, 1])).clamp_(min=0)
            inter = iw.mul_(ih)
            over = inter / (ka + areas[b] - inter) > iou_threshold  # NaN (0/0) compares False
            if labels is not None:
                over &= kept[5][pos] == labels[b]
            suppressed[rows[over]] = True
        q0 = q1
    return suppressed


def _over_dense(a: Tensor, area_a: Tensor, b: Tensor, area_b: Tensor, iou_threshold: float,
                label_a: Tensor | None, label_b: Tensor | None) -> Tensor:
    """(len(a), len(b)) bool: IoU > t (and equal labels); empty unions never count."""
    inter, union = _inter_union(a, area_a, b, area_b)
    over = inter.div_(union) > iou_threshold  # NaN (0/0) compares False
    if label_a is not None and label_b is not None:
        over &= label_a[:, None] == label_b[None, :]
    return over


def _merge_sorted(keys: Tensor, columns: list[Tensor], new_keys: Tensor,
                  new_columns: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """Merge new entries into key-sorted columns in O(K + m log m) (no full re-sort)."""
    new_keys, order = torch.sort(new_keys)
    new_pos = torch.searchsorted(keys, new_keys, side="right")
    new_pos += torch.arange(new_keys.numel(), device=keys.device)
    old_pos = torch.searchsorted(new_keys, keys, side="left")
    old_pos += torch.arange(keys.numel(), device=keys.device)
    merged = []
    for old, new in zip([keys, *columns], [new_keys, *(c[order] for c in new_columns)], strict=True):
        out = old.new_empty(old.numel() + new.numel())
        out[old_pos] = old
        out[new_pos] = new
        merged.append(out)
    return merged[0], merged[1:]


def _greedy_nms_sorted(boxes: Tensor, iou_threshold: float, labels: Tensor | None,
                       max_keep: int | None = None) -> Tensor:
    """Greedy NMS on boxes already sorted by decreasing score.

    Blocks of ``_BLOCK`` boxes are taken in score order. Each block box is compared only with the kept
    boxes that :class:`_SweepIndex` finds near it (plus every kept "big" box), then the survivors of
    the block are resolved among themselves with a dense ``block x block`` matrix.

    Args:
        boxes: (N, 4) floating boxes, sorted.
        iou_threshold: suppress when IoU > threshold (>= 0).
        labels: optional (N,) labels; boxes with different labels never suppress each other.
        max_keep: stop once this many boxes are kept. Greedy NMS decides each box from higher-scoring boxes
            only, so the first ``max_keep`` kept boxes are the same as without the limit; later ones are
            not looked at (left False).

    Returns:
        (N,) bool keep mask.
    """
    n, device = boxes.shape[0], boxes.device
    index = _SweepIndex(boxes, iou_threshold, labels)
    areas = box_area(boxes)
    columns = [boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], areas]
    if labels is not None:
        columns.append(labels)
    keep = torch.zeros(n, dtype=torch.bool, device=device)
    kept_keys = torch.empty(0, dtype=torch.float64, device=device)
    kept = [col[:0] for col in columns]  # indexed kept boxes' columns, ordered by key
    kept_big = torch.empty(0, dtype=torch.long, device=device)  # kept big boxes (compared densely)
    big_chunk = max(1, _MAX_PAIRS // _BLOCK)
    num_kept = 0
    for start in range(0, n, _BLOCK):
        cols = torch.arange(start, min(start + _BLOCK, n), device=device)
        # 1) Drop block boxes overlapping an already kept (hence higher-scoring) box.
        if kept_keys.numel():
            cols = cols[~_suppressed_by_indexed(boxes, areas, labels, cols, index, kept_keys, kept,
                                                iou_threshold)]
        for k0 in range(0, kept_big.numel(), big_chunk):
            if cols.numel() == 0:
                break
            kb = kept_big[k0:k0 + big_chunk]
            over = _over_dense(boxes[kb], areas[kb], boxes[cols], areas[cols], iou_threshold,
                               None if labels is None else labels[kb], None if labels is None else labels[cols])
            cols = cols[~over.any(dim=0)]
        if cols.numel() == 0:
            continue
        # 2) Greedy order among the surviving block boxes.
        if cols.numel() > 1:
            cl = None if labels is None else labels[cols]
            over = _over_dense(boxes[cols], areas[cols], boxes[cols], areas[cols], iou_threshold, cl, cl)
            cols = cols[_resolve_block(over.triu_(diagonal=1))]
        keep[cols] = True
        num_kept += cols.numel()
        if max_keep is not None and num_kept >= max_keep:
            break
        big = index.big[cols]
        if bool(big.any()):
            kept_big = torch.cat((kept_big, cols[big]))
            cols = cols[~big]
        if cols.numel():
            kept_keys, kept = _merge_sorted(kept_keys, kept, index.key[cols], [col[cols] for col in columns])
    return keep


def _nms_impl(boxes: Tensor, scores: Tensor, labels: Tensor | None, iou_threshold: float,
              max_keep: int | None = None) -> Tensor:
    _check_boxes(boxes)
    if boxes.dim() != 2:
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if not isinstance(scores, Tensor) or scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must have shape ({boxes.shape[0]},), got {shape}")
    if labels is not None and (labels.dim() != 1 or labels.shape[0] != boxes.shape[0]):
        raise ValueError(f"labels must have shape ({boxes.shape[0]},), got {tuple(labels.shape)}")
    iou_threshold = float(iou_threshold)
    if iou_threshold != iou_threshold:
        raise ValueError("iou_threshold must not be NaN")
    if max_keep is not None:
        if isinstance(max_keep, bool) or not hasattr(max_keep, "__index__") or operator.index(max_keep) < 0:
            raise ValueError(f"max_keep must be None or an integer >= 0, got {max_keep!r}")
        max_keep = operator.index(max_keep)
    if boxes.shape[0] == 0 or max_keep == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    if iou_threshold < 0:
        # Every IoU (>= 0) exceeds the threshold: only the best box (per label) survives.
        if labels is None:
            return order[:1]  # max_keep >= 1 here
        inverse = torch.unique(labels[order], return_inverse=True)[1]
        positions = torch.arange(order.numel(), device=order.device)
        first = torch.full((int(inverse.max()) + 1,), order.numel(), dtype=torch.long, device=order.device)
        first = first.scatter_reduce(0, inverse, positions, reduce="amin")
        return order[first.sort().values][:max_keep]
    sorted_boxes = boxes[order].to(_compute_dtype(boxes))
    sorted_labels = labels[order] if labels is not None else None
    return order[_greedy_nms_sorted(sorted_boxes, iou_threshold, sorted_labels, max_keep)][:max_keep]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, *, max_keep: int | None = None) -> Tensor:
    """Greedy non-maximum suppression (same semantics as ``torchvision.ops.nms``).

    Boxes are visited by decreasing score; a box is kept unless its IoU with an already kept box is
    strictly greater than ``iou_threshold``. Equal scores are ordered by original index (stable).
    IoU is computed as in :func:`box_iou` (``inter / (area_a + area_b - inter)`` in the boxes' float
    dtype); for ``iou_threshold >= 0`` two boxes with an empty union never suppress each other, and a
    negative threshold keeps only the best box. Any number of boxes: memory stays bounded and only
    spatially close kept boxes are compared (see the module docstring).

    Convention: xyxy in pixels (x right, y down).

    Args:
        boxes: (N, 4) boxes (float32/float64; half precision and integers are upcast).
        scores: (N,) scores.
        iou_threshold: IoU above which the lower-scoring box is discarded.
        max_keep: return only the ``max_keep`` best kept boxes, the same as ``nms(...)[:max_keep]``; the
            greedy pass stops once they are known (much faster when few of many boxes are wanted).

    Returns:
        (K,) int64 indices into ``boxes`` of the kept boxes, by decreasing score.
    """
    return _nms_impl(boxes, scores, None, iou_threshold, max_keep)


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float, *,
                max_keep: int | None = None) -> Tensor:
    """Per-label NMS in one pass: boxes with different labels never suppress each other.

    Equivalent to running :func:`nms` separately for each label and merging the results by score,
    but done in a single vectorised pass. Labels are separated by an offset on the (float64) keys of
    the spatial index only; IoUs are computed on the original coordinates and masked to pairs of equal
    labels, so unlike offsetting the boxes themselves (torchvision's trick) no float32 precision is
    lost with many labels and large coordinates: the result is exactly the per-label one.

    Convention: xyxy in pixels (x right, y down).

    Args:
        boxes: (N, 4) boxes.
        scores: (N,) scores.
        labels: (N,) integer labels (class indices).
        iou_threshold: IoU above which the lower-scoring box of the same label is discarded.
        max_keep: return only the ``max_keep`` best kept boxes over all labels, the same as
            ``batched_nms(...)[:max_keep]`` (the greedy pass stops once they are known).

    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score (ties by index).
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    return _nms_impl(boxes, scores, labels.to(boxes.device), iou_threshold, max_keep)
