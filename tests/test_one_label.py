"""One label per object (os2d.inference.one_label): greedy cross-class suppression, and its use in shelf reports."""

from __future__ import annotations

import pytest
import torch

from os2d.inference.one_label import cross_class_keep, suppress_cross_class
from os2d.results import Detections


def test_a_better_detection_of_another_class_removes_the_overlapping_one_and_same_class_overlaps_stay():
    boxes = torch.tensor([[0, 0, 100, 100], [5, 0, 105, 100], [2, 0, 102, 100], [300, 0, 400, 100.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 1, 0, 1])
    # 1 overlaps 0 (another class, better): removed; 2 overlaps 0 too but is the same class (NMS's business): kept
    assert cross_class_keep(boxes, scores, labels, 0.5).tolist() == [True, False, True, True]
    assert cross_class_keep(boxes, scores, labels, 0.99).tolist() == [True, True, True, True]  # IoU 0.90-0.95


def test_greedy_a_removed_detection_removes_nothing_and_order_follows_the_scores():
    # A (class 0) overlaps B (class 1) by IoU 0.6; B overlaps C (class 0) by 0.6; A and C barely: greedy keeps A, C
    boxes = torch.tensor([[0, 0, 100, 100], [25, 0, 125, 100], [50, 0, 150, 100.0]])
    labels = torch.tensor([0, 1, 0])
    assert cross_class_keep(boxes, torch.tensor([0.9, 0.8, 0.7]), labels, 0.5).tolist() == [True, False, True]
    # the scores decide, not the input order: B best removes both of class 0 next to it
    assert cross_class_keep(boxes, torch.tensor([0.5, 0.9, 0.7]), labels, 0.5).tolist() == [False, True, False]
    # equal scores: the earlier one stays
    assert cross_class_keep(boxes[:2], torch.tensor([0.5, 0.5]), labels[:2], 0.5).tolist() == [True, False]
    assert cross_class_keep(boxes[:1], torch.tensor([0.5]), labels[:1], 0.5).tolist() == [True]
    assert cross_class_keep(boxes[:0], torch.zeros(0), labels[:0], 0.5).tolist() == []


def test_suppress_cross_class_keeps_every_field_of_the_others():
    dets = Detections(boxes_xyxy=torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60.0]]),
                      scores=torch.tensor([0.9, 0.8, 0.7]), labels=torch.tensor([0, 1, 1]),
                      corners_xy=torch.arange(24.0).view(3, 4, 2), class_names=["a", "b"], image_size=(64, 64),
                      confidence=torch.tensor([0.99, 0.98, 0.97]))
    out = suppress_cross_class(dets, 0.5)
    assert out.label_names == ["a", "b"] and out.scores.tolist() == pytest.approx([0.9, 0.7])
    assert torch.equal(out.corners_xy, dets.corners_xy[[0, 2]]) and out.confidence.tolist() == pytest.approx([0.99, 0.97])
    assert out.image_size == (64, 64) and out.class_names == ["a", "b"]
