"""Second look (os2d.inference.verify): crops, agreement with the class, re-scoring in the detector, config, CLI and
the calibration's score kind."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
from helpers import ring_object, scene_with, textured_object

from os2d.apps.cli.common import CliError, add_inference_args, inference_config
from os2d.apps.service.app import ServiceSettings
from os2d.calibration import Calibration, CalibrationError, score_kind, score_kind_name
from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.inference.colour import apply_score_factors
from os2d.inference.verify import (
    agreement,
    box_corners,
    crop_cells,
    crop_grid,
    project_cells,
    verify_detections,
)
from os2d.io import image_to_tensor
from os2d.results import Detections


def test_crop_grid_spans_the_parallelogram():
    """The crop of a box is that box resampled; an aligned parallelogram turned by 90 degrees gives the box's
    content turned by 90 degrees."""
    image = torch.arange(3 * 8 * 12, dtype=torch.float32).view(3, 8, 12)
    box = torch.tensor([[4.0, 2.0, 8.0, 6.0]])  # 4 x 4 px at x 4..8, y 2..6
    grid = crop_grid(box_corners(box), 4, 4, 12, 8)  # one sample per pixel centre
    crop = torch.nn.functional.grid_sample(image[None], grid, align_corners=False)[0]
    torch.testing.assert_close(crop, image[:, 2:6, 4:8])
    tl, tr, bl, br = box_corners(box)[0]
    turned = torch.stack([tr, br, tl, bl])[None]  # the top edge runs down the box's right side
    crop = torch.nn.functional.grid_sample(image[None], crop_grid(turned, 4, 4, 12, 8), align_corners=False)[0]
    torch.testing.assert_close(crop, torch.rot90(image[:, 2:6, 4:8], k=1, dims=(1, 2)))


@pytest.fixture(scope="module")
def detector(toy_model_module) -> Detector:
    det = Detector(toy_model_module, InferenceConfig(image_size=None, max_detections=None))
    det.add_class("obj", textured_object(seed=3))
    return det


@pytest.fixture(scope="module")
def toy_model_module():
    from conftest import make_toy_model

    return make_toy_model()


def test_agreement_is_high_on_the_class_and_lower_elsewhere(detector):
    obj = textured_object(seed=3)  # 96 x 128
    scene = scene_with(obj, [(40, 60)], size=(320, 240))
    image = image_to_tensor(scene)
    g = detector.gallery
    boxes = torch.tensor([[40.0, 60, 136, 188], [180.0, 20, 276, 148]])  # the object, then background
    v = agreement(detector.model, image, box_corners(boxes), torch.tensor([0, 0]), g.kernels, g.view_class,
                  g.view_aspect)
    assert v.shape == (2,) and float(v[0]) > 0.9 and float(v[0]) > float(v[1]) + 0.1, v


def test_verify_rescores_sorts_caps_and_drops_beyond_top(detector):
    image = image_to_tensor(scene_with(textured_object(seed=3), [(40, 60)], size=(320, 240)))
    boxes = torch.tensor([[180.0, 20, 276, 148], [40.0, 60, 136, 188], [0.0, 0, 50, 50]])
    dets = Detections(boxes, torch.tensor([0.6, 0.5, -0.1]), torch.tensor([0, 0, 0]), box_corners(boxes), ["obj"],
                      (320, 240))
    g = detector.gallery
    v = agreement(detector.model, image, box_corners(boxes), dets.labels, g.kernels, g.view_class, g.view_aspect)
    out = verify_detections(detector.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, crop="box")
    assert out.boxes_xyxy[0].tolist() == boxes[1].tolist()  # the object overtakes the background box
    factors = v.clamp(min=0.01) ** 2
    expected = torch.where(dets.scores >= 0, dets.scores * factors, dets.scores / factors)
    torch.testing.assert_close(out.scores, expected.sort(descending=True).values)
    two = verify_detections(detector.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, crop="box",
                            top=2)  # the third (lowest raw score) is not looked at: dropped
    assert len(two) == 2 and out.scores[:2].tolist() == two.scores.tolist()
    one = verify_detections(detector.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, crop="box",
                            max_detections=1)
    assert len(one) == 1 and one.scores.tolist() == out.scores[:1].tolist()
    half = image[:, ::2, ::2]  # a half-size copy of the photo: corners are scaled to it
    small = verify_detections(detector.model, dets, half, g.kernels, g.view_class, g.view_aspect, 2.0, crop="box")
    assert small.boxes_xyxy[0].tolist() == boxes[1].tolist()
    with pytest.raises(ValueError, match="verify crop"):
        verify_detections(detector.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, crop="disc")


def test_rest_floor_keeps_the_unlooked_at_the_lowest_factor(detector):
    """``rest="floor"`` (benchmarks/verify_top.py): the detections beyond ``top`` are kept, their raw score times the
    lowest factor of the looked-at ones; the looked-at ones get exactly their own factor."""
    image = image_to_tensor(scene_with(textured_object(seed=3), [(40, 60)], size=(320, 240)))
    boxes = torch.tensor([[180.0, 20, 276, 148], [40.0, 60, 136, 188], [0.0, 0, 50, 50], [200.0, 100, 300, 200]])
    dets = Detections(boxes, torch.tensor([0.6, 0.5, 0.2, -0.1]), torch.tensor([0, 0, 0, 0]), box_corners(boxes),
                      ["obj"], (320, 240))
    g = detector.gallery
    v = agreement(detector.model, image, box_corners(boxes[:2]), dets.labels[:2], g.kernels, g.view_class,
                  g.view_aspect)
    factors = v.clamp(min=0.01) ** 2
    floor = float(factors.min())
    expected = torch.tensor([0.6 * float(factors[0]), 0.5 * float(factors[1]), 0.2 * floor, -0.1 / floor])
    out = verify_detections(detector.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, crop="box",
                            top=2, rest="floor")
    assert len(out) == 4
    torch.testing.assert_close(out.scores, expected.sort(descending=True).values)
    dropped = verify_detections(detector.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, crop="box",
                                top=2)
    assert len(dropped) == 2
    torch.testing.assert_close(dropped.scores, out.scores[:2])  # the two looked-at ones stay on top here
    capped = verify_detections(detector.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, crop="box",
                               top=2, rest="floor", max_detections=3)
    assert capped.scores.tolist() == out.scores[:3].tolist()
    with pytest.raises(ValueError, match="verify rest"):
        verify_detections(detector.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, rest="keep")


def test_detector_second_look_keeps_boxes_and_rescores_them(detector):
    scene = scene_with(textured_object(seed=3), [(40, 60)], size=(320, 240))
    scene.paste(ring_object(), (200, 60))
    raw = detector.detect(scene, max_detections=20, verify_rescore=0.0)
    assert InferenceConfig().verify_rescore == 2.0  # the default: the rule's arm (README, "Second look")
    looked = detector.detect(scene, max_detections=20, verify_rescore=2.0, reshape_top=0)  # no shape search
    assert len(looked) == len(raw) > 0 and bool((looked.scores[:-1] >= looked.scores[1:]).all())
    for box, s in zip(looked.boxes_xyxy, looked.scores, strict=True):  # the same boxes, scores times v^2 <= 1
        same = (raw.boxes_xyxy - box).abs().amax(dim=1) < 1e-4
        assert int(same.sum()) == 1
        r = float(raw.scores[same][0])
        assert abs(float(s)) <= abs(r) + 1e-6 if r >= 0 else float(s) <= r + 1e-6
    shaped = detector.detect(scene, max_detections=20, verify_rescore=2.0)  # the default: may change boxes, not scores
    assert InferenceConfig().reshape_top > 0 and shaped.scores.tolist() == looked.scores.tolist()
    cut = float(looked.scores[len(looked) // 2])
    kept = detector.detect(scene, max_detections=20, verify_rescore=2.0, score_threshold=cut)
    assert len(kept) == int((looked.scores >= cut).sum())  # the threshold applies to the new score


def test_calibration_applies_to_its_own_score_kind_only():
    cal = Calibration(a=10.0, b=-5.0, threshold=0.5, verify_rescore=2.0)
    assert cal.applies_to(0.0, 2.0) and not cal.applies_to(0.0, 0.0) and not cal.applies_to(0.5, 2.0)
    assert cal.score_kind == "verify 2" and score_kind_name(0.5, 2.0) == "colour 0.5 + verify 2"
    rivals = Calibration(a=1.0, b=0.0, threshold=0.5, verify_rescore=2.0, verify_rivals=4.0)
    assert rivals.applies_to(0.0, 2.0, 4.0) and not rivals.applies_to(0.0, 2.0) and not cal.applies_to(0.0, 2.0, 4.0)
    assert rivals.score_kind == "verify 2 + rivals 4" and Calibration.from_dict(rivals.to_dict()) == rivals
    assert cal.applies_to(0.0, 0.0, 0.0) is False and Calibration(a=1.0, b=0.0, threshold=0.5).applies_to(0.0, 0.0, 4.0)
    assert Calibration(a=1.0, b=0.0, threshold=0.5, verify_rivals=4.0).verify_rivals == 0  # no second look: none
    assert score_kind(0, 0, 4) == (0.0,) * 6 and score_kind(0.5, 2, 4) == (0.5, 2.0, 4.0, 0.0, 0.0, 0.0)
    # colour in the rivals: part of the kind only with rivals; its margin only with colour
    assert score_kind(0, 2, 8, 1, 1.1) == (0.0, 2.0, 8.0, 1.0, 1.1, 0.0)
    assert score_kind(0, 2, 0, 1, 1.1)[3:5] == (0.0, 0.0)
    coloured = Calibration(a=1.0, b=0.0, threshold=0.5, verify_rescore=2.0, verify_rivals=8.0, verify_colour=1.0,
                           verify_colour_margin=1.1)
    assert coloured.applies_to(0.0, 2.0, 8.0, 1.0, 1.1) and not coloured.applies_to(0.0, 2.0, 8.0)
    assert not coloured.applies_to(0.0, 2.0, 8.0, 1.0, 1.25) and not rivals.applies_to(0.0, 2.0, 8.0, 1.0, 1.1)
    assert rivals.applies_to(0.0, 2.0, 4.0, 0.0, 1.1)  # no colour: its margin does not matter
    assert coloured.score_kind == "verify 2 + rivals 8 + rival colour 1 (margin 1.1)"
    assert Calibration.from_dict(coloured.to_dict()) == coloured
    assert Calibration(a=1.0, b=0.0, threshold=0.5, verify_colour=1.0, verify_colour_margin=1.1).verify_colour == 0
    # the chromatic factor: part of the kind with a second look, with or without rivals
    assert score_kind(0, 2, 8, 1, 1.1, 0.5)[5] == 0.5 and score_kind(0, 2, 0, 0, 1.1, 0.5)[5] == 0.5
    assert score_kind(0, 0, 8, 1, 1.1, 0.5) == (0.0,) * 6  # no second look: no chroma either
    chroma = Calibration(a=1.0, b=0.0, threshold=0.5, verify_rescore=2.0, verify_rivals=8.0, verify_colour=1.0,
                         verify_colour_margin=1.1, verify_chroma=0.5)
    assert chroma.applies_to(0.0, 2.0, 8.0, 1.0, 1.1, 0.5) and not chroma.applies_to(0.0, 2.0, 8.0, 1.0, 1.1)
    assert not coloured.applies_to(0.0, 2.0, 8.0, 1.0, 1.1, 0.5)  # fitted before the chroma: not its scores
    assert chroma.score_kind == "verify 2 + rivals 8 + rival colour 1 (margin 1.1) + chroma 0.5"
    assert Calibration.from_dict(chroma.to_dict()) == chroma
    assert Calibration(a=1.0, b=0.0, threshold=0.5, verify_chroma=0.5).verify_chroma == 0
    bad = chroma.to_dict() | {"verify_chroma": -1}
    with pytest.raises(CalibrationError, match="verify_chroma"):
        Calibration.from_dict(bad)
    back = Calibration.from_dict(cal.to_dict())
    assert back == cal
    old = cal.to_dict()
    del old["verify_rescore"]  # fitted before the second look existed: raw scores
    assert Calibration.from_dict(old).verify_rescore == 0.0


def test_config_and_cli_options():
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="verify_rescore"):
            InferenceConfig(verify_rescore=bad)
    with pytest.raises(ValueError, match="verify_crop"):
        InferenceConfig(verify_crop="disc")
    with pytest.raises(ValueError, match="verify_top"):
        InferenceConfig(verify_top=0)
    with pytest.raises(ValueError, match="reshape_top"):
        InferenceConfig(reshape_top=-1)
    with pytest.raises(ValueError, match="reshape_top"):
        ServiceSettings(reshape_top=-1)
    p = argparse.ArgumentParser()
    add_inference_args(p, image_size_help="")
    assert inference_config(p.parse_args(["--verify-rescore", "0"])).verify_rescore == 0
    assert inference_config(p.parse_args([])).verify_rescore == InferenceConfig().verify_rescore
    with pytest.raises(CliError, match="verify_rescore"):
        inference_config(p.parse_args(["--verify-rescore", "-2"]))
    assert inference_config(p.parse_args(["--reshape-top", "7"])).reshape_top == 7
    assert inference_config(p.parse_args([])).reshape_top == InferenceConfig().reshape_top
    with pytest.raises(CliError, match="reshape_top"):
        inference_config(p.parse_args(["--reshape-top", "-1"]))
    assert inference_config(p.parse_args(["--verify-rivals", "2"])).verify_rivals == 2
    assert inference_config(p.parse_args([])).verify_rivals == InferenceConfig().verify_rivals
    with pytest.raises(CliError, match="verify_rivals"):
        inference_config(p.parse_args(["--verify-rivals", "-1"]))
    with pytest.raises(ValueError, match="verify_rivals"):
        ServiceSettings(verify_rivals=math.nan)
    assert inference_config(p.parse_args(["--verify-chroma", "0"])).verify_chroma == 0
    assert inference_config(p.parse_args([])).verify_chroma == InferenceConfig().verify_chroma == 0.0  # recipes/verify_chroma_real
    for bad in ("-0.1", "1.5", "nan"):
        with pytest.raises(CliError, match="verify_chroma"):
            inference_config(p.parse_args(["--verify-chroma", bad]))
    with pytest.raises(ValueError, match="verify_chroma"):
        ServiceSettings(verify_chroma=2.0)
    assert ServiceSettings(verify_chroma=0.0).verify_chroma == 0.0


def test_looks_stop_early_with_a_cap_or_threshold_and_give_the_same_result(detector, monkeypatch):
    """A look never raises a score, so with a small cap or a threshold the looks stop once no further detection can
    enter the result; that result equals the one of looking at every detection."""
    import os2d.inference.verify as verify

    scene = scene_with(textured_object(seed=3), [(40, 60)], size=(320, 240))
    scene.paste(ring_object(), (200, 60))
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=gen) * torch.tensor([220.0, 110.0])  # 60 boxes of the class's size
    boxes = torch.cat([xy, xy + torch.tensor([96.0, 128.0])], dim=1)
    raw = Detections(boxes, torch.rand(60, generator=gen) - 0.2, torch.zeros(60, dtype=torch.long),
                     box_corners(boxes), ["obj"], (320, 240))
    g, image = detector.gallery, image_to_tensor(scene)
    looked = []
    real = verify.agreement
    monkeypatch.setattr(verify, "agreement", lambda *a, **k: looked.append(len(a[3])) or real(*a, **k))

    def run(**kw) -> Detections:
        looked.clear()
        return verify_detections(detector.model, raw, image, g.kernels, g.view_class, g.view_aspect, 2.0, **kw)

    full = run()
    assert sum(looked) == len(raw)
    for kw in ({"max_detections": 3}, {"score_threshold": float(full.scores[5])},
               {"max_detections": 2, "score_threshold": float(full.scores[1])}):
        expected = apply_score_factors(full, torch.ones(len(full)), **kw)
        out = run(**kw)
        assert out.scores.tolist() == expected.scores.tolist() and out.boxes_xyxy.tolist() == expected.boxes_xyxy.tolist()
        assert sum(looked) < len(raw), (kw, looked)


def test_verify_size_sets_the_crop_side_and_none_is_the_class_size(detector, monkeypatch):
    """``verify_size`` = S resamples each looked-at detection to area S^2 with the class image's aspect ratio
    (96 x 128 here: 3:4); None is ``class_image_size``, bit-identical to giving it explicitly."""
    scene = scene_with(textured_object(seed=3), [(40, 60)], size=(320, 240))
    image, g = image_to_tensor(scene), detector.gallery
    boxes = torch.tensor([[40.0, 60, 136, 188], [180.0, 20, 276, 148]])
    shapes = []
    real = detector.model.extract_features
    monkeypatch.setattr(detector.model, "extract_features",
                        lambda crops, **k: shapes.append(tuple(crops.shape[-2:])) or real(crops, **k))

    def look(size):
        shapes.clear()
        return agreement(detector.model, image, box_corners(boxes), torch.tensor([0, 0]), g.kernels, g.view_class,
                         g.view_aspect, size=size)

    side = detector.model.config.class_image_size
    same = look(None)
    assert shapes == [(round(side / math.sqrt(0.75)), round(side * math.sqrt(0.75)))]
    assert look(side).tolist() == same.tolist()
    small = look(96)
    assert shapes == [(round(96 / math.sqrt(0.75)), round(96 * math.sqrt(0.75)))]  # (111, 83)
    assert float(small[0]) > float(small[1])  # still prefers the object to the background
    with pytest.raises(ValueError, match="verify_size"):
        InferenceConfig(verify_size=8)
    with pytest.raises(ValueError, match="verify_size"):
        ServiceSettings(verify_size=8)
    p = argparse.ArgumentParser()
    add_inference_args(p, image_size_help="")
    assert inference_config(p.parse_args(["--verify-size", "128"])).verify_size == 128
    assert inference_config(p.parse_args([])).verify_size == InferenceConfig().verify_size


def two_labels_on_one_object(model, a, b, *, shown, labels: list[int]):
    """A detector with classes "a" and "b", a 320 x 240 scene with ``shown`` at (40, 60), and two detections of its
    box (scores 0.5, 0.6) with ``labels``: (detector, image tensor, boxes, labels, detections)."""
    det = Detector(model, InferenceConfig(image_size=None, max_detections=None))
    det.add_class("a", a)
    det.add_class("b", b)
    image = image_to_tensor(scene_with(shown, [(40, 60)], size=(320, 240)))
    w, h = shown.size
    boxes = torch.tensor([[40.0, 60, 40 + w, 60 + h]] * 2)
    labels_t = torch.tensor(labels)
    dets = Detections(boxes, torch.tensor([0.5, 0.6]), labels_t, box_corners(boxes), ["a", "b"], (320, 240))
    return det, image, boxes, labels_t, dets


def test_rivals_push_down_a_crop_that_looks_more_like_another_class(toy_model_module):
    """``verify_rivals`` = delta: the factor times (v / max(v, r))^delta, r the crop's best agreement with another
    class. The right class's detection keeps its factor; the wrong one on the same object goes down."""
    a, b = textured_object(seed=3), textured_object(seed=11)  # both 96 x 128
    det, image, boxes, labels, dets = two_labels_on_one_object(toy_model_module, a, b, shown=b, labels=[1, 0])
    g = det.gallery
    rivals = torch.full((2,), -1.0)
    v = agreement(det.model, image, box_corners(boxes), labels, g.kernels, g.view_class, g.view_aspect,
                  rivals=rivals)
    # each detection's rival is the other class: the same crop compared with the other class grid
    torch.testing.assert_close(rivals, v.flip(0), atol=1e-5, rtol=1e-5)
    assert float(v[0]) > float(v[1]) + 0.1  # the crop of b agrees more with b
    plain = verify_detections(det.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, crop="box")
    with_rivals = verify_detections(det.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, crop="box",
                                    rival_power=4.0)
    own = v.clamp(min=0.01)
    factors = own**2 * (own / torch.maximum(own, rivals)) ** 4
    expected = (dets.scores * factors).sort(descending=True)
    torch.testing.assert_close(with_rivals.scores, expected.values)
    assert with_rivals.labels.tolist() == labels[expected.indices].tolist() == [1, 0]  # b first now
    assert float(with_rivals.scores[0]) == pytest.approx(float(plain.scores[plain.labels == 1][0]))  # unchanged
    assert float(with_rivals.scores[1]) < float(plain.scores[plain.labels == 0][0])  # the look-alike goes down
    with pytest.raises(ValueError, match="verify_rivals"):
        InferenceConfig(verify_rivals=-1.0)


def test_crop_cells_and_projection(detector):
    """crop_cells gives the L2-normal class-grid cells of each crop (zeros for a class without views); an identity
    projection leaves the agreement as it is, a projection onto fewer channels changes it and keeps it a cosine."""
    image = image_to_tensor(scene_with(textured_object(seed=3), [(40, 60)], size=(320, 240)))
    g = detector.gallery
    boxes = torch.tensor([[40.0, 60, 136, 188], [180.0, 20, 276, 148], [0.0, 0, 50, 50]])
    labels = torch.tensor([0, 0, 1])  # class 1 has no views
    cells = crop_cells(detector.model, image, box_corners(boxes), labels, g.view_class, g.view_aspect)
    s2, c = g.kernels.shape[1:]
    assert cells.shape == (3, s2, c)
    torch.testing.assert_close(cells[:2].norm(dim=-1), torch.ones(2, s2), atol=1e-4, rtol=0)
    assert float(cells[2].abs().max()) == 0.0
    plain = agreement(detector.model, image, box_corners(boxes[:2]), labels[:2], g.kernels, g.view_class,
                      g.view_aspect)
    same = agreement(detector.model, image, box_corners(boxes[:2]), labels[:2], g.kernels, g.view_class,
                     g.view_aspect, projection=torch.eye(c))
    torch.testing.assert_close(same, plain, atol=1e-5, rtol=0)
    torch.manual_seed(0)
    narrow = torch.randn(c, 4)
    projected = project_cells(cells[:2], narrow)
    assert projected.shape == (2, s2, 4)
    torch.testing.assert_close(projected.norm(dim=-1), torch.ones(2, s2), atol=1e-4, rtol=0)
    v = agreement(detector.model, image, box_corners(boxes[:2]), labels[:2], g.kernels, g.view_class,
                  g.view_aspect, projection=narrow)
    assert bool((v.abs() <= 1 + 1e-5).all()) and not torch.allclose(v, plain, atol=1e-3)


def test_crop_cells_batch_classes_of_one_shape_together(toy_model_module, monkeypatch):
    """Classes whose crops have the same shape share the backbone's batches (fewer calls), and every crop's cells are
    the ones it gets when encoded alone: a crop's features do not depend on the rest of its batch."""
    det = Detector(toy_model_module, InferenceConfig(image_size=None, max_detections=None))
    det.add_class("a", textured_object(seed=3))  # 96 x 128
    det.add_class("b", textured_object(seed=5))  # the same size: the same crop shape
    det.add_class("wide", textured_object(seed=7).resize((160, 64)))  # another shape
    g = det.gallery
    image = image_to_tensor(scene_with(textured_object(seed=3), [(40, 60)], size=(320, 240)))
    torch.manual_seed(0)
    xy = torch.rand(7, 2) * torch.tensor([200.0, 120.0])
    boxes = torch.cat([xy, xy + torch.tensor([100.0, 110.0])], dim=1)
    labels = torch.tensor([0, 1, 2, 1, 0, 2, 1])
    calls = []
    extract = type(det.model).extract_features

    def counted(self, x, **kw):
        calls.append(x.shape[0])
        return extract(self, x, **kw)

    monkeypatch.setattr(type(det.model), "extract_features", counted)
    cells = crop_cells(det.model, image, box_corners(boxes), labels, g.view_class, g.view_aspect)
    assert sorted(calls) == [2, 5]  # classes a and b in one batch, "wide" in another
    for i in range(len(labels)):
        alone = crop_cells(det.model, image, box_corners(boxes[i : i + 1]), labels[i : i + 1], g.view_class,
                           g.view_aspect)
        torch.testing.assert_close(cells[i : i + 1], alone, atol=1e-6, rtol=0)


def test_crops_of_one_shape_go_in_near_equal_batches(detector, monkeypatch):
    """17 crops of one shape run as 9 + 8, not 16 + 1 (a one-crop call costs about as much as four crops in a
    batch); 16 stay one batch."""
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(17, 2, generator=gen) * torch.tensor([200.0, 100.0])
    corners = box_corners(torch.cat([xy, xy + torch.tensor([96.0, 128.0])], dim=1))
    image = image_to_tensor(scene_with(textured_object(seed=3), [(40, 60)], size=(320, 240)))
    g, calls = detector.gallery, []
    extract = type(detector.model).extract_features

    def counted(self, x, **kw):
        calls.append(x.shape[0])
        return extract(self, x, **kw)

    monkeypatch.setattr(type(detector.model), "extract_features", counted)
    labels = torch.zeros(17, dtype=torch.long)
    crop_cells(detector.model, image, corners, labels, g.view_class, g.view_aspect)
    assert calls == [9, 8]
    calls.clear()
    crop_cells(detector.model, image, corners[:16], labels[:16], g.view_class, g.view_aspect)
    assert calls == [16]


def test_colour_in_the_rivals(toy_model_module):
    """``verify_colour`` = g: the rivals compare features times colour agreement ** g on both sides. The rival a
    detection receives is the best max(r_u, 0.01) * s_u^g / s_own^g; a crop labelled with the class whose colours it
    lacks goes down further than with the features alone, the right label keeps its factor, and unknown colours
    (NaN histograms) or g = 0 change nothing. With a margin m the colour ratio is clamped to [1/m, m]."""
    from PIL import Image

    from os2d.inference.colour import colour_similarity
    from os2d.inference.verify import MIN_AGREEMENT, crop_colours

    a = textured_object(seed=3)
    b = Image.merge("RGB", a.split()[::-1])  # the same picture with red and blue swapped: a colour look-alike
    det, image, boxes, labels, dets = two_labels_on_one_object(toy_model_module, a, b, shown=a, labels=[0, 1])
    g = det.gallery
    corners = box_corners(boxes)
    plain_rivals, colour_rivals = torch.full((2,), -1.0), torch.full((2,), -1.0)
    v = agreement(det.model, image, corners, labels, g.kernels, g.view_class, g.view_aspect, rivals=plain_rivals)
    v_c = agreement(det.model, image, corners, labels, g.kernels, g.view_class, g.view_aspect, rivals=colour_rivals,
                    colour=(2.0, g.view_colour, math.inf))
    torch.testing.assert_close(v_c, v)  # the own agreement is the features' alone
    s = colour_similarity(crop_colours(image, corners, labels, g.view_class, g.view_aspect), g.view_colour)  # (2, 2)
    assert float(s[0, 0]) > float(s[0, 1]) + 0.1  # the crop's colours are a's
    other = torch.tensor([1, 0])
    expected = plain_rivals.clamp(min=MIN_AGREEMENT) * (s[[0, 1], other] / s[[0, 1], labels]) ** 2
    torch.testing.assert_close(colour_rivals, expected, atol=1e-5, rtol=1e-5)
    bounded = torch.full((2,), -1.0)  # margin m: the colour ratio clamped to [1/m, m]
    agreement(det.model, image, corners, labels, g.kernels, g.view_class, g.view_aspect, rivals=bounded,
              colour=(2.0, g.view_colour, 1.1))
    ratio = ((s[[0, 1], other] / s[[0, 1], labels]) ** 2).clamp(1 / 1.1, 1.1)
    torch.testing.assert_close(bounded, plain_rivals.clamp(min=MIN_AGREEMENT) * ratio, atol=1e-5, rtol=1e-5)

    run = {"crop": "box", "rival_power": 8.0}
    features = verify_detections(det.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, **run)
    coloured = verify_detections(det.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, **run,
                                 rival_colour=(2.0, g.view_colour, math.inf))
    score = {int(lab): float(sc) for sc, lab in zip(features.scores, features.labels, strict=True)}
    score_c = {int(lab): float(sc) for sc, lab in zip(coloured.scores, coloured.labels, strict=True)}
    assert score_c[1] < score[1]  # the wrong colour: further down
    assert score_c[0] == pytest.approx(score[0])  # the right one: its features already won, colour agrees
    unknown = verify_detections(det.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, **run,
                                rival_colour=(2.0, torch.full_like(g.view_colour, math.nan), math.inf))
    off = verify_detections(det.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, **run,
                            rival_colour=(0.0, g.view_colour, math.inf))
    for same in (unknown, off):
        torch.testing.assert_close(same.scores, features.scores)
        assert same.labels.tolist() == features.labels.tolist()
    with pytest.raises(ValueError, match="verify_colour"):
        InferenceConfig(verify_colour=-1.0)
    with pytest.raises(ValueError, match="verify_colour"):
        InferenceConfig(verify_colour=math.inf)
    for bad in (0.9, math.nan):
        with pytest.raises(ValueError, match="verify_colour_margin"):
            InferenceConfig(verify_colour_margin=bad)
        with pytest.raises(ValueError, match="verify_colour_margin"):
            ServiceSettings(verify_colour_margin=bad)
    with pytest.raises(ValueError, match="verify_colour"):
        ServiceSettings(verify_colour=-1.0)
    assert (InferenceConfig().verify_colour, InferenceConfig().verify_colour_margin) == (1.0, 1.1)  # the rule's arm
    p = argparse.ArgumentParser()
    add_inference_args(p, image_size_help="")
    cfg = inference_config(p.parse_args(["--verify-colour", "0", "--verify-colour-margin", "inf"]))
    assert (cfg.verify_colour, cfg.verify_colour_margin) == (0.0, math.inf)
    cfg = inference_config(p.parse_args([]))
    assert (cfg.verify_colour, cfg.verify_colour_margin) == (1.0, 1.1)


def test_chromatic_factor_demotes_the_wrong_colours_only(toy_model_module, monkeypatch):
    """``verify_chroma`` = t: the factor is also multiplied by min(1, s_c / t), s_c the crop's agreement with its own
    class over the coloured histogram bins alone (``chroma_factors``). A detection on a colour look-alike goes down by
    exactly that factor, the right colour keeps its score, t = 0 changes nothing, and the detector passes its config's
    t and the gallery's colours."""
    from PIL import Image

    from os2d.inference.verify import chroma_factors, crop_colours

    a = textured_object(seed=3)
    b = Image.merge("RGB", a.split()[::-1])  # red and blue swapped: same shapes, other colours
    det, image, boxes, labels, dets = two_labels_on_one_object(toy_model_module, a, b, shown=b, labels=[0, 1])
    g = det.gallery
    run = {"crop": "box"}
    plain = verify_detections(det.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, **run)
    chroma = verify_detections(det.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, **run,
                               chroma=(0.9, g.view_colour))
    f = chroma_factors(crop_colours(image, box_corners(boxes), labels, g.view_class, g.view_aspect), labels,
                       g.view_colour, g.view_class, 0.9)
    assert float(f[0]) < 0.9 and float(f[1]) == 1.0  # a's colours are not on the object; b's are
    before = {int(lab): float(sc) for sc, lab in zip(plain.scores, plain.labels, strict=True)}
    after = {int(lab): float(sc) for sc, lab in zip(chroma.scores, chroma.labels, strict=True)}
    assert after[0] == pytest.approx(before[0] * float(f[0]), rel=1e-5)
    assert after[1] == pytest.approx(before[1])
    off = verify_detections(det.model, dets, image, g.kernels, g.view_class, g.view_aspect, 2.0, **run,
                            chroma=(0.0, g.view_colour))
    torch.testing.assert_close(off.scores, plain.scores)

    seen = {}
    real = verify_detections

    def spy(*args, **kwargs):
        seen["chroma"] = kwargs["chroma"]
        return real(*args, **kwargs)

    monkeypatch.setattr("os2d.detector.verify_detections", spy)
    det.detect(scene_with(b, [(40, 60)], size=(320, 240)), verify_chroma=0.7)
    assert seen["chroma"][0] == 0.7 and seen["chroma"][1] is g.view_colour
