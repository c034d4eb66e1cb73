"""``heads_precision="int8-exact"``: the head at a few windows equals the dense head there (scores, boxes, corners,
borders and class aspect included), and a detector with int8 search + float32 windows reports exactly the float32
detections on a real photo."""

from __future__ import annotations

import pytest
import torch
from helpers import scene_with, textured_object, trained_like_transform_net

from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.inference import exact_values
from os2d.inference.decode import LevelCandidates
from os2d.inference.exact_values import _first_of_each, exact_detections, heads_precision_for
from os2d.model.correlation import class_kernels, resize_class_features
from os2d.model.head import os2d_head
from os2d.model.head_windows import head_windows
from os2d.model.int8_transform import int8_supported
from os2d.model.transform_net import TransformNet

needs_int8 = pytest.mark.skipif(not int8_supported(), reason="no oneDNN int8 convolution on this CPU / build")


@pytest.mark.parametrize("invert", [True, False])
@pytest.mark.parametrize("radius", [0, 1, 2])
@pytest.mark.parametrize("power", [0.5, 1.0])  # the shipped model's anchors (0.5) and the class's full aspect
def test_head_windows_equal_the_dense_head(invert, radius, power):
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(1, 16, 20, 23, generator=g)
    kernels = class_kernels(torch.stack([resize_class_features(torch.randn(16, 9, 12, generator=g))
                                         for _ in range(3)]))
    aspect = torch.tensor([0.5, 1.0, 2.0])
    net = trained_like_transform_net(0, linear_std=0.05)  # alignments that vary
    views = torch.tensor([0, 1, 2, 2, 1, 0])
    ys = torch.tensor([0, 5, 19, 10, 3, 19])  # corners and edges: windows reach outside the map
    xs = torch.tensor([0, 7, 22, 11, 21, 0])
    with torch.no_grad():
        dense = os2d_head(feats, kernels, net, invert_transform=invert, aspect=aspect, aspect_power=power)
        r = 2 * radius + 1
        out = head_windows(feats, kernels, net, views, ys - radius, xs - radius, (r, r), invert_transform=invert,
                           aspect=aspect, aspect_power=power)
    assert out.scores.shape == (6, r, r) and out.boxes_xyxy.shape == (6, r, r, 4)
    assert out.corners_xy.shape == (6, r, r, 4, 2)
    assert bool(out.inside[:, radius, radius].all()) and bool(out.inside.all()) == (radius == 0)
    widths = dense.boxes_xyxy[..., 2] - dense.boxes_xyxy[..., 0]
    assert float(widths.std()) > 10  # the alignments vary, so equal boxes mean something
    for p in range(len(views)):
        m = out.inside[p]
        yy, xx = out.ys[p][m], out.xs[p][m]
        v = int(views[p])
        torch.testing.assert_close(out.scores[p][m], dense.scores[0, v, yy, xx], rtol=0, atol=1e-6)
        torch.testing.assert_close(out.boxes_xyxy[p][m], dense.boxes_xyxy[0, v, yy, xx], rtol=0, atol=1e-3)
        torch.testing.assert_close(out.corners_xy[p][m], dense.corners_xy[0, v, yy, xx], rtol=0, atol=1e-3)


def test_head_windows_of_a_rectangle_reaching_outside():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(1, 16, 12, 14, generator=g)
    kernels = class_kernels(resize_class_features(torch.randn(16, 8, 8, generator=g))[None])
    net = trained_like_transform_net(1, linear_std=0.05)
    with torch.no_grad():
        dense = os2d_head(feats, kernels, net, invert_transform=True)
        out = head_windows(feats, kernels, net, torch.tensor([0, 0]), torch.tensor([-2, 9]), torch.tensor([3, -1]),
                           (5, 13), invert_transform=True)
    assert out.scores.shape == (2, 5, 13)
    for p in range(2):
        m = out.inside[p]
        torch.testing.assert_close(out.scores[p][m], dense.scores[0, 0, out.ys[p][m], out.xs[p][m]], rtol=0,
                                   atol=1e-6)
        torch.testing.assert_close(out.boxes_xyxy[p][m], dense.boxes_xyxy[0, 0, out.ys[p][m], out.xs[p][m]],
                                   rtol=0, atol=1e-3)


def test_forward_windows_needs_eval_batchnorm():
    net = TransformNet(6).train()
    with pytest.raises(RuntimeError, match="eval"):
        net.forward_windows(torch.zeros(1, 225, 15, 15), torch.zeros(1, dtype=torch.long),
                            torch.zeros(1, dtype=torch.long), (4, 4))
    assert net.halo() == 7


def test_first_of_each():
    keys, first = _first_of_each(torch.tensor([5, 3, 5, 7, 3]))
    assert keys.tolist() == [3, 5, 7] and first.tolist() == [1, 0, 3]


def test_exact_values_need_level_candidates(toy_model):
    bare = LevelCandidates(boxes_xyxy=torch.tensor([[0.0, 0, 10, 10]]), scores=torch.tensor([0.5]),
                           views=torch.tensor([0]), corners_xy=torch.zeros(1, 4, 2),
                           exact=torch.tensor([False]))
    with pytest.raises(ValueError, match="level_candidates"):
        exact_detections(toy_model, [bare], torch.zeros(1, 225, toy_model.feature_channels), torch.tensor([0]),
                         ["a"], (10, 10), InferenceConfig())


def _detect(precision: str, scene, obj, **changes):
    changes = {"max_detections": 20} | changes
    det = Detector.from_weights("default", image_size=None, heads_precision=precision, verify_rescore=0.0,
                                **changes)
    det.add_class("obj", obj)
    return det.detect(scene)


@needs_int8
def test_int8_exact_reports_the_float32_detections(monkeypatch):
    monkeypatch.setattr(exact_values, "MIN_LOCATIONS_PER_DETECTION", 0)  # this small scene would run fp32
    obj = textured_object((96, 128))
    scene = scene_with(obj, [(200, 120), (520, 330)])
    exact, fast = _detect("fp32", scene, obj), _detect("int8-exact", scene, obj)
    assert len(fast.scores) == len(exact.scores) >= 3
    # every reported value is the float32 heads' (up to summation order), in the same order
    torch.testing.assert_close(fast.scores, exact.scores, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.boxes_xyxy, exact.boxes_xyxy, rtol=0, atol=1e-2)
    torch.testing.assert_close(fast.corners_xy, exact.corners_xy, rtol=0, atol=1e-2)
    top3 = _detect("int8-exact", scene, obj, exact_top=3)  # only the 3 best are exact
    torch.testing.assert_close(top3.scores[:3], exact.scores[:3], rtol=0, atol=1e-5)
    # fewer reported than candidates: the rounds run on the pool of candidates near the report's last score
    capped = _detect("int8-exact", scene, obj, max_detections=2)
    torch.testing.assert_close(capped.scores, exact.scores[:2], rtol=0, atol=1e-5)
    torch.testing.assert_close(capped.boxes_xyxy, exact.boxes_xyxy[:2], rtol=0, atol=1e-2)


def test_int8_search_only_where_it_saves_work():
    """int8-exact runs the float32 heads where its windows would cost more than the int8 search saves."""
    per = exact_values.MIN_LOCATIONS_PER_DETECTION
    cfg = InferenceConfig(heads_precision="int8-exact", max_detections=100)
    assert heads_precision_for(cfg, per * 100) == "int8-exact"
    assert heads_precision_for(cfg, per * 100 - 1) == "fp32"
    assert heads_precision_for(InferenceConfig(heads_precision="int8-exact", exact_top=10), per * 10) == "int8-exact"
    assert heads_precision_for(InferenceConfig(max_detections=None), 10**9) == "fp32"  # everything is reported
    assert heads_precision_for(InferenceConfig(heads_precision="int8"), 0) == "int8"  # only int8-exact adapts


def test_int8_exact_option_and_config_checks():
    import argparse

    from os2d.apps.cli.common import add_inference_args, inference_config

    p = argparse.ArgumentParser()
    add_inference_args(p, image_size_help="")
    assert inference_config(p.parse_args(["--heads-precision", "int8-exact"])).heads_precision == "int8-exact"
    with pytest.raises(ValueError, match="exact_top"):
        InferenceConfig(exact_top=0)
