"""Inference features through the BatchNorm-folded backbone copy equal the plain backbone's, the copy follows
every change of the weights (the cache's invalidation rule), and ``inference_path`` selects it."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from os2d.config import ModelConfig
from os2d.model.backbone.fuse import DEFAULT_INFERENCE_PATH, FusedBackboneCache, InferencePath, fused_copy
from os2d.model.os2d import build_os2d


def _model(backbone: str):
    torch.manual_seed(0)
    config = ModelConfig.v2(backbone=backbone) if backbone.startswith("resnet") else ModelConfig(backbone=backbone)
    model = build_os2d(config).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():  # non-trivial statistics, else folding is a no-op
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model


def _plain(model, x):
    with torch.enable_grad():
        return model.extract_features(x).detach()


def _fast(model, x):
    with torch.no_grad():
        return model.extract_features(x)


@pytest.mark.parametrize("backbone", ["resnet50", "efficientnet_lite0"])
def test_folded_features_equal_plain_and_state_dict_is_untouched(backbone):
    model = _model(backbone)
    model.inference_path = "folded"  # the eager folded copy, whose modules can be inspected (traced: next test)
    keys = list(model.state_dict())
    x = torch.rand(1, 3, 96, 128)
    plain, fast = _plain(model, x), _fast(model, x)
    assert model.inference_cache.module is not None  # the fast path ran
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5 * float(plain.abs().max()))
    assert list(model.state_dict()) == keys
    fused = model.inference_cache.module
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules()) == len(model.backbone.conv_bn_pairs())


def test_resnet_inference_runs_traced_and_one_trace_serves_every_size():
    model = _model("resnet50")
    for size in [(96, 128), (80, 112), (33, 47)]:  # the trace was made on 64x64; odd sizes too
        x = torch.rand(1, 3, *size)
        plain, fast = _plain(model, x), _fast(model, x)
        assert isinstance(model.inference_cache.module, torch.jit.ScriptModule)
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5 * float(plain.abs().max()))
    assert not isinstance(_fast_copy(_model("efficientnet_lite0")), torch.jit.ScriptModule)  # not trace-safe


def _fast_copy(model):
    _fast(model, torch.rand(1, 3, 64, 64))
    return model.inference_cache.module


def test_traced_copy_follows_weights_and_is_dropped_by_copy_and_pickle():
    model = _model("resnet50")
    x = torch.rand(1, 3, 64, 96)
    first = _fast_copy(model)
    assert _fast_copy(model) is first  # cached
    model.inference_path = InferencePath.FOLDED
    assert not isinstance(_fast_copy(model), torch.jit.ScriptModule)
    model.inference_path = "folded+jit"
    with torch.no_grad():
        model.backbone.layer3[-1].conv3.weight.mul_(2.0)
    torch.testing.assert_close(_fast(model, x), _plain(model, x), rtol=1e-5, atol=1e-5 * float(_plain(model, x).abs().max()))
    assert _fast_copy(model) is not first
    clone = copy.deepcopy(model)  # a ScriptModule in the cache would not survive pickling
    assert clone.inference_cache.module is None and clone.inference_path is InferencePath.FOLDED_JIT
    torch.save(model, io.BytesIO())
    torch.testing.assert_close(_fast(clone, x), _fast(model, x))


def test_trace_failure_falls_back_to_the_eager_folded_copy(monkeypatch):
    model = _model("resnet50")

    def broken(*args, **kwargs):
        raise RuntimeError("no TorchScript here")

    monkeypatch.setattr(torch.jit, "trace", broken)
    x = torch.rand(1, 3, 64, 64)
    with pytest.warns(RuntimeWarning, match="no TorchScript here"):
        fast = _fast(model, x)
    assert not isinstance(model.inference_cache.module, torch.jit.ScriptModule)
    torch.testing.assert_close(fast, _plain(model, x), rtol=1e-5, atol=1e-5 * float(fast.abs().max()))


def test_copy_follows_optimizer_steps_and_loaded_weights():
    model = _model("efficientnet_lite0")
    x = torch.rand(1, 3, 64, 96)
    before = _fast(model, x)
    params = [p for p in model.backbone.parameters()]
    opt = torch.optim.SGD(params, lr=0.5)
    model.train()
    model.extract_features(x).square().mean().backward()  # training path: plain backbone, gradients flow
    assert params[0].grad is not None
    opt.step()
    model.eval()
    after = _fast(model, x)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, _plain(model, x), rtol=1e-5, atol=1e-5 * float(after.abs().max()))
    other = _model("efficientnet_lite0")
    model.load_state_dict(other.state_dict())
    torch.testing.assert_close(_fast(model, x), before, rtol=1e-5, atol=1e-5 * float(before.abs().max()))


def test_fused_copy_refuses_a_wrong_pair():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.ReLU()
            self.b = nn.BatchNorm2d(3)

        def conv_bn_pairs(self):
            return [("a", "b")]

    with pytest.raises(TypeError, match="not a Conv2d -> BatchNorm2d pair"):
        fused_copy(Bad())


def test_inference_path_is_typed_with_a_documented_default_and_plain_skips_the_copy():
    model = _model("efficientnet_lite0")
    assert model.inference_path is DEFAULT_INFERENCE_PATH is InferencePath.FOLDED_JIT
    with pytest.raises(ValueError, match="not a valid InferencePath"):
        model.inference_path = "fast"
    model.inference_path = "plain"
    x = torch.rand(1, 3, 64, 96)
    torch.testing.assert_close(_fast(model, x), _plain(model, x))
    assert model.inference_cache.module is None  # the plain backbone ran, nothing was copied
    assert "inference_cache" not in "".join(model.state_dict())


def test_cache_invalidation_rule():
    backbone = _model("resnet50").backbone
    cache = FusedBackboneCache()
    with torch.no_grad():
        first = cache.get(backbone, InferencePath.FOLDED)
        assert cache.get(backbone, InferencePath.FOLDED) is first  # nothing changed: reused
        jit = cache.get(backbone, InferencePath.FOLDED_JIT)
        assert jit is not first and isinstance(jit, torch.jit.ScriptModule)  # another kind: rebuilt
        backbone.conv1.weight.add_(0.0)  # in-place write: the version counter moves
        assert cache.get(backbone, InferencePath.FOLDED_JIT) is not jit
        kept = cache.get(backbone, InferencePath.FOLDED_JIT)
        backbone.conv1.weight = nn.Parameter(backbone.conv1.weight.detach().clone())  # replaced tensor
        assert cache.get(backbone, InferencePath.FOLDED_JIT) is not kept
        backbone.double()  # dtype change (and no longer traceable: float64)
        assert not isinstance(cache.get(backbone, InferencePath.FOLDED_JIT), torch.jit.ScriptModule)
    with pytest.raises(ValueError, match="plain path"):
        cache.get(backbone, InferencePath.PLAIN)
    assert copy.deepcopy(cache).module is None and cache.module is not None
    cache.clear()
    assert cache.module is None


def _unmarked(fused: nn.Module) -> nn.Module:
    """The same folded copy with every ReLU6 as a separate pass."""
    other = copy.deepcopy(fused)
    other.mark_folded(fuse_relu6=False)
    return other


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_efficientnet_folded_copy_fuses_relu6_into_its_convolutions_with_equal_values(memory_format):
    from os2d.model.backbone.conv_act import fused_relu6_available

    model = _model("efficientnet_lite0")
    fused = fused_copy(model.backbone)
    assert fused.fuse_relu6 and all(b.fuse_relu6 for b in fused.blocks())  # mark_folded ran after the BatchNorms
    assert not model.backbone.fuse_relu6  # the trained / exported trunk never takes the fused path
    assert not any(b.fuse_relu6 for b in _unmarked(fused).blocks())
    x = torch.rand(2, 3, 77, 101).contiguous(memory_format=memory_format) * 4 - 2  # odd sizes: uneven padding
    with torch.no_grad():
        fast, separate = fused(x), _unmarked(fused)(x)
    if fused_relu6_available():
        torch.testing.assert_close(fast, separate, rtol=0, atol=1e-5)  # the same arithmetic (equal on this CPU)
    else:
        assert torch.equal(fast, separate)  # no op here: the separate pass runs


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_fused_relu6_falls_back_under_autograd_autocast_and_tracing():
    from os2d.model.backbone import conv_act

    x, w = torch.rand(1, 4, 5, 5), torch.rand(4, 4, 1, 1)
    with torch.no_grad():
        fp32 = torch.float32 if conv_act.fused_relu6_available(torch.float32) else None
        bf16 = torch.bfloat16 if conv_act.fused_relu6_available(torch.bfloat16) else None
        assert conv_act.fused_relu6_dtype(x, w) == fp32
        assert conv_act.fused_relu6_dtype(x.double(), w.double()) is None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert conv_act.fused_relu6_dtype(x, w) == bf16  # the dtype autocast would run the convolution in
        with torch.autocast("cpu", dtype=torch.float16):
            assert conv_act.fused_relu6_dtype(x, w) is None
    assert conv_act.fused_relu6_dtype(x, w.requires_grad_()) is None
    model = _model("efficientnet_lite0")
    fused = fused_copy(model.backbone)
    with torch.no_grad():
        traced = torch.jit.trace(fused, torch.rand(1, 3, 64, 64), check_trace=False)
    assert "_convolution_pointwise" not in str(traced.graph)  # tracing records the plain convolution + relu6


def test_fused_relu6_under_bf16_autocast_equals_autocast_convolution_then_relu6():
    """trunk_precision / verify_precision "bf16": the fused copy under bfloat16 autocast gives what autocast gives
    for the convolution followed by ReLU6."""
    model = _model("efficientnet_lite0")
    fused = fused_copy(model.backbone)
    x = (torch.rand(2, 3, 77, 101) * 4 - 2).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast, separate = fused(x), _unmarked(fused)(x)
    assert fast.dtype == separate.dtype
    torch.testing.assert_close(fast.float(), separate.float(), rtol=0, atol=1e-2 * float(separate.abs().max()))


def test_mark_folded_needs_every_batchnorm_folded():
    model = _model("efficientnet_lite0")
    with pytest.raises(ValueError, match="BatchNorm"):
        copy.deepcopy(model.backbone).mark_folded()
