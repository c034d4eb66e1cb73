"""Targets (assignment, remapping) and the training objective: known answers computed by hand, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from os2d.model.box_coder import make_anchors
from os2d.model.head import HeadOutput
from os2d.train.losses import (
    LossConfig,
    Os2dObjective,
    contrastive_loss,
    localization_loss,
    rll_negative_weights,
)
from os2d.train.sampler import TrainBatch
from os2d.train.targets import assign, remap

STRIDE, SIZE = 16.0, 32.0  # small anchors: a 1 x 4 map has anchors [-8+16l, -8, 24+16l, 24]


def anchors_1x4() -> torch.Tensor:
    return make_anchors(1, 4, stride=STRIDE, size=SIZE)


def head_output(scores: torch.Tensor, boxes: torch.Tensor | None = None,
                detached: torch.Tensor | None = None) -> HeadOutput:
    """A HeadOutput on a (h, w) map; boxes default to the anchors (identity transformation)."""
    b, k, h, w = scores.shape
    if boxes is None:
        boxes = make_anchors(h, w, stride=STRIDE, size=SIZE).view(1, 1, h, w, 4).expand(b, k, h, w, 4).clone()
    return HeadOutput(scores=scores, boxes_xyxy=boxes, corners_xy=torch.zeros(b, k, h, w, 4, 2),
                      scores_transform_detached=detached, stride=STRIDE, anchor_size=SIZE)


def batch_of(boxes: list[list[list[float]]], labels: list[list[int]], k: int,
             difficult: list[list[bool]] | None = None) -> TrainBatch:
    n = len(boxes)
    difficult = difficult or [[False] * len(lab) for lab in labels]
    return TrainBatch(
        images=torch.zeros(n, 3, 16, 64),
        boxes=[torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes],
        labels=[torch.tensor(lab, dtype=torch.int64) for lab in labels],
        difficult=[torch.tensor(d, dtype=torch.bool) for d in difficult],
        class_images=[torch.zeros(3, 8, 8) for _ in range(k)],
        class_ids=list(range(k)),
        image_ids=[f"im{i}" for i in range(n)],
    )


# ----------------------------------------------------------------------------------------------- targets


def test_assign_thresholds_difficult_and_background() -> None:
    anchors = anchors_1x4()  # x ranges [-8,24], [8,40], [24,56], [40,72]; y [-8, 24]
    boxes = torch.tensor([[-8.0, -8, 24, 24],  # = anchor 0 (IoU 1), anchor 1 IoU 1/3
                          [40.0, -8, 72, 24],  # = anchor 3, difficult
                          [24.0, -8, 56, 24]])  # = anchor 2, class not in the batch
    labels = torch.tensor([0, 0, -1])
    difficult = torch.tensor([False, True, False])
    lab, matched = assign(anchors, boxes, labels, difficult, 2, pos_iou=0.5, neg_iou=0.1)
    assert lab.dtype == torch.int8 and lab.shape == (2, 4) and matched.shape == (2, 4, 4)
    # class 0: anchor 0 positive, anchor 1 (IoU 1/3) ignored, anchor 2 (IoU 1/3 with the difficult box)
    # ignored, anchor 3 matched to the difficult box -> ignored
    assert lab[0].tolist() == [1, -1, -1, -1]
    assert lab[1].tolist() == [0, 0, 0, 0]  # no box: all negatives; the -1 box is background everywhere
    torch.testing.assert_close(matched[0, 0], boxes[0])
    # with a lower negative threshold than 1/3 nothing changes; with neg_iou 0.4 anchor 1 becomes negative
    lab, _ = assign(anchors, boxes, labels, difficult, 2, pos_iou=0.5, neg_iou=0.4)
    assert lab[0].tolist() == [1, 0, 0, -1]  # below neg_iou the difficult flag does not matter
    # no boxes at all
    lab, matched = assign(anchors, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64),
                          torch.zeros(0, dtype=torch.bool), 3)
    assert lab.shape == (3, 4) and bool((lab == 0).all()) and bool((matched == 0).all())


def test_assign_no_low_quality_forcing() -> None:
    # a box far smaller than every anchor: no positive is forced for it
    anchors = anchors_1x4()
    lab, _ = assign(anchors, torch.tensor([[0.0, 0, 6, 6]]), torch.tensor([0]), torch.tensor([False]), 1)
    assert not bool((lab == 1).any())
    assert lab[0].tolist() == [0, 0, 0, 0]  # IoU 36/1024 < 0.1


def test_assign_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="labels"):
        assign(anchors_1x4(), torch.zeros(2, 4), torch.zeros(3, dtype=torch.int64), torch.zeros(2, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="neg_iou"):
        assign(anchors_1x4(), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool),
               1, pos_iou=0.1, neg_iou=0.5)


def test_remap_uses_predicted_boxes_per_class() -> None:
    gt = torch.tensor([[0.0, 0, 32, 32]])
    pred = torch.tensor([[[0.0, 0, 32, 32], [2.0, 0, 34, 32], [8.0, 0, 40, 32], [100.0, 0, 132, 32]],
                         [[0.0, 0, 32, 32]] * 4])
    lab = remap(pred, gt, torch.tensor([0]), torch.tensor([False]), 2, pos_iou=0.8, neg_iou=0.4)
    # IoUs of class 0: 1, 30/34 = 0.88, 24/40 = 0.6, 0 -> pos, pos, ignore, neg; class 1 has no box
    assert lab.tolist() == [[1, 1, -1, 0], [0, 0, 0, 0]]
    lab = remap(pred, gt, torch.tensor([0]), torch.tensor([True]), 2)
    assert lab[0].tolist() == [-1, -1, -1, 0]


# ------------------------------------------------------------------------------------------------ RLL


def hand_rll_negative_term(per_class_losses: list[list[float]], ratio: float = 0.001) -> float:
    """Reference RLL negative term written out: per class, w_i = exp(T (l_i - M)) on active negatives,
    T = ln(1/ratio) / M, normalised; mean over the active classes."""
    means = []
    for losses in per_class_losses:
        m = max(losses)
        if m <= 1e-5:
            continue
        t = math.log(1 / ratio) / m
        w = [math.exp(t * (x - m)) if x > 0 else 0.0 for x in losses]
        means.append(sum(wi * li for wi, li in zip(w, losses, strict=True)) / sum(w))
    return sum(means) / len(means) if means else 0.0


def test_rll_known_answer_two_classes() -> None:
    # class 0 has a box exactly on anchor 0: remapped targets (predicted = anchors) are [pos, neg, neg, neg]
    # (anchor 1 overlaps it with IoU 1/3 < 0.4); class 1 has no box: 4 negatives
    scores = torch.tensor([[[[0.3, 0.7, 0.55, 0.2]], [[0.9, 0.4, 0.6, 0.52]]]], requires_grad=True)
    batch = batch_of([[[-8.0, -8, 24, 24]]], [[0]], k=2)
    out = head_output(scores)
    losses = Os2dObjective(LossConfig())(out, batch)
    # m_pos 0.6, m_neg 0.5, pieces 0.5 * hinge
    l_pos = 0.5 * (0.6 - 0.3)
    neg0 = [0.5 * max(s - 0.5, 0) for s in (0.7, 0.55, 0.2)]  # 0.1, 0.025, 0
    neg1 = [0.5 * max(s - 0.5, 0) for s in (0.9, 0.4, 0.6, 0.52)]  # 0.2, 0, 0.05, 0.01
    expected_neg = hand_rll_negative_term([neg0, neg1])
    # the same numbers spelled out: 1000^-0.75 and 1000^-0.95 are the relative weights
    w = 1000 ** -0.75
    spelled = ((0.1 + w * 0.025) / (1 + w) + (0.2 + w * 0.05 + 1000 ** -0.95 * 0.01) / (1 + w + 1000 ** -0.95)) / 2
    assert expected_neg == pytest.approx(spelled, rel=1e-12)
    assert float(losses["loss_rec_pos"]) == pytest.approx(l_pos, rel=1e-6)
    assert float(losses["loss_rec_neg"]) == pytest.approx(expected_neg, rel=1e-6)
    assert float(losses["loss"].detach()) == pytest.approx(l_pos + expected_neg, rel=1e-6)
    assert float(losses["num_pos"]) == 1 and float(losses["num_neg"]) == 7 and float(losses["num_loc_pos"]) == 1
    assert float(losses["num_pos_active"]) == 1 and float(losses["num_neg_active"]) == 5
    assert set(losses) >= {"loss", "loss_rec", "loss_rec_pos", "loss_rec_neg", "loss_loc", "num_pos", "num_neg",
                           "num_loc_pos"}
    assert all(not v.requires_grad for key, v in losses.items() if key != "loss")

    # gradients: weights are detached, so d loss / d s = -0.5 / n_active_pos (positive) and
    # 0.5 * w_i (negative), w_i the normalised weight divided by the number of active classes (2)
    losses["loss"].backward()
    g = scores.grad[0, :, 0]
    norm0 = 1 + w
    norm1 = 1 + w + 1000 ** -0.95
    expected = torch.tensor([[-0.5, 0.5 / norm0 / 2, 0.5 * w / norm0 / 2, 0.0],
                             [0.5 / norm1 / 2, 0.0, 0.5 * w / norm1 / 2, 0.5 * 1000 ** -0.95 / norm1 / 2]])
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-8)


def test_rll_pools_a_class_over_images_and_scales_class_neg_weight() -> None:
    # two images, one class without boxes: one weight normalisation over both images' anchors
    s = torch.tensor([[[[0.8, 0.6, 0.5, 0.1]]], [[[0.7, 0.9, 0.3, 0.55]]]])
    batch = batch_of([[], []], [[], []], k=1)
    losses = Os2dObjective(LossConfig(class_neg_weight=2.0))(head_output(s), batch)
    pooled = [0.5 * max(v - 0.5, 0) for v in (0.8, 0.6, 0.5, 0.1, 0.7, 0.9, 0.3, 0.55)]
    assert float(losses["loss_rec_neg"]) == pytest.approx(hand_rll_negative_term([pooled]), rel=1e-6)
    assert float(losses["loss_rec_pos"]) == 0.0 and float(losses["num_pos"]) == 0
    assert float(losses["loss"].detach()) == pytest.approx(2.0 * hand_rll_negative_term([pooled]), rel=1e-6)


def test_rll_weights_properties() -> None:
    losses = torch.tensor([[0.2, 0.0, 0.05, 0.01], [0.0, 0.0, 0.0, 0.0], [0.3, 0.3, 0.1, 0.0]])
    mask = torch.ones_like(losses, dtype=torch.bool)
    mask[2, 0] = False  # not a negative: ignored even with the largest loss
    w, active = rll_negative_weights(losses, mask, 0.001)
    assert float(active) == 2
    torch.testing.assert_close(w.sum(dim=1), torch.tensor([0.5, 0.0, 0.5]))
    # hardest / a negative exactly at the margin would be 1000; check the ratio's law on the actual values
    assert float(w[0, 0] / w[0, 2]) == pytest.approx(1000 ** 0.75, rel=1e-5)
    assert float(w[2, 1] / w[2, 2]) == pytest.approx(1000 ** (2 / 3), rel=1e-5)
    assert float(w[2, 0]) == 0.0 and float(w[0, 1]) == 0.0
    assert not w.requires_grad


def test_negatives_use_detached_transform_scores_unless_asked() -> None:
    scores = torch.tensor([[[[0.3, 0.7, 0.55, 0.2]]]], requires_grad=True)
    detached = torch.tensor([[[[0.3, 0.8, 0.65, 0.2]]]], requires_grad=True)
    batch = batch_of([[[-8.0, -8, 24, 24]]], [[0]], k=1)
    losses = Os2dObjective(LossConfig())(head_output(scores, detached=detached), batch)
    assert float(losses["loss_rec_neg"]) == pytest.approx(hand_rll_negative_term([[0.15, 0.075, 0.0]]), rel=1e-6)
    losses["loss"].backward()
    assert scores.grad[0, 0, 0].tolist()[1:] == [0.0, 0.0, 0.0]  # negatives: no gradient through `scores`
    assert scores.grad[0, 0, 0, 0] < 0 and detached.grad[0, 0, 0, 0] == 0
    assert bool((detached.grad[0, 0, 0, 1:3] > 0).all())

    scores.grad = None
    losses = Os2dObjective(LossConfig(train_transform_on_negs=True))(head_output(scores, detached=detached), batch)
    assert float(losses["loss_rec_neg"]) == pytest.approx(hand_rll_negative_term([[0.1, 0.025, 0.0]]), rel=1e-6)
    losses["loss"].backward()
    assert bool((scores.grad[0, 0, 0, 1:3] > 0).all())


def test_remap_off_uses_anchor_targets() -> None:
    # predicted boxes shifted by 4 px: IoU with the GT 28/36 = 0.78 < 0.8 -> remapped target "ignore"
    scores = torch.tensor([[[[0.3, 0.7, 0.55, 0.2]]]])
    boxes = anchors_1x4().view(1, 1, 1, 4, 4).clone()
    boxes[..., 0, :] += torch.tensor([4.0, 0, 4, 0])
    batch = batch_of([[[-8.0, -8, 24, 24]]], [[0]], k=1)
    remapped = Os2dObjective(LossConfig())(head_output(scores, boxes), batch)
    plain = Os2dObjective(LossConfig(remap=False))(head_output(scores, boxes), batch)
    assert float(remapped["num_pos"]) == 0 and float(plain["num_pos"]) == 1
    assert float(plain["num_neg"]) == 2  # anchor 1 (IoU 1/3) is ignored under 0.5 / 0.1
    assert float(remapped["num_loc_pos"]) == float(plain["num_loc_pos"]) == 1


# ----------------------------------------------------------------------------------------- contrastive


def test_contrastive_known_answer_and_hard_negative_mining() -> None:
    cfg = LossConfig(kind="contrastive", pos_margin=1.0, neg_margin=0.5, neg_to_pos_ratio=3)
    scores = torch.tensor([[[[0.3, 0.7, 0.55, 0.2]], [[0.9, 0.4, 0.6, 0.52]]]], requires_grad=True)
    batch = batch_of([[[-8.0, -8, 24, 24]]], [[0]], k=2)
    losses = Os2dObjective(cfg)(head_output(scores), batch)
    pos = 0.5 * (1.0 - 0.3) ** 2
    negs = sorted([0.5 * max(s - 0.5, 0) ** 2 for s in (0.7, 0.55, 0.2, 0.9, 0.4, 0.6, 0.52)], reverse=True)
    assert float(losses["loss_rec_pos"]) == pytest.approx(pos, rel=1e-6)
    assert float(losses["loss_rec_neg"]) == pytest.approx(sum(negs[:3]), rel=1e-5)  # 3 x 1 positive
    assert float(losses["num_neg_active"]) == 3
    losses["loss"].backward()
    g = scores.grad[0, :, 0]
    assert float(g[0, 0]) == pytest.approx(-(1.0 - 0.3), rel=1e-5)
    # only the three hardest negatives (0.9, 0.7, 0.6) get a gradient
    assert (g != 0).sum() == 4 and float(g[1, 0]) == pytest.approx(0.4, rel=1e-5)


def test_contrastive_and_loc_gradcheck() -> None:
    pos = torch.tensor([0.1, 0.4, 0.7], dtype=torch.float64, requires_grad=True)
    neg = torch.tensor([0.3, 0.05, 0.2, 0.6, 0.01, 0.45, 0.33], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, n: sum(contrastive_loss(p, n, 2)[:2]), (pos, neg))
    pred = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    pred.requires_grad_(True)
    target = torch.zeros(5, 4, dtype=torch.float64)
    target[:, 0] = 0.3  # keep |pred - target| away from the kink at 1
    assert torch.autograd.gradcheck(lambda x: localization_loss(x, target), (pred,))


# ---------------------------------------------------------------------------------------- localisation


def test_localization_zero_when_prediction_equals_target_and_known_value() -> None:
    gt = [[-4.0, -8, 28, 24]]  # anchor 0 shifted by 4 px: IoU 0.78 -> localisation positive
    scores = torch.full((1, 1, 1, 4), 0.5)
    batch = batch_of([gt], [[0]], k=1)
    boxes = anchors_1x4().view(1, 1, 1, 4, 4).clone()
    boxes[0, 0, 0, 0] = torch.tensor(gt[0])  # anchor 0 predicts the GT exactly
    losses = Os2dObjective(LossConfig(loc_weight=0.2))(head_output(scores, boxes), batch)
    assert float(losses["num_loc_pos"]) == 1 and float(losses["loss_loc"]) == pytest.approx(0.0, abs=1e-6)

    boxes = anchors_1x4().view(1, 1, 1, 4, 4).clone().requires_grad_(True)  # predicted = anchors
    losses = Os2dObjective(LossConfig(loc_weight=0.2))(head_output(scores, boxes), batch)
    # code dx = 10 * 4 / 32 = 1.25 -> smooth-L1 1.25 - 0.5 = 0.75; the others 0
    assert float(losses["loss_loc"]) == pytest.approx(0.75, rel=1e-5)
    assert float(losses["loss"].detach()) == pytest.approx(float(losses["loss_rec"]) + 0.2 * 0.75, rel=1e-5)
    losses["loss"].backward()
    assert boxes.grad is not None and float(boxes.grad.abs().sum()) > 0
    # V2 (loc_weight 0): the localisation term is reported but not in the loss
    losses = Os2dObjective(LossConfig())(head_output(scores, boxes), batch)
    assert float(losses["loss_loc"]) == pytest.approx(0.75, rel=1e-5)
    assert float(losses["loss"].detach()) == pytest.approx(float(losses["loss_rec"]))


# ------------------------------------------------------------------------------------- per-anchor, misc


def test_per_anchor_losses_for_mining() -> None:
    scores = torch.tensor([[[[0.3, 0.7, 0.55, 0.2]], [[0.9, 0.4, 0.6, 0.52]]]])
    batch = batch_of([[[-8.0, -8, 24, 24]]], [[0]], k=2)
    rec_pos, rec_neg, loc = Os2dObjective(LossConfig()).per_anchor_losses(head_output(scores), batch)
    assert rec_pos.shape == rec_neg.shape == loc.shape == (1, 2, 4)
    torch.testing.assert_close(rec_pos[0], torch.tensor([[0.15, 0, 0, 0], [0, 0, 0, 0]]))
    torch.testing.assert_close(rec_neg[0], torch.tensor([[0, 0.1, 0.025, 0], [0.2, 0, 0.05, 0.01]]))
    torch.testing.assert_close(loc, torch.zeros(1, 2, 4))  # the positive predicts its GT exactly


def test_empty_class_batch_and_shape_mismatch() -> None:
    scores = torch.zeros(2, 0, 1, 4, requires_grad=True)
    batch = batch_of([[[0.0, 0, 10, 10]], []], [[-1], []], k=0)
    losses = Os2dObjective(LossConfig())(head_output(scores), batch)
    assert float(losses["loss"].detach()) == 0.0 and losses["loss"].requires_grad
    losses["loss"].backward()
    with pytest.raises(ValueError, match="classes"):
        Os2dObjective(LossConfig())(head_output(torch.zeros(1, 3, 1, 4)), batch_of([[]], [[]], k=2))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="kind"):
        LossConfig(kind="bce")
    with pytest.raises(ValueError, match="rll_neg_weight_ratio"):
        LossConfig(rll_neg_weight_ratio=1.5)
    with pytest.raises(ValueError, match="remap_"):
        LossConfig(remap_pos_iou=0.3, remap_neg_iou=0.4)


def test_low_precision_scores_stay_finite() -> None:
    # autocast may hand over bfloat16/float16 scores; the temperature ln(1000) / M must not overflow
    scores = torch.tensor([[[[0.3, 0.5004, 0.5002, 0.2]]]], dtype=torch.float16, requires_grad=True)
    batch = batch_of([[[-8.0, -8, 24, 24]]], [[0]], k=1)
    losses = Os2dObjective(LossConfig())(head_output(scores), batch)
    assert all(bool(torch.isfinite(v.detach()).all()) for v in losses.values())
    assert losses["loss"].dtype == torch.float32
    losses["loss"].backward()
    assert bool(torch.isfinite(scores.grad.float()).all())
