"""Baselines: each finds exact pastes of its class image; the sliding-window maths matches its definition."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from helpers import scene_with, textured_object
from PIL import Image

from os2d.config import InferenceConfig
from os2d.evaluation.baselines import build_method, require_cv2
from os2d.evaluation.baselines.sliding import IdentityTransform, SlidingWindowAR, local_maxima, sliding_square
from os2d.evaluation.baselines.views import ClassViews, box_corners, view_corner_order
from os2d.evaluation.detector_method import DetectorMethod
from os2d.evaluation.metrics import evaluate_detections
from os2d.io import ImageError, image_to_tensor, resize_to_area
from os2d.model.correlation import l2_normalize
from os2d.model.transform_net import TransformNet
from os2d.ops import box_iou

OBJ_SIZE = (96, 128)
POSITIONS = [(60, 40), (300, 180)]
GT = np.array([[x, y, x + OBJ_SIZE[0], y + OBJ_SIZE[1]] for x, y in POSITIONS], np.float32)
OBJ_SIDE = math.sqrt(OBJ_SIZE[0] * OBJ_SIZE[1])  # 110.9 px


@pytest.fixture(scope="module")
def obj():
    return textured_object(OBJ_SIZE, seed=3)


@pytest.fixture(scope="module")
def scene(obj):
    return scene_with(obj, POSITIONS, size=(480, 352))


def _ap(dets) -> float:
    gt = [type("G", (), {"boxes_xyxy": GT, "labels": np.zeros(2, np.int64), "difficult": np.zeros(2, bool)})()]
    return evaluate_detections([dets], gt, 1).map


def _best_iou(box, gt=GT) -> float:
    return float(box_iou(torch.as_tensor(box).reshape(1, 4), torch.from_numpy(gt)).max())


def test_template_finds_exact_pastes(obj, scene):
    config = InferenceConfig(image_size=None, scales=(1.0,))
    m = build_method("template", config, class_image_size=int(round(OBJ_SIDE)))
    m.add_class("obj", [obj])
    dets = m.detect(scene)
    assert _ap(dets) == pytest.approx(1.0)
    assert dets.scores[0] > 0.95 and dets.scores[1] > 0.95
    assert min(_best_iou(b) for b in dets.boxes_xyxy[:2].numpy()) > 0.9
    assert dets.image_size == scene.size and dets.corners_xy.shape == (len(dets), 4, 2)


def test_template_scales_follow_pyramid():
    from os2d.evaluation.baselines.template import TemplateMatcher

    m = TemplateMatcher(InferenceConfig(scales=(0.5, 1.0, 2.0)))
    assert m.object_scales == (2.0, 1.0, 0.5)  # class image matched at 480, 240, 120 px of the base level
    with pytest.raises(ValueError, match="object_scales"):
        TemplateMatcher(InferenceConfig(), object_scales=[0.0])


def test_sift_finds_both_instances(obj, scene):
    m = build_method("sift", InferenceConfig(image_size=None))
    m.add_class("obj", [obj])
    dets = m.detect(scene)
    assert _ap(dets) == pytest.approx(1.0)
    assert len(dets) == 2  # two homographies, nothing else passes the checks on noise
    assert min(_best_iou(b) for b in dets.boxes_xyxy.numpy()) > 0.9
    assert float(dets.scores.min()) >= 6  # score = RANSAC inliers
    # corners follow the class outline: top-left corner near the paste's top-left
    tl = dets.corners_xy[:, 0].numpy()
    for corner in tl:
        assert min(np.abs(corner - np.array(p)).max() for p in POSITIONS) < 4


def test_sift_no_match_on_other_object(scene):
    m = build_method("sift", InferenceConfig(image_size=None))
    m.add_class("other", [textured_object((100, 100), seed=11)])
    assert len(m.detect(scene)) == 0


def test_quad_is_sane():
    from os2d.evaluation.baselines.sift import quad_is_sane

    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    assert quad_is_sane(square, min_area=1, max_area=1000)
    assert not quad_is_sane(square[[0, 2, 1, 3]], min_area=1, max_area=1000)  # self-intersecting
    assert not quad_is_sane(square, min_area=200, max_area=1000)
    needle = np.array([[0, 0], [100, 100], [101, 102], [1, 2]], float)  # thin diagonal sliver
    assert not quad_is_sane(needle, min_area=1, max_area=1e6)


def test_local_peaks():
    from os2d.evaluation.baselines.template import local_peaks

    m = np.zeros((20, 30), np.float32)
    m[5, 5], m[5, 6], m[15, 25] = 0.9, 0.8, 0.7
    ys, xs, sc = local_peaks(m, radius=2, top_k=2)
    assert list(zip(ys.tolist(), xs.tolist(), strict=True)) == [(5, 5), (15, 25)]
    assert sc.tolist() == pytest.approx([0.9, 0.7])


def test_identity_transform_equals_reset_transform_net():
    torch.manual_seed(0)
    net = TransformNet(6, 225)
    for p in net.parameters():
        p.data.normal_()
    net.reset_to_identity()
    corr = torch.rand(3, 225, 5, 7)
    assert torch.equal(net.eval()(corr), IdentityTransform(6)(corr))
    assert torch.equal(IdentityTransform(4)(corr)[0, :, 0, 0], torch.tensor([1.0, 0.0, 1.0, 0.0]))


def test_sliding_square_is_os2d_with_identity_transform(toy_model, obj, scene):
    # raw scores: the baseline never takes the second look (os2d's addition)
    config = InferenceConfig(image_size=None, scales=(240 / OBJ_SIDE,), max_detections=20, verify_rescore=0.0)
    toy_model.transform_net.reset_to_identity()  # hidden layers stay random: the output is still the identity
    ref = build_method("os2d", config, model=toy_model)
    sq = sliding_square(toy_model, config)
    assert isinstance(ref, DetectorMethod) and isinstance(sq, DetectorMethod)  # both go through os2d.Detector
    assert sq.detector.model.backbone is toy_model.backbone  # the same features, not a copy
    for m in (ref, sq):
        m.add_class("obj", [obj])
    a, b = ref.detect(scene), sq.detect(scene)
    torch.testing.assert_close(a.scores, b.scores)
    torch.testing.assert_close(a.boxes_xyxy, b.boxes_xyxy)
    # square 240 px windows at level scale 240/111: boxes are ~111 px squares; the top one hits a paste
    w = a.boxes_xyxy[0, 2] - a.boxes_xyxy[0, 0]
    assert float(w) == pytest.approx(OBJ_SIDE, rel=0.02)
    assert _best_iou(a.boxes_xyxy[0].numpy()) > 0.5


def test_sliding_ar_scores_are_window_mean_cosines(toy_model, obj):
    config = InferenceConfig(image_size=None)
    m = SlidingWindowAR(toy_model, config)
    m.add_class("obj", [obj])
    (c, h, w), = [tuple(x.shape) for x in m._weights]
    assert (w, h) == (13, 18)  # 96x128 resized to area 240^2 = 207x277 px -> ceil(/16) cells
    level = torch.rand(3, 160, 224)
    (scores, boxes), = m.level_scores(level)
    with torch.no_grad():
        f = l2_normalize(toy_model.extract_features(level[None])[0], dim=0)  # (C, 10, 14)
        g = l2_normalize(toy_model.extract_features(image_to_tensor(resize_to_area(obj, 240))[None],
                                                    align_to_anchors=False)[0], dim=0)
    ph, pw = h // 2, w // 2
    for i, j in [(0, 0), (ph, pw), (3, 5), (scores.shape[0] - 1, scores.shape[1] - 1)]:
        top, left = i - ph, j - pw
        total = 0.0
        for p in range(h):
            for q in range(w):
                r, s = top + p, left + q
                if 0 <= r < f.shape[1] and 0 <= s < f.shape[2]:
                    total += float((f[:, r, s] * g[:, p, q]).sum())
        assert float(scores[i, j]) == pytest.approx(total / (h * w), abs=1e-5)
        cx, cy = (left + w / 2) * 16, (top + h / 2) * 16
        assert boxes[i, j].tolist() == pytest.approx([cx - 103.5, cy - 138.5, cx + 103.5, cy + 138.5])


def test_sliding_ar_finds_pastes(toy_model, obj, scene):
    config = InferenceConfig(image_size=None, scales=(240 / OBJ_SIDE,), max_detections=20)
    m = build_method("sliding-ar", config, model=toy_model)
    m.add_class("obj", [obj])
    dets = m.detect(scene)
    assert [_best_iou(b) > 0.5 for b in dets.boxes_xyxy[:2].numpy()] == [True, True]
    assert _ap(dets) > 0.9
    # the box keeps the class image's aspect ratio (3:4)
    bw, bh = (dets.boxes_xyxy[0, 2:] - dets.boxes_xyxy[0, :2]).tolist()
    assert bw / bh == pytest.approx(0.75, rel=0.03)
    # keeping only local maxima before NMS does not change the top detections
    every = SlidingWindowAR(toy_model, config, peak_window=1)
    every.add_class("obj", [obj])
    torch.testing.assert_close(every.detect(scene).boxes_xyxy[:2], dets.boxes_xyxy[:2])


def test_local_maxima():
    s = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0], [3.0, 0.0, 0.0, 0.0]])
    assert local_maxima(s, 3).nonzero().tolist() == [[0, 1], [1, 3], [2, 0]]
    assert local_maxima(s, 1).all()


def test_view_corner_order_matches_pil_transpose():
    from os2d.gallery import VIEW_OPS

    w, h = 5, 3
    corners = {0: (0, 0), 1: (w - 1, 0), 2: (0, h - 1), 3: (w - 1, h - 1)}  # class tl, tr, bl, br
    for view, op in VIEW_OPS.items():
        arr = np.zeros((h, w), np.uint8)
        for k, (x, y) in corners.items():
            arr[y, x] = 10 + k
        out = np.asarray(Image.fromarray(arr).transpose(op)) if op is not None else arr
        vh, vw = out.shape
        view_corners = [(0, 0), (vw - 1, 0), (0, vh - 1), (vw - 1, vh - 1)]
        order = view_corner_order(view)
        for k in range(4):
            x, y = view_corners[order[k]]
            assert out[y, x] == 10 + k, (view, k)
    c = box_corners(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), view_corner_order("original"))
    assert c[0].tolist() == [[1, 2], [3, 2], [1, 4], [3, 4]]


def test_rotated_views_are_registered(toy_model, obj):
    config = InferenceConfig(image_size=None, rotations=True, horizontal_flip=True)
    m = SlidingWindowAR(toy_model, config)
    m.add_class("obj", [obj])
    assert m.views.view_class == [0] * 5 and len(m._weights) == 5
    assert {tuple(w.shape[-2:]) for w in m._weights} == {(18, 13), (13, 18)}


def test_build_method_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown method"):
        build_method("nope", InferenceConfig())
    with pytest.raises(ValueError, match="needs a model"):
        build_method("sliding-ar", InferenceConfig())
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r"pip install 'os2d\[train\]'"):
        require_cv2()


def test_os2d_method_is_the_detector(toy_model, obj, scene):
    from os2d.detector import Detector

    config = InferenceConfig(image_size=None, scales=(240 / OBJ_SIDE,), max_detections=20, rotations=True)
    method = build_method("os2d", config, model=toy_model)
    method.add_class("obj", [obj])
    det = Detector(toy_model, config)
    det.add_class("obj", obj)
    a, b = method.detect(scene), det.detect(scene)
    assert len(a) == 20 and method.class_names == ["obj"]
    for x, y in ((a.boxes_xyxy, b.boxes_xyxy), (a.scores, b.scores), (a.corners_xy, b.corners_xy)):
        assert torch.equal(x, y)
    assert method.describe() == {"method": "os2d", "backbone": toy_model.config.backbone,
                                 "transform": "TransformNet"}


def test_class_views_bookkeeping(obj):
    views = ClassViews()
    out = views.add("a", [obj], rotations=True)
    assert [v.size for v in out] == [obj.size, obj.size[::-1], obj.size, obj.size[::-1]]
    views.add("b", [obj, obj], horizontal_flip=True)
    views.add("a", [obj])  # more views of a known class
    assert views.class_names == ["a", "b"] and len(views) == 9
    assert views.view_class == [0, 0, 0, 0, 1, 1, 1, 1, 0]
    assert views.corner_orders[1] == view_corner_order("rot90") and views.corner_orders[5] == [1, 0, 3, 2]
    assert views.view_class_tensor().dtype == torch.long
    with pytest.raises(ValueError, match="no class image"):
        views.add("c", [])
    for m in (build_method("sift", InferenceConfig()), build_method("template", InferenceConfig())):
        with pytest.raises(ImageError, match="uniform"):
            m.add_class("flat", [Image.new("RGB", (64, 64), (90, 90, 90))])
        assert m.class_names == []
