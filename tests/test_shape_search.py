"""The second look's shape search (``InferenceConfig.reshape_top``, os2d.inference.verify): stretched
parallelograms, candidates, the box it picks on a wide object, and its options."""

from __future__ import annotations

import pytest
import torch
from helpers import scene_with, textured_object

from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.inference.verify import (
    RESHAPE_BETAS,
    agreement,
    box_corners,
    reshape_candidates,
    stretched_corners,
    top_per_scope,
    verify_detections,
)
from os2d.io import image_to_tensor
from os2d.ops import box_iou
from os2d.results import Detections


def _sides(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (c[:, 1] - c[:, 0]).norm(dim=1), (c[:, 2] - c[:, 0]).norm(dim=1)


def test_stretched_corners_keep_centre_area_and_take_the_ratio():
    turned = torch.tensor([[[10.0, 0], [10, 10], [0, 0], [0, 10]]])  # a 10 x 10 square turned by 90 degrees
    box = box_corners(torch.tensor([[0.0, 0, 40, 10]]))  # 4:1
    corners = torch.cat([turned, box])
    out = stretched_corners(corners, torch.tensor([2.5, 1.0]))
    w, h = _sides(out)
    torch.testing.assert_close(w / h, torch.tensor([2.5, 1.0]))
    torch.testing.assert_close(w * h, torch.tensor([100.0, 400.0]))
    torch.testing.assert_close(out.mean(dim=1), corners.mean(dim=1))
    torch.testing.assert_close(out[1], box_corners(torch.tensor([[10.0, -5, 30, 15]]))[0])  # 20 x 20, same centre
    # the turned square's own x axis (down the picture) is the one that grows
    d = out[0, 1] - out[0, 0]
    assert abs(float(d[0])) < 1e-5 and float(d[1]) > 10
    # opposite sides stay parallel and equal: still a parallelogram
    torch.testing.assert_close(out[:, 3] - out[:, 2], out[:, 1] - out[:, 0])


def test_candidates_only_where_the_shape_is_off():
    corners = box_corners(torch.tensor([[0.0, 0, 20, 20], [0, 0, 52, 20], [0, 0, 20, 80]]))  # 1:1, 2.6:1, 1:4
    cands, owner = reshape_candidates(corners, torch.tensor([2.5, 2.5, 0.25]))
    assert owner.tolist() == [0] * len(RESHAPE_BETAS)  # the others are within 10% of their class's ratio
    w, h = _sides(cands)
    ratios = (w / h).tolist()
    expected = [2.5 ** b for b in RESHAPE_BETAS]
    assert ratios == pytest.approx(expected, rel=1e-5)
    empty, none = reshape_candidates(corners[1:], torch.tensor([2.5, 0.25]))
    assert empty.shape == (0, 4, 2) and none.numel() == 0


@pytest.fixture(scope="module")
def wide() -> tuple[Detector, torch.Tensor]:
    from conftest import make_toy_model

    obj = textured_object(size=(192, 64), seed=5)  # 3:1
    det = Detector(make_toy_model(), InferenceConfig(image_size=None, max_detections=None))
    det.add_class("wide", obj)
    return det, image_to_tensor(scene_with(obj, [(60, 90)], size=(320, 240)))


def test_a_square_box_on_a_wide_object_takes_its_shape(wide):
    det, image = wide
    g = det.gallery
    truth = torch.tensor([[60.0, 90, 252, 154]])
    square = torch.tensor([[100.0, 66, 212, 178]])  # the object's centre, its area, 1:1
    dets = Detections(square, torch.tensor([0.5]), torch.tensor([0]), box_corners(square), ["wide"], (320, 240))
    plain = verify_detections(det.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0)
    shaped = verify_detections(det.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, reshape_top=1)
    assert plain.boxes_xyxy.tolist() == square.tolist()
    assert float(box_iou(shaped.boxes_xyxy, truth)) > 0.8 > float(box_iou(square, truth))
    w, h = _sides(shaped.corners_xy)
    assert float(w / h) > 2.0
    assert shaped.scores.tolist() == plain.scores.tolist()  # the score stays the one of the box it came with
    v = agreement(det.model, image, torch.cat([box_corners(square), shaped.corners_xy]), torch.tensor([0, 0]),
                  g.kernels, g.view_class, g.view_aspect)
    assert float(v[1]) > float(v[0])
    boxed = verify_detections(det.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, crop="box",
                              reshape_top=1)  # box crops: the box is searched (here the same square)
    torch.testing.assert_close(boxed.boxes_xyxy, shaped.boxes_xyxy)
    torch.testing.assert_close(boxed.corners_xy, box_corners(boxed.boxes_xyxy))


def test_a_box_of_the_right_shape_is_left_alone_and_boxes_stay_in_the_image(wide):
    det, image = wide
    g = det.gallery
    boxes = torch.tensor([[60.0, 90, 252, 154], [0.0, 0, 100, 100]])  # the object; a square at the corner
    dets = Detections(boxes, torch.tensor([0.5, 0.4]), torch.tensor([0, 0]), box_corners(boxes), ["wide"], (320, 240))
    out = verify_detections(det.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, reshape_top=2)
    first = out.boxes_xyxy[out.scores.argmax()]
    assert first.tolist() == boxes[0].tolist()  # within 10% of the class's ratio: no candidates
    assert float(out.boxes_xyxy.min()) >= 0 and bool((out.boxes_xyxy[:, 2] <= 320).all())
    assert bool((out.boxes_xyxy[:, 3] <= 240).all())


def test_a_shape_stretched_off_the_photo_is_not_taken(wide, monkeypatch):
    """A thin parallelogram centred left of the photo overlaps it (its clipped box is a valid detection), but
    stretched to the class's ratio about the same centre it leaves the photo: that candidate's crop would be the
    replicated border, and its box, clipped to the photo, empty. It is not looked at, even where every candidate
    would agree better (here forced), and every box stays non-empty."""
    import os2d.inference.verify as verify

    det, image = wide
    g = det.gallery
    thin = torch.tensor([[[-300.0, 90], [100, 90], [-300, 110], [100, 110]]])  # 400 x 20, centre (-100, 100)
    dets = Detections(torch.tensor([[0.0, 90, 100, 110]]), torch.tensor([0.5]), torch.tensor([0]), thin, ["wide"],
                      (320, 240))
    cands, _ = verify.reshape_candidates(thin, torch.tensor([3.0]))
    off = cands[..., 0].amax(dim=1) < 0
    assert off.tolist() == [False, True]  # half-way to 3:1 it still overlaps the photo, at 3:1 it lies left of it
    looked = []
    monkeypatch.setattr(verify, "agreement", lambda model, image, corners, *a, **k: looked.append(corners)
                        or torch.ones(len(corners)))
    out = verify_detections(det.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, reshape_top=1)
    assert len(looked) == 2 and torch.equal(looked[1], cands[~off])  # its own shape, then the one on the photo
    box = out.boxes_xyxy[0]
    assert float(box[2]) > float(box[0]) >= 0 and float(box[3]) > float(box[1]) >= 0


def test_detector_keeps_the_scores(wide):
    det, _ = wide
    scene = scene_with(textured_object(size=(192, 64), seed=5), [(60, 90)], size=(320, 240))
    plain = det.detect(scene, max_detections=5, reshape_top=0)
    shaped = det.detect(scene, max_detections=5, reshape_top=5)
    assert len(plain) == len(shaped) and shaped.scores.tolist() == plain.scores.tolist()
    # its options: test_verify_rescore.test_config_and_cli_options


def test_top_per_scope_takes_the_k_best_of_the_image_or_of_each_class():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = torch.tensor([0, 0, 0, 1, 2, 1])
    assert top_per_scope(scores, labels, 2, "image").tolist() == [0, 1]
    assert top_per_scope(scores, labels, 2, "class").tolist() == [0, 1, 3, 4, 5]  # best first, 2 of each class
    assert top_per_scope(scores.flip(0), labels.flip(0), 1, "class").tolist() == [5, 2, 1]


def test_class_scope_gives_a_class_the_same_boxes_whatever_else_is_run(wide):
    """Per class, the search on one class's detections does not change when another class's better detections are
    added; over the image it does (the other class takes the K places)."""
    det, image = wide
    g = det.gallery
    square = torch.tensor([[100.0, 66, 212, 178]])  # the wide object's centre and area, 1:1
    alone = Detections(square, torch.tensor([0.5]), torch.tensor([0]), box_corners(square), ["wide", "other"],
                       (320, 240))
    other = torch.tensor([[0.0, 0, 60, 60], [250.0, 170, 310, 230]])
    both = Detections(torch.cat([square, other]), torch.tensor([0.5, 100.0, 90.0]), torch.tensor([0, 1, 1]),
                      box_corners(torch.cat([square, other])), ["wide", "other"], (320, 240))
    view_class = torch.cat([g.view_class, torch.tensor([1])])  # "other": the same kernels, square
    kernels, aspect = torch.cat([g.kernels, g.kernels]), torch.cat([g.view_aspect, torch.tensor([1.0])])

    def wide_box(dets, scope):
        out = verify_detections(det.model, dets, image, kernels, view_class, aspect, 2.0, reshape_top=1,
                                reshape_scope=scope)
        return out.boxes_xyxy[out.labels == 0][0].tolist()

    assert wide_box(both, "class") == wide_box(alone, "class") == wide_box(alone, "image") != square[0].tolist()
    assert wide_box(both, "image") == square[0].tolist()  # the image's 1 best is the other class's
    with pytest.raises(ValueError, match="reshape scope"):
        verify_detections(det.model, alone, image, kernels, view_class, aspect, 2.0, reshape_scope="row")
    with pytest.raises(ValueError, match="reshape_scope"):
        InferenceConfig(reshape_scope="row")
