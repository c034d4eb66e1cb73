"""Tests for os2d.ops.boxes: IoU, clipping and NMS against a brute-force pure-Python greedy reference."""

from __future__ import annotations

import random

import pytest
import torch

import os2d.ops.boxes as boxes_mod
from os2d.ops import batched_nms, box_area, box_iou, clip_boxes_xyxy, nms, nonempty_mask


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float,
                  labels: torch.Tensor | None = None) -> list[int]:
    """Textbook greedy NMS in pure Python (float64), ties by index, IoU as in box_iou."""
    b, s = boxes.double().tolist(), scores.double().tolist()
    lab = labels.tolist() if labels is not None else [0] * len(b)
    area = [max(x2 - x1, 0.0) * max(y2 - y1, 0.0) for x1, y1, x2, y2 in b]
    kept: list[int] = []
    for i in sorted(range(len(b)), key=lambda i: (-s[i], i)):
        suppressed = False
        for j in kept:
            if lab[i] != lab[j]:
                continue
            iw = max(min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]), 0.0)
            ih = max(min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]), 0.0)
            inter = iw * ih
            union = area[j] + area[i] - inter
            if (inter / union if union > 0 else 0.0) > thr:
                suppressed = True
                break
        if not suppressed:
            kept.append(i)
    return kept


def random_case(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Random boxes (float64) of several flavours, with duplicates and tied scores."""
    rnd = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    n = rnd.choice([0, 1, 2, 3, 7, 40, 150, 600])
    kind = rnd.choice(["int", "clustered", "spread", "heavy_tailed"])
    if kind == "int":  # integer coordinates: many exact IoU ties with the threshold, empty boxes
        xy = torch.randint(0, 25, (n, 2), generator=g).double()
        wh = torch.randint(0, 12, (n, 2), generator=g).double()
    elif kind == "heavy_tailed":  # a few huge boxes among small ones
        xy = torch.rand(n, 2, generator=g) * 100
        wh = torch.rand(n, 2, generator=g) ** 4 * 300
    else:
        xy = torch.rand(n, 2, generator=g) * (40.0 if kind == "clustered" else 400.0)
        wh = 1 + torch.rand(n, 2, generator=g) * 60
    b = torch.cat([xy, xy + wh], 1).double()
    if n > 6 and rnd.random() < 0.5:
        b[n // 2:n // 2 + 3] = b[:3].clone()  # exact duplicates
    if rnd.random() < 0.5:
        s = torch.randint(0, 4, (n,), generator=g).double()  # many identical scores
    else:
        s = torch.rand(n, generator=g).double()
    labels = torch.randint(0, rnd.choice([1, 3, 10]), (n,), generator=g)
    thr = rnd.choice([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0, rnd.random()])
    return b, s, labels, thr


# ----------------------------------------------------------------------------- area / IoU / helpers


def test_box_area_and_iou_known_values() -> None:
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 2.0, 4.0]])
    b = torch.tensor([[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    assert box_area(a).tolist() == [100.0, 8.0]
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    expected = torch.tensor([[25 / 175, 1.0, 0.0], [0.0, 8 / 100, 0.0]])
    torch.testing.assert_close(iou, expected)


def test_box_iou_zero_area_is_zero_not_nan() -> None:
    z = torch.tensor([[3.0, 3.0, 3.0, 3.0], [1.0, 1.0, 1.0, 5.0]])
    iou = box_iou(z, z)
    assert torch.isfinite(iou).all() and (iou == 0).all()
    assert box_iou(torch.zeros(0, 4), z).shape == (0, 2)
    # inverted boxes count as empty
    assert box_area(torch.tensor([[5.0, 5.0, 1.0, 9.0]])).item() == 0.0


def test_box_iou_integer_input_and_symmetry() -> None:
    a = torch.tensor([[0, 0, 4, 4]])
    b = torch.tensor([[2, 0, 6, 4]])
    assert box_iou(a, b).dtype == torch.float64
    assert box_iou(a, b).item() == pytest.approx(8 / 24)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 2, generator=g) * 50
    bx = torch.cat([x, x + 1 + torch.rand(20, 2, generator=g) * 30], 1)
    torch.testing.assert_close(box_iou(bx, bx), box_iou(bx, bx).T)
    torch.testing.assert_close(box_iou(bx, bx).diagonal(), torch.ones(20))


def test_box_iou_plus_one_known_values_and_straightforward_formula() -> None:
    # VOC "+1": [0,0,9,4] vs [0,0,9,9] -> 10*5 / 10*10 = 0.5 (continuous: 36/81); touching boxes overlap 1 px
    small, big = torch.tensor([[0.0, 0, 9, 4]]).double(), torch.tensor([[0.0, 0, 9, 9]]).double()
    assert box_iou(small, big).item() == 36 / 81
    assert box_iou(small, big, plus_one=True).item() == 0.5
    assert box_area(big, plus_one=True).item() == 100.0
    assert box_iou(torch.tensor([[0.0, 0, 4, 4]]), torch.tensor([[4.0, 0, 8, 4]]), plus_one=True).item() \
        == pytest.approx(5 / 45)
    g = torch.Generator().manual_seed(1)
    a = torch.cat([torch.rand(30, 2, generator=g) * 40, torch.rand(30, 2, generator=g) * 40 + 40], 1).double()
    b = torch.cat([torch.rand(20, 2, generator=g) * 40, torch.rand(20, 2, generator=g) * 40 + 40], 1).double()
    for o in (0.0, 1.0):  # the textbook formula, element by element, in float64: equal to the last bit
        expected = torch.zeros(30, 20, dtype=torch.float64)
        for i in range(30):
            for j in range(20):
                iw = max(min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]) + o, 0)
                ih = max(min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]) + o, 0)
                area_a = max(a[i, 2] - a[i, 0] + o, 0) * max(a[i, 3] - a[i, 1] + o, 0)
                area_b = max(b[j, 2] - b[j, 0] + o, 0) * max(b[j, 3] - b[j, 1] + o, 0)
                expected[i, j] = iw * ih / (area_a + area_b - iw * ih)
        assert torch.equal(box_iou(a, b, plus_one=o == 1.0), expected)


def test_box_iou_shape_errors() -> None:
    with pytest.raises(ValueError):
        box_iou(torch.zeros(3, 5), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        box_iou(torch.zeros(2, 3, 4), torch.zeros(2, 4))


def test_clip_boxes_xyxy() -> None:
    b = torch.tensor([[-5.0, 3.0, 120.0, 90.0], [10.0, -1.0, 20.0, 30.0]])
    out = clip_boxes_xyxy(b, 100, 80)
    assert out.tolist() == [[0.0, 3.0, 100.0, 80.0], [10.0, 0.0, 20.0, 30.0]]
    assert b[0, 0].item() == -5.0  # input untouched
    assert clip_boxes_xyxy(b[None], 100, 80).shape == (1, 2, 4)


def test_nonempty_mask() -> None:
    b = torch.tensor([[0.0, 0.0, 5.0, 5.0], [0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 2.0, 1.5], [3.0, 3.0, 1.0, 9.0]])
    assert nonempty_mask(b).tolist() == [True, False, True, False]
    assert nonempty_mask(b, min_size=1.5).tolist() == [True, False, False, False]


# ----------------------------------------------------------------------------------------- nms


@pytest.mark.parametrize("seed", range(60))
def test_nms_matches_reference(seed: int) -> None:
    b, s, _, thr = random_case(seed)
    keep = nms(b, s, thr)
    assert keep.dtype == torch.int64
    assert keep.tolist() == reference_nms(b, s, thr)


@pytest.mark.parametrize("seed", range(60, 100))
def test_batched_nms_matches_reference(seed: int) -> None:
    b, s, labels, thr = random_case(seed)
    assert batched_nms(b, s, labels, thr).tolist() == reference_nms(b, s, thr, labels)


@pytest.mark.parametrize("seed", range(100, 130))
def test_small_blocks_and_pair_chunks(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exercise block boundaries, pair chunking and the sequential fallback with tiny limits."""
    monkeypatch.setattr(boxes_mod, "_BLOCK", 16)
    monkeypatch.setattr(boxes_mod, "_MAX_PAIRS", 13)
    monkeypatch.setattr(boxes_mod, "_MAX_SWEEPS", 1)
    b, s, labels, thr = (x[:200] if torch.is_tensor(x) else x for x in random_case(seed))
    assert nms(b, s, thr).tolist() == reference_nms(b, s, thr)
    assert batched_nms(b, s, labels, thr).tolist() == reference_nms(b, s, thr, labels)


@pytest.mark.parametrize("seed", range(130, 170))
def test_max_keep_is_the_prefix_of_the_full_result(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``max_keep`` stops the greedy pass early; what it returns is the full result's prefix (small blocks, so
    that the stop falls inside and between blocks; negative thresholds take the per-label shortcut)."""
    monkeypatch.setattr(boxes_mod, "_BLOCK", random.Random(seed).choice([4, 16, 512]))
    b, s, labels, thr = random_case(seed)
    thr = -1.0 if seed % 10 == 0 else thr
    full, full_batched = nms(b, s, thr), batched_nms(b, s, labels, thr)
    for k in (0, 1, 2, 5, 17, 1000):
        assert nms(b, s, thr, max_keep=k).tolist() == full[:k].tolist()
        assert batched_nms(b, s, labels, thr, max_keep=k).tolist() == full_batched[:k].tolist()


def test_max_keep_errors() -> None:
    b, s = torch.zeros(3, 4), torch.zeros(3)
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="max_keep"):
            nms(b, s, 0.5, max_keep=bad)
    assert nms(b, s, 0.5, max_keep=torch.tensor(2)).numel() == 2  # empty boxes never suppress; a 0-d int tensor works


def test_nms_float32_matches_reference() -> None:
    g = torch.Generator().manual_seed(7)
    xy = torch.rand(400, 2, generator=g) * 300
    b = torch.cat([xy, xy + 5 + torch.rand(400, 2, generator=g) * 80], 1)
    s = torch.rand(400, generator=g)
    for thr in (0.3, 0.5, 0.7):
        assert nms(b, s, thr).tolist() == reference_nms(b, s, thr)


def test_nms_empty_single_and_sorted_output() -> None:
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.dtype == torch.int64 and empty.numel() == 0
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0
    assert nms(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([0.3]), 0.5).tolist() == [0]
    b = torch.tensor([[0.0, 0, 10, 10], [100, 100, 110, 110], [50, 50, 60, 60]])
    s = torch.tensor([0.2, 0.9, 0.5])
    assert nms(b, s, 0.5).tolist() == [1, 2, 0]


def test_nms_identical_boxes_and_scores_keep_lowest_index() -> None:
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 5)
    s = torch.tensor([0.5, 0.7, 0.7, 0.1, 0.7])
    assert nms(b, s, 0.5).tolist() == [1]
    assert nms(b, s, 1.0).tolist() == [1, 2, 4, 0, 3]  # IoU = 1 is not > 1: nothing suppressed


def test_nms_thresholds_zero_and_one() -> None:
    b = torch.tensor([[0.0, 0, 10, 10], [9, 9, 20, 20], [10, 0, 20, 10], [0.0, 0, 10, 10]])
    s = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # threshold 0: any positive overlap suppresses; touching edges (box 2) do not
    assert nms(b, s, 0.0).tolist() == [0, 2]
    assert nms(b, s, 1.0).tolist() == [0, 1, 2, 3]


def test_nms_exact_threshold_is_not_suppressed() -> None:
    b = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0]])  # IoU = 1/3
    s = torch.tensor([1.0, 0.5])
    b2 = torch.tensor([[0.0, 0.0, 4.0, 1.0], [0.0, 0.0, 2.0, 1.0]])  # IoU = 0.5 exactly
    assert nms(b2, s, 0.5).tolist() == [0, 1]
    assert nms(b2, s, 0.49).tolist() == [0]
    assert nms(b, s, 0.3).tolist() == [0]
    assert nms(b, s, 0.34).tolist() == [0, 1]


def test_nms_zero_area_boxes_never_suppress() -> None:
    b = torch.tensor([[5.0, 5.0, 5.0, 5.0]] * 3 + [[0.0, 0.0, 10.0, 10.0]])
    s = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert nms(b, s, 0.0).tolist() == [0, 1, 2, 3]


def test_nms_negative_threshold_keeps_best_per_label() -> None:
    b = torch.tensor([[0.0, 0, 1, 1], [50, 50, 60, 60], [5, 5, 6, 6]])
    s = torch.tensor([0.1, 0.9, 0.5])
    assert nms(b, s, -0.5).tolist() == [1]
    assert batched_nms(b, s, torch.tensor([3, 7, 3]), -0.5).tolist() == [1, 2]


def test_nms_long_suppression_chain() -> None:
    """Each box suppresses only its neighbour: needs the exact sequential fallback inside a block."""
    n = 700
    x = torch.arange(n, dtype=torch.float64) * 3.0
    b = torch.stack([x, torch.zeros(n), x + 10.0, torch.full((n,), 10.0)], 1)
    s = torch.linspace(1.0, 0.0, n, dtype=torch.float64)
    keep = nms(b, s, 0.5)
    assert keep.tolist() == list(range(0, n, 2))
    assert keep.tolist() == reference_nms(b, s, 0.5)


def test_nms_non_finite_boxes() -> None:
    b = torch.tensor([[0.0, 0, 10, 10], [float("nan"), 0, 10, 10], [0, 0, float("inf"), 10], [1, 1, 10, 10]])
    s = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # NaN IoUs never suppress; the infinite box has IoU 0 with finite ones; box 3 overlaps box 0 (0.81)
    assert nms(b, s, 0.5).tolist() == [0, 1, 2]


def test_nms_integer_and_half_inputs() -> None:
    b = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    s = torch.tensor([0.9, 0.8, 0.7])
    assert nms(b, s, 0.5).tolist() == [0, 2]
    assert nms(b.half(), s.half(), 0.5).tolist() == [0, 2]


def test_nms_input_errors() -> None:
    with pytest.raises(ValueError):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises(ValueError):
        nms(torch.zeros(3, 3), torch.zeros(3), 0.5)
    with pytest.raises(ValueError):
        batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, dtype=torch.long), 0.5)
    with pytest.raises(ValueError):
        nms(torch.zeros(3, 4), torch.zeros(3), float("nan"))


def test_batched_nms_equals_per_class_nms() -> None:
    g = torch.Generator().manual_seed(3)
    n = 3000
    centres = torch.rand(40, 2, generator=g) * 1000
    k = torch.randint(0, 40, (n,), generator=g)
    ctr = centres[k] + torch.randn(n, 2, generator=g) * 8
    wh = 30 + torch.rand(n, 2, generator=g) * 20
    b = torch.cat([ctr - wh / 2, ctr + wh / 2], 1)
    s = torch.rand(n, generator=g)
    labels = torch.randint(0, 7, (n,), generator=g) * 1000  # sparse, large label values
    keep = batched_nms(b, s, labels, 0.5)
    per_class = torch.cat([torch.nonzero(labels == c).flatten()[nms(b[labels == c], s[labels == c], 0.5)]
                           for c in labels.unique()])
    per_class = per_class[s[per_class].argsort(descending=True, stable=True)]
    assert keep.tolist() == per_class.tolist()
    assert (s[keep][:-1] >= s[keep][1:]).all()


def test_batched_nms_large_coordinates_many_labels() -> None:
    """Where the box-offset trick would lose float32 precision, the result is still per-class exact."""
    g = torch.Generator().manual_seed(5)
    n = 2000
    xy = 3000 + torch.rand(n, 2, generator=g) * 200
    b = torch.cat([xy, xy + 20 + torch.rand(n, 2, generator=g) * 10], 1)
    s = torch.rand(n, generator=g)
    labels = torch.randint(0, 5000, (n,), generator=g)
    assert batched_nms(b, s, labels, 0.6).tolist() == reference_nms(b, s, 0.6, labels)


def test_nms_large_input_is_a_valid_greedy_result() -> None:
    """10k clustered detections (the reference would be too slow): check the defining properties."""
    g = torch.Generator().manual_seed(11)
    n = 10_000
    centres = torch.rand(200, 2, generator=g) * 2000
    k = torch.randint(0, 200, (n,), generator=g)
    wh = 20 + torch.rand(200, 2, generator=g)[k] * 200
    ctr = centres[k] + torch.randn(n, 2, generator=g) * wh * 0.15
    b = torch.cat([ctr - wh / 2, ctr + wh / 2], 1)
    s = torch.rand(n, generator=g)
    keep = nms(b, s, 0.5)
    kept_boxes = b[keep]
    # no two kept boxes overlap above the threshold (checked in row chunks to bound memory)
    for r0 in range(0, keep.numel(), 1000):
        iou = box_iou(kept_boxes[r0:r0 + 1000], kept_boxes)
        iou[torch.arange(iou.shape[0]), torch.arange(r0, r0 + iou.shape[0])] = 0
        assert (iou <= 0.5).all()
    # every discarded box is covered by a higher-scoring kept box (checked on a sample)
    discarded = torch.ones(n, dtype=torch.bool)
    discarded[keep] = False
    sample = torch.nonzero(discarded).flatten()[:500]
    pos = torch.empty(n, dtype=torch.long)
    pos[torch.sort(s, descending=True, stable=True).indices] = torch.arange(n)
    cover = (box_iou(b[sample], kept_boxes) > 0.5) & (pos[keep][None, :] < pos[sample][:, None])
    assert cover.any(dim=1).all()
