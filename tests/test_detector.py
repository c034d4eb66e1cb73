"""The user-facing Detector on generated images: exact geometry with the bundled ImageNet weights (identity
TransformNet), and the shipped default model on a pasted object."""

from __future__ import annotations

import pytest
import torch
from helpers import scene_with, textured_object

from os2d.detector import Detector
from os2d.io import ImageError


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.from_weights("efficientnet_lite0-imagenet", image_size=None, max_detections=20)


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_finds_pasted_object_and_shifted_object_gives_shifted_box(detector):
    obj = textured_object((240, 240))  # the size of the anchors: the best window is unambiguous
    d = Detector(detector.model, detector.config)
    d.add_class("thing", obj)
    a = d.detect(scene_with(obj, [(96, 48)], size=(560, 400)))
    b = d.detect(scene_with(obj, [(96 + 64, 48 + 32)], size=(560, 400)))
    assert a.label_names[0] == "thing"
    # exact: EfficientNet inputs are padded so that feature centres meet the anchor centres
    torch.testing.assert_close(a.boxes_xyxy[0], torch.tensor([96.0, 48, 336, 288]), rtol=0, atol=1.0)
    shift = b.boxes_xyxy[0] - a.boxes_xyxy[0]
    torch.testing.assert_close(shift, torch.tensor([64.0, 32.0, 64.0, 32.0]), rtol=0, atol=1.0)
    assert abs(float(a.scores[0] - b.scores[0])) < 0.02


@pytest.mark.parametrize("size", [(240, 240), (300, 180)])
def test_shipped_default_model_finds_a_pasted_object(size):
    d = Detector.from_weights("default", image_size=None, max_detections=20)
    obj = textured_object(size)
    d.add_class("thing", obj)
    dets = d.detect(scene_with(obj, [(96, 48)], size=(560, 400)))
    w, h = obj.size
    assert dets.label_names[0] == "thing"
    assert _iou(dets.boxes_xyxy[0].tolist(), [96, 48, 96 + w, 48 + h]) > 0.7


def test_empty_gallery_gives_no_detections(detector):
    d = Detector(detector.model, detector.config)
    out = d.detect(scene_with(textured_object(), [(10, 10)]))
    assert len(out) == 0 and out.boxes_xyxy.shape == (0, 4) and out.image_size == (480, 352)


def test_detections_are_in_original_pixels_and_sorted(detector):
    obj = textured_object((160, 192), seed=3)
    d = Detector(detector.model, detector.config)
    d.add_class("thing", obj)
    scene = scene_with(obj, [(200, 100)], size=(640, 480))
    # the object (~175 px) matches the 240 px anchors at level 1.4 of a pyramid on a half-size input
    out = d.detect(scene, image_size=277, scales=(1.0, 2.0, 2.8))
    assert (out.scores[:-1] >= out.scores[1:]).all()
    assert out.boxes_xyxy[:, 0].min() >= 0 and out.boxes_xyxy[:, 2].max() <= 640
    assert _iou(out.boxes_xyxy[0].tolist(), [200, 100, 360, 292]) > 0.5


def test_views_and_few_shot_share_one_label(detector):
    d = Detector(detector.model, detector.config)
    d.add_class("a", [textured_object(seed=1), textured_object(seed=2)], rotations=True, horizontal_flip=True)
    d.add_class("b", textured_object(seed=4))
    assert d.classes == ["a", "b"]
    assert d.gallery.num_views == 2 * 5 + 1
    out = d.detect(scene_with(textured_object(seed=2), [(50, 50)]))
    assert set(out.labels.tolist()) <= {0, 1}
    d.remove_class("a")
    assert d.classes == ["b"] and d.gallery.view_class.tolist() == [0]


def test_gallery_save_load_round_trip(detector, tmp_path):
    d = Detector(detector.model, detector.config)
    d.add_class("thing", textured_object())
    d.save_gallery(tmp_path / "g.pt")
    e = Detector(detector.model, detector.config)
    e.load_gallery(tmp_path / "g.pt")
    scene = scene_with(textured_object(), [(64, 64)])
    a, b = d.detect(scene), e.detect(scene)
    torch.testing.assert_close(a.scores, b.scores)
    assert e.classes == ["thing"]


def test_degenerate_class_image_is_refused(detector):
    from PIL import Image

    d = Detector(detector.model, detector.config)
    with pytest.raises(ImageError):
        d.add_class("blank", Image.new("RGB", (100, 100), (255, 255, 255)))
    with pytest.raises(ImageError):
        d.add_class("tiny", Image.new("RGB", (3, 50)))
    with pytest.raises(ValueError):
        d.add_class("", textured_object())
    assert d.classes == []


def test_view_options_belong_to_class_registration(detector):
    d = Detector.from_weights("efficientnet_lite0-imagenet", image_size=None, rotations=True)
    d.add_class("thing", textured_object())
    assert d.gallery.view_names == ["original", "rot90", "rot180", "rot270"]
    with pytest.raises(ValueError, match="when classes are added"):
        d.detect(scene_with(textured_object(), [(10, 10)]), rotations=False)


def test_gallery_is_replaced_through_the_detector_and_checked(detector):
    from os2d.gallery import ClassGallery

    d = Detector(detector.model, detector.config)
    d.add_class("a", textured_object(seed=1))
    d.add_class("b", textured_object(seed=4))
    before = d.gallery
    d.remove_class("a")  # a new gallery is swapped in: a detection holding the old one is unaffected
    assert before.class_names == ["a", "b"] and d.gallery.class_names == ["b"] and d.gallery is not before
    with pytest.raises(AttributeError):
        d.gallery = before  # read-only: set_gallery checks what comes in
    d.set_gallery(before)
    assert d.classes == ["a", "b"]
    foreign = ClassGallery.from_payload(before.to_payload() | {"model_id": "0123456789abcdef"})
    with pytest.raises(ValueError, match="computed by another model"):
        d.set_gallery(foreign)
    with pytest.raises(ValueError, match="do not fit this model"):
        d.set_gallery(ClassGallery(["x"], torch.zeros(1, 225, 7), torch.zeros(1, dtype=torch.long), ["original"]))


def test_detect_with_a_subset_gallery_equals_the_full_run_of_that_class(detector):
    d = Detector(detector.model, detector.config)
    d.add_class("a", textured_object(seed=1))
    d.add_class("b", textured_object(seed=2), rotations=True)
    scene = scene_with(textured_object(seed=2), [(50, 50)])
    # the shape search looks at the image's best detections, which depend on the other classes: boxes only without it;
    # the second look's rivals compare each crop with the other classes of the gallery: scores only without them
    full = d.detect(scene, max_detections=None, reshape_top=0, verify_rivals=0)
    only_b = d.detect(scene, gallery=d.gallery.subset(["b"]), max_detections=None, reshape_top=0, verify_rivals=0)
    expected = full.filter(full.labels == 1)
    assert only_b.class_names == ["b"] and len(only_b) == len(expected) > 0
    torch.testing.assert_close(only_b.scores, expected.scores)
    torch.testing.assert_close(only_b.boxes_xyxy, expected.boxes_xyxy)
    shaped = d.detect(scene, gallery=d.gallery.subset(["b"]), max_detections=None, verify_rivals=0)  # the same scores
    torch.testing.assert_close(shaped.scores, expected.scores)
    with pytest.raises(KeyError, match="'c'"):
        d.gallery.subset(["c"])


def test_gallery_payload_round_trip_and_bad_payloads(detector):
    from os2d.gallery import ClassGallery

    d = Detector(detector.model, detector.config)
    d.add_class("a", [textured_object(seed=1), textured_object(seed=3)], horizontal_flip=True)
    g = ClassGallery.from_payload(d.gallery.to_payload())
    assert (g.class_names, g.view_names, g.model_id) == (["a"], ["original", "hflip"] * 2, d.gallery.model_id)
    assert torch.equal(g.kernels, d.gallery.kernels) and torch.equal(g.view_class, d.gallery.view_class)
    assert ClassGallery.from_payload(ClassGallery().to_payload()).kernels is None
    with pytest.raises(ValueError, match="cache.pt is not an os2d gallery"):
        ClassGallery.from_payload({"format": "x"}, source="cache.pt")
    with pytest.raises(ValueError, match="malformed"):
        ClassGallery.from_payload({"format": "os2d-gallery", "version": 1}, source="cache.pt")
