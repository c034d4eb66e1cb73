"""Known-answer and randomized tests of the VOC-style detection metrics (os2d.evaluation.metrics)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from os2d.evaluation.metrics import (
    ImageDetections,
    ImageGroundTruth,
    average_precision,
    evaluate_detections,
)
from os2d.ops import box_iou
from os2d.results import Detections

A = [0.0, 0.0, 10.0, 10.0]
B = [20.0, 20.0, 30.0, 30.0]
C = [40.0, 0.0, 50.0, 10.0]
FAR = [50.0, 50.0, 60.0, 60.0]  # overlaps no GT


def gt(boxes, labels=None, difficult=None):
    labels = [0] * len(boxes) if labels is None else labels
    return ImageGroundTruth(np.array(boxes, dtype=float).reshape(-1, 4), np.array(labels), difficult)


def det(boxes, scores, labels=None):
    labels = [0] * len(boxes) if labels is None else labels
    return ImageDetections(np.array(boxes, dtype=float).reshape(-1, 4), np.array(scores), np.array(labels))


# ----------------------------------------------------------------------------------------------------------
# known answers


def test_perfect_detection_ap_one():
    r = evaluate_detections([det([A, B], [0.9, 0.3])], [gt([A, B])], num_classes=1)
    assert r.ap_per_class[0] == pytest.approx(1.0)
    assert r.map == pytest.approx(1.0)
    assert r.recall == pytest.approx(1.0)
    assert r.num_gt_per_class.tolist() == [2]


def test_fp_ranked_above_tp():
    # 2 GT (A, B); detections: FAR (0.9, FP), A (0.8, TP); B never found.
    #   after FAR: tp=0 fp=1 -> prec 0,   rec 0
    #   after A:   tp=1 fp=1 -> prec 1/2, rec 1/2
    # monotone precision from the right: 1/2 on (0, 1/2], 0 on (1/2, 1]
    # AP = (1/2 - 0) * 1/2 + (1 - 1/2) * 0 = 0.25
    r = evaluate_detections([det([FAR, A], [0.9, 0.8])], [gt([A, B])], num_classes=1)
    assert r.ap_per_class[0] == pytest.approx(0.25)
    assert r.recall == pytest.approx(0.5)
    np.testing.assert_allclose(r.precision_recall[0].precision, [0.0, 0.5])
    np.testing.assert_allclose(r.precision_recall[0].recall, [0.0, 0.5])
    assert r.num_tp_per_class.tolist() == [1] and r.num_fp_per_class.tolist() == [1]


def test_interpolation_tp_fp_tp():
    # 3 GT; detections TP (0.9), FP (0.8), TP (0.7)
    #   prec 1, 1/2, 2/3   rec 1/3, 1/3, 2/3
    # monotone from the right: 1, 2/3, 2/3
    # AP = 1/3 * 1 + (2/3 - 1/3) * 2/3 = 1/3 + 2/9 = 5/9
    r = evaluate_detections([det([A, FAR, B], [0.9, 0.8, 0.7])], [gt([A, B, C])], num_classes=1)
    assert r.ap_per_class[0] == pytest.approx(5 / 9)
    assert r.recall == pytest.approx(2 / 3)


def test_duplicate_is_fp():
    # 2 GT (A, B); detections A (0.9, TP), A again (0.8, duplicate -> FP), B (0.7, TP)
    #   prec 1, 1/2, 2/3   rec 1/2, 1/2, 1
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    a_shift = [0.5, 0.5, 10.5, 10.5]  # IoU with A = 90.25 / 109.75 > 0.5
    r = evaluate_detections([det([A, a_shift, B], [0.9, 0.8, 0.7])], [gt([A, B])], num_classes=1)
    assert r.ap_per_class[0] == pytest.approx(5 / 6)
    assert r.num_tp_per_class.tolist() == [2] and r.num_fp_per_class.tolist() == [1]
    # a single GT detected twice: TP then FP, AP still 1 (recall 1 reached at precision 1)
    r1 = evaluate_detections([det([A, a_shift], [0.9, 0.8])], [gt([A])], num_classes=1)
    assert r1.ap_per_class[0] == pytest.approx(1.0)
    assert r1.num_fp_per_class.tolist() == [1]


def test_difficult_gt_ignored():
    # GT: A (normal), B (difficult) -> n_pos = 1
    # detections: B (0.9, on difficult -> ignored), B again (0.85, ignored too), FAR (0.8, FP), A (0.7, TP)
    #   remaining sequence FP, TP: prec 0, 1/2   rec 0, 1
    # AP = 1 * 1/2 = 0.5   (if B counted as FP it would be 1/3; if counted as TP it would be 2/3)
    r = evaluate_detections([det([B, B, FAR, A], [0.9, 0.85, 0.8, 0.7])],
                            [gt([A, B], difficult=[False, True])], num_classes=1)
    assert r.num_gt_per_class.tolist() == [1]
    assert r.ap_per_class[0] == pytest.approx(0.5)
    assert r.num_tp_per_class.tolist() == [1] and r.num_fp_per_class.tolist() == [1]
    assert r.recall == pytest.approx(1.0)
    assert len(r.precision_recall[0].precision) == 2  # ignored detections dropped from the curve


def test_only_difficult_gt_gives_nan():
    r = evaluate_detections([det([A], [0.9])], [gt([A], difficult=[True])], num_classes=1)
    assert math.isnan(r.ap_per_class[0])
    assert math.isnan(r.map) and math.isnan(r.recall)


def test_class_without_gt_is_nan_and_excluded():
    # class 0: perfect (AP 1); class 1: FP above TP with 2 GT (AP 0.25, see above);
    # class 2: only a detection, no GT -> NaN.   mAP = (1 + 0.25) / 2 = 0.625
    d = det([A, FAR, B, C], [0.9, 0.9, 0.8, 0.7], labels=[0, 1, 1, 2])
    g = gt([A, B, C], labels=[0, 1, 1])
    r = evaluate_detections([d], [g], num_classes=3, class_names=["a", "b", "c"])
    assert r.ap_per_class[0] == pytest.approx(1.0)
    assert r.ap_per_class[1] == pytest.approx(0.25)
    assert math.isnan(r.ap_per_class[2])
    assert r.map == pytest.approx(0.625)
    assert np.nanmean(r.ap_per_class) == pytest.approx(r.map)
    out = r.to_dict()
    json.dumps(out)  # NaN -> None keeps it valid JSON
    assert out["mAP@0.50"] == pytest.approx(0.625)
    assert out["per_class"]["c"]["AP@0.50"] is None
    assert out["per_class"]["b"]["num_gt"] == 2


def test_plus_one_crosses_threshold():
    # GT [0,0,9,9], detection [0,0,9,4]
    #   continuous: areas 9*9=81 and 9*4=36, inter 36 -> IoU 36/81 = 0.444 < 0.5 -> FP, AP 0
    #   plus_one:   areas 10*10=100 and 10*5=50, inter 50 -> IoU 50/100 = 0.5 >= 0.5 -> TP, AP 1
    g = [gt([[0, 0, 9, 9]])]
    d = [det([[0, 0, 9, 4]], [1.0])]
    small, big = torch.tensor([[0, 0, 9, 4.0]]).double(), torch.tensor([[0, 0, 9, 9.0]]).double()
    assert box_iou(small, big).item() == 36 / 81  # exact in float64: the metric's IoU is ops.box_iou
    assert box_iou(small, big, plus_one=True).item() == 0.5
    assert evaluate_detections(d, g, 1).ap_per_class[0] == pytest.approx(0.0)
    assert evaluate_detections(d, g, 1, plus_one=True).ap_per_class[0] == pytest.approx(1.0)


def test_iou_threshold_option():
    # IoU 36/81 = 0.444: matched at threshold 0.4, not at 0.5
    g = [gt([[0, 0, 9, 9]])]
    d = [det([[0, 0, 9, 4]], [1.0])]
    r = evaluate_detections(d, g, 1, iou_threshold=0.4)
    assert r.ap_per_class[0] == pytest.approx(1.0)
    assert "mAP@0.40" in r.to_dict()


def test_weighted_map_and_recall():
    # class 0: 1 GT, perfect -> AP 1, TP 1
    # class 1: 3 GT, TP/FP/TP -> AP 5/9 (see test_interpolation_tp_fp_tp), TP 2
    # mAP  = (1 + 5/9) / 2 = 7/9
    # mAPw = (1 * 1 + 3 * 5/9) / (1 + 3) = (8/3) / 4 = 2/3
    # recall = (1 + 2) / (1 + 3) = 3/4
    g1 = gt([FAR], labels=[0])
    d1 = det([FAR], [0.5], labels=[0])
    g2 = gt([A, B, C], labels=[1, 1, 1])
    d2 = det([A, FAR, B], [0.9, 0.8, 0.7], labels=[1, 1, 1])
    r = evaluate_detections([d1, d2], [g1, g2], num_classes=2)
    assert r.map == pytest.approx(7 / 9)
    assert r.map_weighted == pytest.approx(2 / 3)
    assert r.recall == pytest.approx(3 / 4)
    out = r.to_dict()
    assert out["mAPw@0.50"] == pytest.approx(2 / 3)
    assert out["recall@0.50"] == pytest.approx(0.75)
    assert set(out["per_class"]) == {"0", "1"}


def test_joint_classes_ap():
    # GT: A of class 0, B of class 1
    # detections: A labelled 1 (0.9), A labelled 0 (0.8), B labelled 1 (0.7)
    # per class: class 0 -> [TP] AP 1; class 1 -> [FP, TP], n_pos 1: prec 0, 1/2 rec 0, 1 -> AP 1/2
    # joint (labels merged): A TP (0.9), A duplicate FP (0.8), B TP (0.7), n_pos 2
    #   prec 1, 1/2, 2/3  rec 1/2, 1/2, 1 -> AP = 1/2 + 1/2 * 2/3 = 5/6
    d = det([A, A, B], [0.9, 0.8, 0.7], labels=[1, 0, 1])
    g = gt([A, B], labels=[0, 1])
    r = evaluate_detections([d], [g], num_classes=2)
    np.testing.assert_allclose(r.ap_per_class, [1.0, 0.5])
    assert r.ap_joint_classes == pytest.approx(5 / 6)
    assert r.to_dict()["AP_joint_classes@0.50"] == pytest.approx(5 / 6)


def test_empty_detections_ap_zero():
    r = evaluate_detections([det([], [])], [gt([A, B])], num_classes=1)
    assert r.ap_per_class[0] == 0.0
    assert r.map == 0.0 and r.recall == 0.0 and r.ap_joint_classes == 0.0
    assert len(r.precision_recall[0].precision) == 0


def test_detections_on_images_without_gt_are_fp():
    # image 1: GT A, detection A (0.5, TP); image 2: no GT, detection A (0.9, FP) -- pooled over images
    #   sequence FP (0.9), TP (0.5): prec 0, 1/2  rec 0, 1  -> AP 1/2
    r = evaluate_detections([det([A], [0.5]), det([A], [0.9])], [gt([A]), gt([])], num_classes=1)
    assert r.ap_per_class[0] == pytest.approx(0.5)
    assert r.num_fp_per_class.tolist() == [1]
    # the class has GT somewhere but all detections are on an empty image -> AP 0
    r = evaluate_detections([det([], []), det([A, B], [0.9, 0.8])], [gt([A]), gt([])], num_classes=1)
    assert r.ap_per_class[0] == 0.0
    assert r.num_fp_per_class.tolist() == [2]


def test_torch_and_structures_detections_accepted():
    boxes = torch.tensor([A, FAR])
    d = Detections(boxes, torch.tensor([0.8, 0.9]), torch.tensor([0, 0]), torch.zeros(2, 4, 2))
    g = ImageGroundTruth(torch.tensor([A, B]), torch.tensor([0, 0]), torch.tensor([False, False]))
    r = evaluate_detections([d], [g], num_classes=1)
    assert r.ap_per_class[0] == pytest.approx(0.25)  # same as test_fp_ranked_above_tp
    r0 = evaluate_detections([Detections.empty()], [g], num_classes=1)
    assert r0.ap_per_class[0] == 0.0


def test_input_validation():
    with pytest.raises(ValueError):
        evaluate_detections([det([A], [1.0])], [], num_classes=1)
    with pytest.raises(ValueError):
        evaluate_detections([det([A], [1.0], labels=[3])], [gt([A])], num_classes=1)
    with pytest.raises(ValueError):
        ImageDetections(np.zeros((2, 4)), np.zeros(3), np.zeros(2))


def test_average_precision_helper():
    # classic example: prec [1, 0.5, 2/3], rec [1/3, 1/3, 2/3] -> 5/9
    assert average_precision(np.array([1, 0.5, 2 / 3]), np.array([1 / 3, 1 / 3, 2 / 3])) == pytest.approx(5 / 9)
    assert average_precision(np.array([]), np.array([])) == 0.0


# ----------------------------------------------------------------------------------------------------------
# randomized cross-check against a slow, straightforward implementation


def _slow_iou(a, b, plus_one):
    o = 1.0 if plus_one else 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0]) + o
    ih = min(a[3], b[3]) - max(a[1], b[1]) + o
    if iw <= 0 or ih <= 0:
        inter = 0.0
    else:
        inter = iw * ih
    area_a = (a[2] - a[0] + o) * (a[3] - a[1] + o)
    area_b = (b[2] - b[0] + o) * (b[3] - b[1] + o)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def _slow_ap(flags, n_pos):
    """flags: list of (score, is_tp) with ignored detections already removed."""
    if n_pos == 0:
        return float("nan"), 0
    flags = sorted(flags, key=lambda t: -t[0])
    tp = fp = 0
    prec, rec = [], []
    for _, is_tp in flags:
        tp += is_tp
        fp += not is_tp
        prec.append(tp / (tp + fp))
        rec.append(tp / n_pos)
    mrec = [0.0] + rec + [1.0]
    mpre = [0.0] + prec + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    ap = 0.0
    for i in range(len(mrec) - 1):
        if mrec[i + 1] != mrec[i]:
            ap += (mrec[i + 1] - mrec[i]) * mpre[i + 1]
    return ap, tp


def _slow_eval(dets, gts, num_classes, thr, plus_one, joint=False):
    aps, n_pos_all, tp_all = [], [], []
    classes = [0] if joint else range(num_classes)
    for c in classes:
        flags, n_pos = [], 0
        for d, g in zip(dets, gts, strict=True):
            g_idx = [j for j in range(len(g.labels)) if joint or g.labels[j] == c]
            n_pos += sum(1 for j in g_idx if not g.difficult[j])
            d_idx = [i for i in range(len(d.labels)) if joint or d.labels[i] == c]
            d_idx.sort(key=lambda i: -d.scores[i])
            taken = set()
            for i in d_idx:
                best, best_j = -1.0, None
                for j in g_idx:
                    v = _slow_iou(d.boxes_xyxy[i], g.boxes_xyxy[j], plus_one)
                    if v > best:
                        best, best_j = v, j
                if best_j is None or best < thr:
                    flags.append((d.scores[i], False))
                elif g.difficult[best_j]:
                    continue  # ignored
                elif best_j in taken:
                    flags.append((d.scores[i], False))
                else:
                    taken.add(best_j)
                    flags.append((d.scores[i], True))
        ap, tp = _slow_ap(flags, n_pos)
        aps.append(ap)
        n_pos_all.append(n_pos)
        tp_all.append(tp)
    return aps, n_pos_all, tp_all


def _random_problem(rng: random.Random, num_classes: int):
    dets, gts = [], []
    for _ in range(rng.randint(1, 6)):
        n_gt = rng.randint(0, 6)
        gb, gl, gd = [], [], []
        for _ in range(n_gt):
            x, y = rng.uniform(0, 60), rng.uniform(0, 60)
            gb.append([x, y, x + rng.uniform(3, 30), y + rng.uniform(3, 30)])
            gl.append(rng.randrange(num_classes))
            gd.append(rng.random() < 0.2)
        db, ds, dl = [], [], []
        for _ in range(rng.randint(0, 10)):
            if gb and rng.random() < 0.7:  # jittered copy of a GT, IoU around the threshold
                j = rng.randrange(len(gb))
                s = rng.uniform(0, 6)
                db.append([v + rng.uniform(-s, s) for v in gb[j]])
                db[-1][2] = max(db[-1][2], db[-1][0] + 1)
                db[-1][3] = max(db[-1][3], db[-1][1] + 1)
                dl.append(gl[j] if rng.random() < 0.8 else rng.randrange(num_classes))
            else:
                x, y = rng.uniform(0, 60), rng.uniform(0, 60)
                db.append([x, y, x + rng.uniform(3, 30), y + rng.uniform(3, 30)])
                dl.append(rng.randrange(num_classes))
            ds.append(rng.random())
        gts.append(gt(gb, gl, gd))
        dets.append(det(db, ds, dl))
    return dets, gts


@pytest.mark.parametrize("seed", range(40))
def test_random_against_slow_reference(seed):
    rng = random.Random(seed)
    num_classes = rng.randint(1, 4)
    dets, gts = _random_problem(rng, num_classes)
    thr = rng.choice([0.3, 0.5, 0.7])
    plus_one = bool(seed % 2)
    r = evaluate_detections(dets, gts, num_classes, iou_threshold=thr, plus_one=plus_one)
    aps, n_pos, tp = _slow_eval(dets, gts, num_classes, thr, plus_one)
    np.testing.assert_allclose(r.ap_per_class, aps, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert r.num_gt_per_class.tolist() == n_pos
    assert r.num_tp_per_class.tolist() == tp
    valid = [a for a in aps if not math.isnan(a)]
    if valid:
        assert r.map == pytest.approx(sum(valid) / len(valid))
        w = sum(a * n for a, n in zip(aps, n_pos, strict=True) if n > 0) / sum(n_pos)
        assert r.map_weighted == pytest.approx(w)
        assert r.recall == pytest.approx(sum(tp) / sum(n_pos))
    else:
        assert math.isnan(r.map) and math.isnan(r.map_weighted) and math.isnan(r.recall)
    joint_ap = _slow_eval(dets, gts, num_classes, thr, plus_one, joint=True)[0][0]
    np.testing.assert_allclose(r.ap_joint_classes, joint_ap, rtol=1e-9, atol=1e-12, equal_nan=True)
