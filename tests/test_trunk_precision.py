"""The bf16 trunk (``trunk_precision="bf16"``): float32 features close to the exact ones where the device has bf16
dot products, the exact float32 path everywhere else (no support, training, autograd), and the option reaching
detection, the second look and the command line."""

from __future__ import annotations

import pytest
import torch
from helpers import scene_with, textured_object

import os2d.model.os2d as os2d_module
from os2d.apps.cli.common import add_inference_args, inference_config
from os2d.config import InferenceConfig, ModelConfig
from os2d.detector import Detector
from os2d.io import image_to_tensor
from os2d.model.os2d import build_os2d
from os2d.model.trunk_precision import TrunkPrecision, bf16_applies

needs_bf16 = pytest.mark.skipif(not bf16_applies(torch.device("cpu")),
                                reason="no native bf16 dot products (AVX512-BF16 / AMX) on this CPU")


def _photo(seed: int = 0) -> torch.Tensor:
    obj = textured_object(seed=seed)
    return image_to_tensor(scene_with(obj, [(40, 60), (250, 150)]))[None]  # (1, 3, 352, 480)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet50"])
@needs_bf16
def test_bf16_features_are_float32_and_close(backbone):
    """Photo features (anchor-padded) and crop features: float32, within bf16 round-off of the exact ones. The
    ResNet trunk (traced on the fp32 path) runs its eager folded copy, which autocasts."""
    torch.manual_seed(0)
    model = build_os2d(ModelConfig(backbone=backbone)).eval()
    x = _photo()
    with torch.no_grad():
        for kw in ({}, {"align_to_anchors": False}):
            exact = model.extract_features(x, **kw)
            fast = model.extract_features(x, precision="bf16", **kw)
            assert fast.dtype == torch.float32 and fast.shape == exact.shape
            assert 0 < _rel(fast, exact) < 0.1, _rel(fast, exact)  # bf16 round-off: different, but close
    cached = model.inference_cache.module
    with torch.no_grad():  # alternating precisions reuses both copies (a traced graph is not rebuilt per call)
        model.extract_features(x, precision="bf16")
        model.extract_features(x)
    assert model.inference_cache.module is cached
    if backbone == "resnet50":
        assert isinstance(cached, torch.jit.ScriptModule) and model.eager_cache.module is not None


def test_bf16_falls_back_to_the_exact_trunk(monkeypatch):
    """Without native bf16, in training mode and under autograd the bf16 setting runs the float32 trunk: equal."""
    torch.manual_seed(0)
    model = build_os2d(ModelConfig()).eval()
    x = _photo()
    with torch.no_grad():
        exact = model.extract_features(x)
    with torch.enable_grad():
        assert torch.equal(model.extract_features(x, precision="bf16"), model.extract_features(x))
    monkeypatch.setattr(os2d_module, "bf16_applies", lambda device: False)
    with torch.no_grad():
        assert torch.equal(model.extract_features(x, precision=TrunkPrecision.BF16), exact)
    with pytest.raises(ValueError):
        model.extract_features(x, precision="fp16")


def test_config_and_cli_take_the_trunk_precision():
    import argparse

    with pytest.raises(ValueError, match="trunk_precision"):
        InferenceConfig(trunk_precision="int8")
    with pytest.raises(ValueError, match="verify_precision"):
        InferenceConfig(verify_precision="fp16")
    p = argparse.ArgumentParser()
    add_inference_args(p, image_size_help="")
    assert inference_config(p.parse_args([])).trunk_precision == InferenceConfig().trunk_precision
    assert inference_config(p.parse_args(["--trunk-precision", "bf16"])).trunk_precision == "bf16"
    both = inference_config(p.parse_args(["--verify-precision", "bf16"]))
    assert (both.trunk_precision, both.verify_precision) == (InferenceConfig().trunk_precision, "bf16")
    with pytest.raises(SystemExit):
        p.parse_args(["--trunk-precision", "fp16"])


def test_detect_with_bf16_trunk_finds_the_same_objects(monkeypatch):
    """End to end with the packaged model (automatic scale, the second look): the photo's backbone calls get
    ``trunk_precision``, the second look's crops ``verify_precision``; on a clear scene the bf16 trunk finds the
    same two objects as the exact one."""
    calls = []
    inner = os2d_module.Os2dModel.extract_features

    def spy(self, images, **kw):
        kind = "crop" if kw.get("align_to_anchors") is False else "photo"
        calls.append((kind, TrunkPrecision(kw.get("precision", "fp32")).value))
        return inner(self, images, **kw)

    monkeypatch.setattr(os2d_module.Os2dModel, "extract_features", spy)
    obj = textured_object(seed=3)
    scene = scene_with(obj, [(40, 60), (250, 150)], size=(640, 480))
    det = Detector.from_weights("default")
    det.add_class("obj", obj)
    calls.clear()
    exact = det.detect(scene)
    assert set(calls) == {("photo", "fp32"), ("crop", "fp32")}  # the probe / levels and the second look's crops
    for trunk, crops in (("bf16", "fp32"), ("fp32", "bf16")):
        calls.clear()
        det.detect(scene, trunk_precision=trunk, verify_precision=crops)
        assert set(calls) == {("photo", trunk), ("crop", crops)}
    fast = det.detect(scene, trunk_precision="bf16", verify_precision="bf16")
    from os2d.ops.boxes import box_iou

    assert float(box_iou(fast.boxes_xyxy[:2], exact.boxes_xyxy[:2]).max(1).values.min()) > 0.7
