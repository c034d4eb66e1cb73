"""EfficientNet-Lite stride-16 trunks: shapes, TF padding, frozen BN, packaged ImageNet weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from os2d.model.backbone import efficientnet_lite as eff
from os2d.model.backbone.efficientnet_lite import (
    Conv2dSame,
    EfficientNetLiteTrunk,
    block_specs,
    efficientnet_lite0,
    efficientnet_lite2,
    load_efficientnet_lite_imagenet,
    same_padding,
    stride16_cut,
)

# variant -> (index of the first stride-32 block, out_channels)
EXPECTED = {"lite0": (11, 112), "lite2": (15, 120)}


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLiteTrunk:
    return efficientnet_lite0(pretrained=True).eval()


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (97, 3, 2, (1, 1)),  # out 49: (49-1)*2 + 3 - 97 = 2
        (98, 3, 2, (0, 1)),  # out 49: 96 + 3 - 98 = 1, TF puts the odd pixel after
        (98, 5, 2, (1, 2)),
        (7, 5, 1, (2, 2)),
        (1, 5, 2, (2, 2)),
        (10, 1, 1, (0, 0)),
    ],
)
def test_same_padding_matches_tf_rule(size: int, kernel: int, stride: int, expected: tuple[int, int]) -> None:
    assert same_padding(size, kernel, stride) == expected


@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (5, 2), (5, 1), (1, 1)])
@pytest.mark.parametrize(("h", "w"), [(16, 16), (17, 30), (31, 9)])
def test_conv2d_same_equals_explicit_pad(kernel: int, stride: int, h: int, w: int) -> None:
    torch.manual_seed(0)
    conv = Conv2dSame(4, 6, kernel, stride)
    x = torch.randn(2, 4, h, w)
    top, bottom = same_padding(h, kernel, stride)
    left, right = same_padding(w, kernel, stride)
    ref = F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, stride=stride)
    out = conv(x)
    assert out.shape[-2:] == (-(-h // stride), -(-w // stride))
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (5, 2), (5, 1), (4, 1)])
@pytest.mark.parametrize(("h", "w"), [(16, 16), (17, 30), (31, 9), (2, 3)])
def test_depthwise_conv2d_same_zero_taps_equal_explicit_pad(kernel: int, stride: int, h: int, w: int) -> None:
    """Grouped convolutions pad unevenly with zero taps instead of a padded copy: same values and gradients."""
    torch.manual_seed(0)
    conv = Conv2dSame(6, 6, kernel, stride, groups=6, bias=True)
    x = torch.randn(2, 6, h, w, requires_grad=True)
    top, bottom = same_padding(h, kernel, stride)
    left, right = same_padding(w, kernel, stride)
    ref = F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, conv.bias, stride=stride, groups=6)
    out = conv(x)
    assert out.shape == ref.shape == (2, 6, -(-h // stride), -(-w // stride))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    grads = torch.autograd.grad(out.square().sum(), (x, conv.weight))
    ref_grads = torch.autograd.grad(ref.square().sum(), (x, conv.weight))
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_block_layout(variant: str) -> None:
    specs = block_specs(variant)
    assert len(specs) == {"lite0": 16, "lite2": 21}[variant]
    cut, channels = EXPECTED[variant]
    assert stride16_cut(specs) == cut
    assert specs[cut].stride == 2 and specs[cut - 1].out_channels == channels
    assert all(spec.stride == 1 for spec in specs[cut - 3 : cut])  # stage 5 runs at stride 16


def test_unknown_variant() -> None:
    with pytest.raises(ValueError, match="lite7"):
        EfficientNetLiteTrunk("lite7")


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_output_shape_odd_sizes(variant: str) -> None:
    trunk = EfficientNetLiteTrunk(variant).eval()
    assert trunk.out_channels == EXPECTED[variant][1]
    assert trunk.stride == 16
    with torch.no_grad():
        for h, w in [(97, 131), (16, 16), (33, 1), (240, 240)]:
            out = trunk(torch.randn(2, 3, h, w))
            assert out.shape == (2, trunk.out_channels, -(-h // 16), -(-w // 16))


def test_state_dict_names_and_no_layers_after_cut() -> None:
    keys = EfficientNetLiteTrunk("lite0").state_dict().keys()
    assert "_conv_stem.weight" in keys and "_bn0.running_var" in keys
    assert "_blocks.0._depthwise_conv.weight" in keys and "_blocks.0._expand_conv.weight" not in keys
    assert "_blocks.10._project_conv.weight" in keys and "_blocks.10._bn2.running_var" in keys
    assert not any(k.startswith(("_blocks.11.", "_conv_head", "_bn1.", "_fc")) for k in keys)


def test_batchnorm_hyperparameters() -> None:
    bns = [m for m in EfficientNetLiteTrunk("lite0").modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)


@pytest.mark.parametrize("frozen_bn", [True, False])
def test_frozen_bn_stays_in_eval(frozen_bn: bool) -> None:
    trunk = EfficientNetLiteTrunk("lite0", frozen_bn=frozen_bn)
    assert trunk.train() is trunk
    assert trunk.training
    bns = [m for m in trunk.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.training is not frozen_bn for m in bns)
    if frozen_bn:
        before = bns[0].running_mean.clone()
        trunk(torch.randn(2, 3, 64, 64))
        torch.testing.assert_close(bns[0].running_mean, before)


def test_normalize() -> None:
    trunk = EfficientNetLiteTrunk("lite0")
    images = torch.tensor([0.0, 127.0 / 255.0, 1.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(trunk.normalize(images).flatten(), torch.tensor([-127.0 / 128.0, 0.0, 1.0]))


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_pretrained_weights_load_exactly(variant: str) -> None:
    trunk = {"lite0": efficientnet_lite0, "lite2": efficientnet_lite2}[variant](pretrained=True)
    state = torch.load(eff._weights_path(variant), map_location="cpu", weights_only=True)
    own = trunk.state_dict()
    assert set(own) <= set(state)
    for key, value in own.items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)


def test_missing_keys_raise(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    state = torch.load(eff._weights_path("lite0"), map_location="cpu", weights_only=True)
    del state["_blocks.10._bn0.running_var"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    monkeypatch.setattr(eff, "_weights_path", lambda variant: str(path))
    with pytest.raises(RuntimeError, match="_blocks.10._bn0.running_var"):
        load_efficientnet_lite_imagenet(EfficientNetLiteTrunk("lite0"))


def test_pretrained_forward_is_finite_and_batch_independent(lite0: EfficientNetLiteTrunk) -> None:
    torch.manual_seed(0)
    images = torch.rand(2, 3, 97, 131)
    with torch.no_grad():
        both = lite0(lite0.normalize(images))
        single = lite0(lite0.normalize(images[1:]))
    assert torch.isfinite(both).all()
    assert both.abs().max() > 0
    torch.testing.assert_close(both[1:], single, rtol=1e-4, atol=1e-4)


def _pattern(h: int, w: int) -> torch.Tensor:
    """A deterministic (1, 3, h, w) RGB image in [0, 1] made of oblique sinusoids (no RNG, no files)."""
    y = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    x = torch.arange(w, dtype=torch.float64).view(1, 1, w)
    c = torch.arange(3, dtype=torch.float64).view(3, 1, 1)
    return (0.5 + 0.5 * torch.sin(0.11 * x * (c + 1) + 0.07 * y * (3 - c) + c)).float()[None]


# out[0, :4, 3, 4] on _pattern(97, 131), recorded once the full classifier built from these blocks had been
# checked on real photos (ImageNet fruit classes in the top 5). Symmetric padding moves them by ~0.3-1.5.
PINNED = {
    "lite0": [1.042525, -2.782355, 2.436546, 3.170753],
    "lite2": [7.304431, 3.498340, 5.875634, -8.560149],
}


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_pretrained_output_regression(variant: str) -> None:
    trunk = {"lite0": efficientnet_lite0, "lite2": efficientnet_lite2}[variant](pretrained=True).eval()
    with torch.no_grad():
        out = trunk(trunk.normalize(_pattern(97, 131)))
    assert out.shape == (1, trunk.out_channels, 7, 9)
    torch.testing.assert_close(out[0, :4, 3, 4], torch.tensor(PINNED[variant]), rtol=1e-3, atol=1e-3)
