"""The int8 TransformNet (``heads_precision="int8"``): close to the float32 heads on the packaged model and a real
photo, used only where it applies (eval, no autograd, CPU float32), rebuilt when the weights change, and the
exact path unchanged (resampling only the pooled cells equals resampling all of them)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from helpers import scene_with, textured_object, trained_like_transform_net

from os2d.apps.cli.common import add_inference_args, inference_config
from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.io import image_to_tensor, load_image
from os2d.model.correlation import correlate
from os2d.model.grids import params_to_affine, unit_grid_in_channel_layout
from os2d.model.head import os2d_head
from os2d.model.int8_transform import HeadsPrecision, Int8TransformNet, int8_supported
from os2d.model.resample import pool_mask, sample_per_channel_unit

needs_int8 = pytest.mark.skipif(not int8_supported(), reason="no oneDNN int8 convolution on this CPU / build")


def _corr(n: int = 2, h: int = 20, w: int = 24, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 225, h, w, generator=g) ** 3 - 0.1  # mostly small, some negative (ReLU'd away)


@needs_int8
def test_int8_transform_net_is_close_to_float32():
    net = trained_like_transform_net()
    corr = _corr()
    with torch.no_grad():
        exact = net(corr)
        fast = Int8TransformNet(net)(corr.clone())
    assert fast.shape == exact.shape and fast.dtype == torch.float32
    rel = (fast - exact).norm() / (exact - exact.mean((0, 2, 3), keepdim=True)).norm()
    assert rel < 0.02, f"relative error {rel:.4f}"  # of the parameters' variation, not their mean (the identity)


@needs_int8
def test_int8_channels_last_entry_quantises_like_the_plain_one():
    q = Int8TransformNet(trained_like_transform_net())
    corr = _corr(1, 9, 11)
    corr_cl = corr.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        a = q(corr)
        a_cl = q(corr_cl)
        b = q.from_channels_last(corr.permute(0, 2, 3, 1).contiguous())
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a_cl, b)
    torch.testing.assert_close(corr_cl, corr)  # the plain entry leaves its input alone


@needs_int8
def test_packaged_model_int8_heads_match_float32_on_a_real_photo(shared_data):
    det = Detector.from_weights("default")
    model = det.model
    scene = shared_data / "os2d-demo" / "input_image.jpg"
    classes = sorted((shared_data / "os2d-demo").glob("class_image_*.jpg"))[:2]
    if not scene.exists() or not classes:
        pytest.skip("demo images absent")
    img = image_to_tensor(load_image(scene))
    img = torch.nn.functional.interpolate(img[None], scale_factor=0.5, mode="bilinear")
    kernels = model.class_kernels([image_to_tensor(load_image(p)) for p in classes])
    with torch.inference_mode():
        feats = model.extract_features(img)
        exact = model.heads(feats, kernels)
        fast = model.heads(feats, kernels, precision="int8")
    assert model.int8_cache.value is not None  # the int8 path ran
    diff = (fast.scores - exact.scores).abs()
    assert diff.mean() < 2e-3 and diff.max() < 0.1
    # the best location of each class and its box are the same
    for k in range(kernels.shape[0]):
        i, j = divmod(int(exact.scores[0, k].argmax()), exact.scores.shape[-1])
        assert fast.scores[0, k, i, j] >= fast.scores[0, k].max() - 0.01
        torch.testing.assert_close(fast.boxes_xyxy[0, k, i, j], exact.boxes_xyxy[0, k, i, j], atol=2.0, rtol=0)


def test_int8_applies_only_at_cpu_inference(toy_model):
    feats = torch.rand(1, toy_model.feature_channels, 6, 7)
    kernels = toy_model.class_kernels([torch.rand(3, 64, 64)])
    with torch.enable_grad():  # autograd: the float32 net, bit for bit
        a = toy_model.heads(feats, kernels, precision="int8").scores
    with torch.no_grad():
        b = toy_model.heads(feats, kernels).scores
    torch.testing.assert_close(a.detach(), b, rtol=0, atol=0)
    assert toy_model.int8_cache.value is None
    toy_model.train()
    with torch.no_grad():
        toy_model.heads(feats, kernels, precision="int8")
    assert toy_model.int8_cache.value is None
    with pytest.raises(ValueError):
        toy_model.heads(feats, kernels, precision="fp16")


@needs_int8
def test_int8_copy_follows_weight_changes_and_is_not_pickled(toy_model):
    feats = torch.rand(1, toy_model.feature_channels, 6, 7)
    kernels = toy_model.class_kernels([torch.rand(3, 64, 64)])
    with torch.no_grad():
        toy_model.heads(feats, kernels, precision=HeadsPrecision.INT8)
        first = toy_model.int8_cache.value
        toy_model.heads(feats, kernels, precision="int8")
        assert toy_model.int8_cache.value is first  # reused
        toy_model.transform_net.linear.bias.add_(0.1)  # in place: version counter moves
        toy_model.heads(feats, kernels, precision="int8")
        assert toy_model.int8_cache.value is not first
    assert pickle.loads(pickle.dumps(toy_model)).int8_cache.value is None
    assert copy.deepcopy(toy_model).int8_cache.value is None


def test_pooled_cells_only_resampling_equals_all_cells(toy_model):
    """The head resamples the 121 inner channels only; the pooled score equals pooling all 225 (mask 0 outside)."""
    feats = torch.rand(2, toy_model.feature_channels, 7, 9)
    kernels = toy_model.class_kernels([torch.rand(3, 64, 64), torch.rand(3, 80, 48)])
    net = trained_like_transform_net(3)
    with torch.no_grad():
        out = os2d_head(feats, kernels, net, invert_transform=True)
        corr = correlate(feats, kernels).reshape(4, 225, 7, 9)
        theta = params_to_affine(net(corr), invert=True)
        full = sample_per_channel_unit(corr, unit_grid_in_channel_layout(theta, 15, 7, 9))
        ref = torch.einsum("nchw,c->nhw", full, pool_mask(15, 2)).view(2, 2, 7, 9)
    torch.testing.assert_close(out.scores, ref, rtol=1e-5, atol=1e-6)


@needs_int8
def test_detector_int8_finds_the_same_object():
    obj = textured_object((96, 128))
    scene = scene_with(obj, [(200, 120)])
    found = {}
    for precision in ("fp32", "int8"):
        det = Detector.from_weights("default", image_size=None, max_detections=5, heads_precision=precision)
        det.add_class("obj", obj)
        found[precision] = det.detect(scene)
    a, b = found["fp32"], found["int8"]
    assert len(a.scores) and len(b.scores)
    torch.testing.assert_close(b.boxes_xyxy[0], a.boxes_xyxy[0], atol=2.0, rtol=0)
    assert abs(float(b.scores[0]) - float(a.scores[0])) < 0.01


def test_heads_precision_option_and_config_checks():
    import argparse

    p = argparse.ArgumentParser()
    add_inference_args(p, image_size_help="")
    assert inference_config(p.parse_args(["--heads-precision", "int8"])).heads_precision == "int8"
    assert inference_config(p.parse_args([])).heads_precision == InferenceConfig().heads_precision
    with pytest.raises(SystemExit):
        p.parse_args(["--heads-precision", "fp16"])
    fast = inference_config(p.parse_args(["--fast"]))  # the approximations together (README, Speed)
    assert (fast.heads_precision, fast.trunk_precision, fast.verify_precision) == ("int8", "bf16", "bf16")
    mixed = inference_config(p.parse_args(["--fast", "--heads-precision", "fp32", "--verify-precision", "fp32"]))
    assert (mixed.heads_precision, mixed.trunk_precision, mixed.verify_precision) == ("fp32", "bf16", "fp32")
    with pytest.raises(ValueError, match="heads_precision"):
        InferenceConfig(heads_precision="bf16")
