"""TransformNet in int8 on CPU: its 7x7 convolution through oneDNN's quantized kernel (inference only).

TransformNet's 7x7 convolution over the 225 correlation channels is ~70% of the heads' time in float32, and the
heads run near the CPU's float32 peak. On CPUs with 8-bit dot-product instructions (AVX512-VNNI, AVX-VNNI) oneDNN
runs the same convolution in int8 ~3.5x faster (quantising its input included). What is quantised:

- its input (the ReLU'd, L2-normalised correlation, so unsigned): 8 bits per tensor, scale = its maximum / 255,
  taken per call (no calibration data, no saturation);
- its weights, with the eval-mode BatchNorm folded in: 8 bits per output channel, symmetric.

Accumulation is int32 and the output comes back as float32 with the ReLU fused. The 5x5 convolutions after it
stay float32: quantising the second one too was ~15% faster still but gave 2.7x the score error (its input,
the first one's ReLU output, is heavy-tailed). What the remaining error (mean |score difference| ~1e-4) does to
detections is measured by ``benchmarks/heads_precision.py`` (README, "Speed").

The float32 TransformNet stays the reference: training, autograd, ONNX export, CUDA and the reference-parity
tests never take this path.
"""

from __future__ import annotations

import copy
import functools
from enum import Enum

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from os2d.model.backbone.fuse import WeightsDerivedCache, fold_conv_bn
from os2d.model.transform_net import TransformNet


class HeadsPrecision(str, Enum):
    """Arithmetic of TransformNet's convolutions at inference (``InferenceConfig.heads_precision``)."""

    FP32 = "fp32"  # exact: the reference-parity path
    INT8 = "int8"  # oneDNN int8 on CPU where supported (falls back to fp32 elsewhere)
    INT8_EXACT = "int8-exact"  # int8 finds the detections, float32 gives their values (os2d.inference.exact_values)


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm folded into (a copy of) the convolution before it: (weight, bias)."""
    folded = copy.deepcopy(conv)
    fold_conv_bn(folded, bn)
    return folded.weight.detach(), folded.bias.detach()


def _quantize_unsigned(x: Tensor) -> tuple[Tensor, float]:
    """(N, C, H, W) float >= 0 -> (uint8 channels-last tensor, scale) with x ~ q * scale, scale = max / 255."""
    top = float(x.amax()) if x.numel() else 0.0
    scale = top / 255.0 if top > 0 else 1.0
    x = x.contiguous(memory_format=torch.channels_last)
    return x.mul(1.0 / scale).round_().clamp_(0, 255).to(torch.uint8), scale


class _QuantConvReLU:
    """One float32 convolution (+ folded BN) as an int8 oneDNN convolution with fused ReLU and float32 output."""

    def __init__(self, weight: Tensor, bias: Tensor, padding: int) -> None:
        w = weight.detach().float()
        self.out_channels = w.shape[0]
        self.w_scale = (w.abs().amax(dim=(1, 2, 3)) / 127.0).clamp_min(1e-12)  # (O,) per output channel
        qw = (w / self.w_scale.view(-1, 1, 1, 1)).round().clamp(-128, 127).to(torch.int8)
        self.w_zero = torch.zeros(self.out_channels, dtype=torch.long)
        self.bias = bias.detach().float().contiguous()
        self.padding = [padding, padding]
        self.packed = torch.ops.onednn.qconv_prepack(qw, self.w_scale, 1.0 / 255.0, 0, [1, 1], self.padding,
                                                     [1, 1], 1, None)

    def __call__(self, x: Tensor) -> Tensor:
        """(N, C, H, W) float >= 0 -> (N, O, H, W) float32 ReLU(conv(x)), channels-last."""
        return self.quantized(*_quantize_unsigned(x))

    def quantized(self, q: Tensor, scale: float) -> Tensor:
        """(N, C, H, W) uint8 (channels-last) with x ~ q * scale -> (N, O, H, W) float32 ReLU(conv(x))."""
        return torch.ops.onednn.qconv2d_pointwise(
            q, scale, 0, self.packed, self.w_scale, self.w_zero, self.bias, [1, 1], self.padding, [1, 1], 1,
            1.0, 0, torch.float32, "relu", [], "")


class Int8TransformNet:
    """Inference copy of a :class:`TransformNet` (eval mode) with its first convolution in int8; same call
    signature."""

    def __init__(self, net: TransformNet) -> None:
        conv1, bn1, _, conv2, bn2, _ = net.conv
        with torch.no_grad():
            self.conv1 = _QuantConvReLU(*_fold_bn(conv1, bn1), padding=conv1.padding[0])
            w2, b2 = _fold_bn(conv2, bn2)
            self.conv2_weight = w2.contiguous(memory_format=torch.channels_last)
            self.conv2_bias = b2
            self.linear_weight = net.linear.weight.detach().clone()
            self.linear_bias = net.linear.bias.detach().clone()
        self.linear_padding = net.linear.padding
        self.conv2_padding = conv2.padding

    def __call__(self, corr: Tensor) -> Tensor:
        """(N, 225, H, W) correlation -> (N, P, H, W) transformation parameters (float32, contiguous)."""
        return self.from_channels_last(corr.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format))

    def from_channels_last(self, corr_hwc: Tensor) -> Tensor:
        """(N, H, W, 225) correlation (overwritten) -> (N, P, H, W) parameters."""
        q, scale = self.quantize_input(corr_hwc)
        y = self.conv1.quantized(q.permute(0, 3, 1, 2), scale)  # (N, 128, H, W) channels-last
        y = F.conv2d(y, self.conv2_weight, self.conv2_bias, padding=self.conv2_padding).relu_()  # float32
        return F.conv2d(y, self.linear_weight, self.linear_bias, padding=self.linear_padding).contiguous()


    @staticmethod
    def quantize_input(corr_hwc: Tensor) -> tuple[Tensor, float]:
        """(N, H, W, 225) correlation (overwritten) -> (uint8 (N, H, W, 225), scale): TransformNet's input
        ``ReLU(corr) / (||ReLU(corr)|| + 1e-6)`` quantised with the scale ``max / 255`` in one multiply per
        location: ``q = round(ReLU(corr) * 255 / (max * (||.|| + 1e-6)))``."""
        r = corr_hwc.clamp_(min=0)  # (N, H, W, C) in place
        norm = torch.linalg.vector_norm(r, dim=-1, keepdim=True).add_(1e-6)  # (N, H, W, 1)
        top = float((r.amax(dim=-1, keepdim=True) / norm).amax()) if r.numel() else 0.0
        scale = top / 255.0 if top > 0 else 1.0
        return r.mul_(norm.reciprocal_().mul_(1.0 / scale)).round_().to(torch.uint8), scale  # values in [0, 255]


@functools.cache
def int8_supported() -> bool:
    """True when this PyTorch build and CPU run oneDNN's int8 convolution (checked once on a tiny input)."""
    if not hasattr(torch.ops, "onednn") or not hasattr(torch.ops.onednn, "qconv2d_pointwise"):
        return False
    try:
        conv = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            conv.weight.fill_(0.5)
            conv.bias.zero_()
            out = _QuantConvReLU(conv.weight, conv.bias, padding=1)(torch.ones(1, 3, 4, 4))
        return bool(torch.allclose(out[0, :, 1, 1], torch.full((4,), 13.5), atol=0.2))
    except (RuntimeError, NotImplementedError, AttributeError):
        return False


class Int8TransformCache(WeightsDerivedCache):
    """The int8 copy of one TransformNet (``value``), built on first use and rebuilt when its weights change
    (:class:`~os2d.model.backbone.fuse.WeightsDerivedCache`)."""

    def get(self, net: TransformNet) -> Int8TransformNet:
        return self._lookup(net, lambda: Int8TransformNet(net))
