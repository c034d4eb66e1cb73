"""Convolution + ReLU6 in one oneDNN call, for the BatchNorm-folded inference copy of EfficientNet-Lite.

After BatchNorm folding (:mod:`os2d.model.backbone.fuse`) every expand and depthwise convolution of EfficientNet-Lite
is followed by a ReLU6, a separate pass over the convolution's output (the expanded activations are the largest
tensors of the network). oneDNN can apply the clamp inside the convolution as a post-op: PyTorch exposes that as
``torch.ops.mkldnn._convolution_pointwise`` (the op its compiler's CPU fusions call). Timed per layer on the default
model's activations of a 1024x1365 photo, the expand convolutions took 0.043 s instead of 0.072 s and the stride-1
depthwise ones 0.029 s instead of 0.036 s; the whole backbone gains less, 1.07x on the photo and 1.02x on a batch of
second-look crops, with outputs equal to the bit (``benchmarks/conv_act.py``).

The op is private, so it is used only where :func:`fused_relu6_dtype` allows: the op exists and, checked once per
process on a small input, gives the same values as the convolution followed by ReLU6; on the CPU, in float32 or,
under bfloat16 autocast (``trunk_precision`` / ``verify_precision`` "bf16"), in bfloat16 with the inputs cast as
autocast casts them; never under autograd, tracing or export (those run the plain convolution and ``F.relu6``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


@functools.cache
def _pointwise_op():
    """``torch.ops.mkldnn._convolution_pointwise`` (None where this PyTorch build lacks it)."""
    try:
        return torch.ops.mkldnn._convolution_pointwise.default
    except (AttributeError, RuntimeError):
        return None


@functools.cache
def fused_relu6_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether the fused op exists here and, in ``dtype`` (float32, or bfloat16 as CPU autocast runs convolutions),
    equals convolution + ReLU6 on a small case (dense and depthwise, stride 1 and 2, channels-last and not): checked
    once per process and dtype."""
    op = _pointwise_op()
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    g = torch.Generator().manual_seed(0)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    try:
        with torch.no_grad():
            for groups, stride in ((1, 1), (8, 2)):
                w, b = torch.randn(8, 8 // groups, 3, 3, generator=g).to(dtype), torch.randn(8, generator=g).to(dtype)
                for x in (torch.randn(2, 8, 9, 11, generator=g) * 4,
                          (torch.randn(2, 8, 9, 11, generator=g) * 4).contiguous(memory_format=torch.channels_last)):
                    x = x.to(dtype)
                    want = F.relu6(F.conv2d(x, w, b, stride, 1, 1, groups))
                    got = op(x, w, b, [1, 1], [stride, stride], [1, 1], groups, "hardtanh", [0.0, 6.0], "")
                    if got.shape != want.shape or got.dtype != want.dtype or not torch.allclose(
                            got.float(), want.float(), rtol=tol, atol=tol):
                        return False
    except RuntimeError:
        return False
    return True


def fused_relu6_dtype(x: Tensor, weight: Tensor) -> torch.dtype | None:
    """The dtype :func:`conv_relu6_fused` runs in for input ``x`` and ``weight``, or None where it must not run.

    float32 for float32 CPU tensors outside autocast; bfloat16 inside CPU bfloat16 autocast (what autocast would
    run the convolution in: inputs, weight and bias cast to bfloat16); None under autograd (a gradient needed), in
    other dtypes or autocast modes, while tracing or exporting, and where the op is missing or differs
    (:func:`fused_relu6_available`)."""
    if (x.device.type != "cpu" or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            or torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()):
        return None
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None
    else:
        dtype = torch.float32 if x.dtype == torch.float32 and weight.dtype == torch.float32 else None
    return dtype if dtype is not None and fused_relu6_available(dtype) else None


def conv_relu6_fused(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, ...],
                     padding: tuple[int, ...], dilation: tuple[int, ...], groups: int,
                     dtype: torch.dtype = torch.float32) -> Tensor:
    """``relu6(conv2d(x, weight, bias, stride, padding, dilation, groups))`` as one oneDNN call in ``dtype`` (from
    :func:`fused_relu6_dtype`; the tensors are cast to it as autocast would)."""
    op = _pointwise_op()
    x, weight = x.to(dtype), weight.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    return op(x, weight, bias, list(padding), list(stride), list(dilation), groups, "hardtanh", [0.0, 6.0], "")


__all__ = ["conv_relu6_fused", "fused_relu6_available", "fused_relu6_dtype"]
