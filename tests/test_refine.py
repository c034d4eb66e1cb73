"""Zoomed re-localisation (os2d.inference.refine): crop geometry, boxes recovered at the class's own shape, the
detector's option, config and CLI."""

from __future__ import annotations

import argparse

import pytest
import torch
from helpers import ring_object, scene_with, textured_object

from os2d.apps.cli.common import CliError, add_inference_args, inference_config
from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.inference.refine import _crop_layout, refine_detections, relocalise
from os2d.inference.verify import box_corners
from os2d.io import image_to_tensor
from os2d.ops import box_iou
from os2d.results import Detections

WIDE = (192, 96)  # a 2:1 object
WIDE_AT = (100, 120)  # its top-left in the scene
TRUTH = torch.tensor([[100.0, 120, 292, 216]])


@pytest.fixture(scope="module")
def detector() -> Detector:
    from conftest import make_toy_model  # TransformNet at its identity initialisation

    det = Detector(make_toy_model(), InferenceConfig(image_size=None, max_detections=None, verify_rescore=0.0))
    det.add_class("wide", textured_object(size=WIDE, seed=3))
    return det


def square_guess() -> torch.Tensor:
    """A square box of the object's area on its centre: the shape of a first-pass box on a wide package."""
    side = (WIDE[0] * WIDE[1]) ** 0.5
    cx, cy = WIDE_AT[0] + WIDE[0] / 2, WIDE_AT[1] + WIDE[1] / 2
    return torch.tensor([[cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]])


@pytest.mark.parametrize("crop", ["aspect", "squeeze"])
def test_crop_layout_makes_the_object_anchor_sized(crop):
    box = torch.tensor([[10.0, 20.0, 110.0, 70.0]])  # 100 x 50, area 5000
    window, k, cw, ch = _crop_layout(box, 2.0, 240.0, 2.0, crop)
    # the object (the box's area, aspect 2: 100 x 50) becomes the anchor, square or aspect-shaped
    obj_w, obj_h = 100 * float(k[0, 0]), 50 * float(k[0, 1])
    if crop == "aspect":
        assert (cw, ch) == (679, 339) and obj_w == pytest.approx(240 * 2**0.5) and obj_h == pytest.approx(240 / 2**0.5)
    else:
        assert (cw, ch) == (480, 480) and obj_w == pytest.approx(240) and obj_h == pytest.approx(240)
    tl, tr, bl = window[0, 0], window[0, 1], window[0, 2]  # centred on the box, context 2 x the object
    torch.testing.assert_close((tl + window[0, 3]) / 2, torch.tensor([60.0, 45.0]))
    torch.testing.assert_close(tr[0] - tl[0], torch.tensor(cw / float(k[0, 0])))
    torch.testing.assert_close(bl[1] - tl[1], torch.tensor(ch / float(k[0, 1])))


@pytest.mark.parametrize("crop", ["aspect", "squeeze"])
def test_relocalise_gives_a_square_guess_the_objects_shape(detector, crop):
    image = image_to_tensor(scene_with(textured_object(size=WIDE, seed=3), [WIDE_AT]))
    g = detector.gallery
    guess = square_guess()
    boxes, corners = relocalise(detector.model, image, guess, torch.tensor([0]), g.kernels, g.view_class,
                                g.view_aspect, crop=crop)
    before, after = float(box_iou(guess, TRUTH)), float(box_iou(boxes, TRUTH))
    assert before < 0.6 and after > 0.85, (before, after, boxes)
    assert torch.isfinite(corners).all()
    w, h = float(boxes[0, 2] - boxes[0, 0]), float(boxes[0, 3] - boxes[0, 1])
    assert w / h == pytest.approx(2.0, rel=0.1)


def test_relocalise_never_jumps_to_another_object(detector):
    """Two copies side by side: a guess on the left one stays on it (the IoU guard)."""
    image = image_to_tensor(scene_with(textured_object(size=WIDE, seed=3), [WIDE_AT, (300, 120)], size=(520, 352)))
    g = detector.gallery
    boxes, _ = relocalise(detector.model, image, square_guess(), torch.tensor([0]), g.kernels, g.view_class,
                          g.view_aspect, min_iou=0.3)
    assert float(box_iou(boxes, TRUTH)) > 0.85


def test_refine_detections_moves_the_top_only_and_merges_duplicates(detector):
    image = image_to_tensor(scene_with(textured_object(size=WIDE, seed=3), [WIDE_AT]))
    guess = square_guess()
    shifted = guess + torch.tensor([[6.0, 0, 6, 0]])  # a second box on the same object
    far = torch.tensor([[380.0, 250, 440, 310]])
    boxes = torch.cat([guess, shifted, far])
    dets = Detections(boxes, torch.tensor([0.9, 0.8, 0.1]), torch.tensor([0, 0, 0]), box_corners(boxes), ["wide"],
                      (480, 352))
    g = detector.gallery
    out = refine_detections(detector.model, dets, image, g.kernels, g.view_class, g.view_aspect, top=2, nms_iou=0.3)
    # both top boxes land on the object and merge into the best one; the third is not looked at
    assert out.scores.tolist() == pytest.approx([0.9, 0.1])
    assert float(box_iou(out.boxes_xyxy[:1], TRUTH)) > 0.85
    assert out.boxes_xyxy[1].tolist() == far[0].tolist()
    off = refine_detections(detector.model, dets, image, g.kernels, g.view_class, g.view_aspect, top=0, nms_iou=0.3)
    assert off.boxes_xyxy.tolist() == boxes.tolist()
    half = image[:, ::2, ::2]  # a half-size copy of the photo: boxes come back in original pixels
    small = refine_detections(detector.model, dets, half, g.kernels, g.view_class, g.view_aspect, top=1,
                              nms_iou=0.3)
    assert float(box_iou(small.boxes_xyxy[:1], TRUTH)) > 0.8


def test_detector_option_keeps_scores_caps_and_thresholds(detector):
    scene = scene_with(textured_object(size=WIDE, seed=3), [WIDE_AT])
    scene.paste(ring_object(), (340, 200))
    raw = detector.detect(scene, max_detections=10)
    refined = detector.detect(scene, max_detections=10, refine_top=3)
    assert 0 < len(refined) <= len(raw) and bool((refined.scores[:-1] >= refined.scores[1:]).all())
    assert set(refined.scores.tolist()) <= set(raw.scores.tolist())  # scores unchanged, duplicates merged
    assert float(box_iou(refined.boxes_xyxy[:1], TRUTH)) >= float(box_iou(raw.boxes_xyxy[:1], TRUTH)) - 1e-6
    one = detector.detect(scene, max_detections=1, refine_top=3)
    assert len(one) == 1 and one.boxes_xyxy.tolist() == refined.boxes_xyxy[:1].tolist()
    cut = float(refined.scores[len(refined) // 2])
    assert len(detector.detect(scene, max_detections=10, refine_top=3, score_threshold=cut)) == int(
        (refined.scores >= cut).sum())


def test_config_and_cli_options():
    with pytest.raises(ValueError, match="refine_top"):
        InferenceConfig(refine_top=-1)
    with pytest.raises(ValueError, match="refine_crop"):
        InferenceConfig(refine_crop="disc")
    p = argparse.ArgumentParser()
    add_inference_args(p, image_size_help="")
    cfg = inference_config(p.parse_args(["--refine-top", "5", "--refine-crop", "squeeze"]))
    assert (cfg.refine_top, cfg.refine_crop) == (5, "squeeze")
    assert inference_config(p.parse_args([])).refine_top == InferenceConfig().refine_top
    with pytest.raises(CliError, match="refine_top"):
        inference_config(p.parse_args(["--refine-top", "-1"]))


@pytest.mark.parametrize("crop", ["aspect", "squeeze"])
def test_checked_refinement_never_lowers_the_class_agreement(detector, crop):
    from os2d.inference.verify import agreement

    image = image_to_tensor(scene_with(textured_object(size=WIDE, seed=3), [WIDE_AT]))
    g = detector.gallery
    boxes = torch.cat([TRUTH, square_guess(), TRUTH + torch.tensor([[30.0, 10, 30, 10]])])
    dets = Detections(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 0]), box_corners(boxes), ["wide"],
                      (480, 352))
    out = refine_detections(detector.model, dets, image, g.kernels, g.view_class, g.view_aspect, top=3, nms_iou=1.0,
                            crop=crop)
    assert out.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    labels = torch.zeros(3, dtype=torch.long)
    before = agreement(detector.model, image, dets.corners_xy, labels, g.kernels, g.view_class, g.view_aspect)
    after = agreement(detector.model, image, out.corners_xy, labels, g.kernels, g.view_class, g.view_aspect)
    assert bool((after >= before - 1e-6).all()), (before, after)
    assert float(box_iou(out.boxes_xyxy[1:2], TRUTH)) > 0.85  # the square guess still gets the object's shape
