"""Anchors with the class image's aspect ratio (``ModelConfig.anchor_aspect_power``): the grid maths, the head's
boxes, the gallery that carries the ratios (files, old files), detection of a wide object, export and training."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import scene_with, textured_object

from os2d import Detector
from os2d.config import InferenceConfig, ModelConfig
from os2d.evaluation.baselines.sliding import IdentityTransform
from os2d.gallery import ClassGallery
from os2d.model.grids import stretch_to_aspect
from os2d.model.head import os2d_head
from os2d.model.os2d import Os2dModel
from os2d.weights import load_model, model_fingerprint


def with_power(model: Os2dModel, power: float) -> Os2dModel:
    """The same modules with another ``anchor_aspect_power``."""
    out = Os2dModel(model.backbone, model.transform_net, dataclasses.replace(model.config, anchor_aspect_power=power))
    out.calibration = model.calibration
    return out.eval()


def test_stretch_keeps_the_area_and_takes_the_ratio():
    theta = torch.tensor([[1.0, 0.2, 0.1], [0.0, 1.0, -0.3]]).expand(2, 3, 4, 2, 3)  # (N, H, W, 2, 3)
    out = stretch_to_aspect(theta, torch.tensor([4.0, 0.25]), 1.0)
    assert torch.allclose(out[0, 0, 0], torch.tensor([[2.0, 0.4, 0.2], [0.0, 0.5, -0.15]]))
    assert torch.allclose(out[1, 0, 0], torch.tensor([[0.5, 0.1, 0.05], [0.0, 2.0, -0.6]]))
    half = stretch_to_aspect(theta, torch.tensor([16.0, 1.0]), 0.5)  # clamped to 4, then 4^(1/4)
    assert torch.allclose(half[0, 0, 0, 0, 0], torch.tensor(2 ** 0.5))
    assert torch.equal(half[1], theta[1])
    assert stretch_to_aspect(theta, torch.tensor([4.0, 2.0]), 0.0) is theta


def test_identity_head_boxes_take_the_class_shape(toy_model):
    feats = torch.rand(2, toy_model.feature_channels, 6, 7)
    kernels = torch.nn.functional.normalize(torch.rand(3, 15 * 15, toy_model.feature_channels), dim=-1)
    aspect = torch.tensor([1.0, 4.0, 0.5])
    kw = dict(invert_transform=True, stride=16.0, anchor_size=240.0)
    square = os2d_head(feats, kernels, IdentityTransform(), **kw)
    stretched = os2d_head(feats, kernels, IdentityTransform(), aspect=aspect, aspect_power=1.0, class_chunk=2, **kw)
    w = stretched.boxes_xyxy[..., 2] - stretched.boxes_xyxy[..., 0]
    h = stretched.boxes_xyxy[..., 3] - stretched.boxes_xyxy[..., 1]
    for k, (ew, eh) in enumerate([(240, 240), (480, 120), (240 / 2**0.5, 240 * 2**0.5)]):
        assert torch.allclose(w[:, k], torch.tensor(float(ew))) and torch.allclose(h[:, k], torch.tensor(float(eh)))
    # same centres; the square class (ratio 1) is unchanged, scores included
    centre = lambda b: (b[..., :2] + b[..., 2:]) / 2  # noqa: E731
    assert torch.allclose(centre(stretched.boxes_xyxy), centre(square.boxes_xyxy))
    assert torch.equal(stretched.boxes_xyxy[:, 0], square.boxes_xyxy[:, 0])
    assert torch.allclose(stretched.scores[:, 0], square.scores[:, 0])
    with pytest.raises(ValueError, match="aspect must have shape"):
        os2d_head(feats, kernels, IdentityTransform(), aspect=aspect[:2], aspect_power=1.0, **kw)


def test_the_gallery_keeps_the_ratios_in_memory_and_in_files(tmp_path):
    model = load_model("default")
    det = Detector(model)
    wide, tall = textured_object((200, 50), seed=1), textured_object((60, 120), seed=2)
    det.add_class("wide", wide, rotations=True)
    det.add_class("tall", tall, negatives=[wide])
    g = det.gallery
    assert torch.allclose(g.view_aspect, torch.tensor([4.0, 0.25, 4.0, 0.25, 0.5]))  # rotations swap w and h
    assert torch.allclose(g.negative_aspect, torch.tensor([4.0]))
    g.save(tmp_path / "g.pt")
    back = ClassGallery.load(tmp_path / "g.pt")
    assert torch.equal(back.view_aspect, g.view_aspect) and torch.equal(back.negative_aspect, g.negative_aspect)
    sub = g.subset(["tall"])
    assert torch.allclose(sub.view_aspect, torch.tensor([0.5])) and torch.allclose(sub.negative_aspect,
                                                                                   torch.tensor([4.0]))
    g.remove("wide")
    assert torch.allclose(g.view_aspect, torch.tensor([0.5]))
    old = back.to_payload()  # a gallery saved before the ratios were kept: square views
    del old["view_aspect"], old["negative_aspect"]
    assert torch.equal(ClassGallery.from_payload(old).view_aspect, torch.ones(5))
    with pytest.raises(ValueError, match="aspect ratios must be finite and positive"):
        ClassGallery.from_payload(back.to_payload() | {"view_aspect": torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0])})
    # the switch is left out of the config at 0: files and fingerprints of earlier models do not change
    assert model.config.anchor_aspect_power == 0.5  # the default model's own setting
    square = with_power(model, 0.0)
    assert "anchor_aspect_power" not in square.config.to_dict()
    assert model_fingerprint(square) != model_fingerprint(model)
    assert ModelConfig.from_dict(with_power(model, 1.0).config.to_dict()).anchor_aspect_power == 1.0
    with pytest.raises(ValueError, match="anchor_aspect_power"):
        ModelConfig(anchor_aspect_power=2.0)


def test_a_wide_object_gets_a_wide_box():
    """A 4:1 object: the square anchor's box is far too tall (the TransformNet barely stretches it), the class's
    own aspect ratio fits it."""
    obj = textured_object((480, 120), seed=5)  # the area of the class grid: image size 0 needs no pyramid
    pos = (80, 150)
    scene = scene_with(obj, [pos], size=(640, 400), seed=1)
    truth = torch.tensor([[pos[0], pos[1], pos[0] + 480, pos[1] + 120]], dtype=torch.float32)
    from os2d.ops import box_iou

    ious = {}
    for power in (0.0, 0.5, 1.0):
        det = Detector(with_power(load_model("default"), power), InferenceConfig(image_size=None, reshape_top=0))
        det.add_class("bar", obj)
        top = det.detect(scene).boxes_xyxy[:1]
        ious[power] = float(box_iou(top, truth)[0, 0])
        if power == 0.0:  # the default's shape search (square anchors) stretches the box toward 4:1 as well
            ious["search"] = float(box_iou(det.detect(scene, reshape_top=10).boxes_xyxy[:1], truth)[0, 0])
    # default model stage 2: 0.41 -> 0.81; stage 3 (trained further with square anchors, its TransformNet stretches
    # the 4:1 anchor a little too far: 638 px for 480): 0.41 -> 0.67 at power 1, 0.54 at the default's power 0.5
    # (a 2:1 anchor); the shape search, square anchors: 0.61
    assert ious[1.0] > 0.6 and ious[1.0] > ious[0.0] + 0.2, ious
    assert ious[0.5] > ious[0.0] + 0.1, ious
    assert ious["search"] > 0.6 and ious["search"] > ious[0.0] + 0.2, ious


def test_export_and_training_pass_the_ratios(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from os2d.export import export_onnx

    model = with_power(load_model("default"), 1.0)
    report = export_onnx(model, tmp_path / "d.onnx", height=128, width=160)  # verified against PyTorch
    assert report.inputs["aspect"] == ["K"] and max(report.max_abs_diff.values()) < 1e-2
    kernels = torch.nn.functional.normalize(torch.rand(2, 225, model.feature_channels), dim=-1)
    baked = export_onnx(model, tmp_path / "b.onnx", height=128, width=160, kernels=kernels,
                        aspect=torch.tensor([3.0, 1.0]))
    assert "aspect" not in baked.inputs
    # training: the class images' own shapes give the ratios
    from os2d.train.trainer import KernelsAndHeads

    out = KernelsAndHeads(model)(torch.rand(1, 3, 128, 160), [torch.rand(3, 60, 240), torch.rand(3, 120, 120)])
    boxes = out.boxes_xyxy.detach()
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    assert float((w / h)[0, 0].median()) > 2.5 and float((w / h)[0, 1].median()) < 1.6
