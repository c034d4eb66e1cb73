"""Inference copies of a backbone with every BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``, so
``bn(conv(x))`` equals one convolution with weight ``W * s`` and bias ``(b - mean) * s + beta``, where
``s = gamma / sqrt(var + eps)``. The folded copy skips one full pass over every feature map per BatchNorm
(``benchmarks/speed.py``, 960x1280 on a 2-core CPU: ResNet-50 features 20% faster, EfficientNet-Lite0 34%)
and matches the original to float32 round-off. The original module (its state dict, its training) is never
touched; the copy costs one more set of backbone weights in memory.

Backbones whose forward has no shape-dependent Python (``jit_trace_safe = True``: the ResNet trunk) go one step
further on CPU: :func:`optimized_copy` traces the folded copy once on a small input, freezes it and lets
TorchScript's ``optimize_for_inference`` fuse each convolution with the ReLU and the residual addition after it
(oneDNN post-ops), which removes the separate passes over the largest maps (ResNet-50 at 960x1280: another ~14%
on top of the folding). EfficientNet-Lite is not traced: its "same" padding depends on the input size, and its
depthwise convolutions ran slower in that form.

Which backbone inference runs is one typed setting, :class:`InferencePath`, held by the model
(``Os2dModel.inference_path``); the copy lives in a :class:`FusedBackboneCache`.
"""

from __future__ import annotations

import copy
import enum
import warnings
from typing import Any

import torch
from torch import Tensor, nn


class InferencePath(str, enum.Enum):
    """The backbone that inference (eval mode, autograd off) runs. Training, autograd, tracing, ``torch.compile``
    and ONNX export always run the plain backbone, and so do backbones without ``conv_bn_pairs()``."""

    PLAIN = "plain"  # the backbone itself: every BatchNorm is a separate pass
    FOLDED = "folded"  # the BatchNorm-folded copy (:func:`fused_copy`)
    FOLDED_JIT = "folded+jit"  # ... traced and optimised by TorchScript (:func:`optimized_copy`) on CPU for
    # backbones with ``jit_trace_safe = True``; elsewhere the same as FOLDED


DEFAULT_INFERENCE_PATH = InferencePath.FOLDED_JIT  # the fastest measured (benchmarks/speed.py), exact to round-off


def _set(module: nn.Module, name: str, value: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, attr, value)


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (its running statistics and affine parameters) into ``conv`` in place."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    scale = torch.rsqrt(bn.running_var + bn.eps)  # (C,)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
    conv.bias = nn.Parameter((bias * scale + shift).to(conv.weight.dtype), requires_grad=False)


def fused_copy(backbone: nn.Module) -> nn.Module:
    """An eval-mode, gradient-free copy of ``backbone`` with its conv-BN pairs folded.

    The backbone lists its pairs with ``conv_bn_pairs()`` -> [(conv name, bn name), ...]; every pair must be a
    convolution whose output goes only to that BatchNorm.
    """
    fused = copy.deepcopy(backbone).eval()
    for p in fused.parameters():
        p.requires_grad_(False)
    for conv_name, bn_name in backbone.conv_bn_pairs():
        conv, bn = fused.get_submodule(conv_name), fused.get_submodule(bn_name)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            raise TypeError(f"{conv_name} -> {bn_name} is not a Conv2d -> BatchNorm2d pair")
        fold_conv_bn(conv, bn)
        _set(fused, bn_name, nn.Identity())
    if hasattr(fused, "mark_folded"):  # e.g. EfficientNet-Lite: conv + ReLU6 as one call from now on
        fused.mark_folded()
    return fused


def optimized_copy(backbone: nn.Module) -> nn.Module:
    """:func:`fused_copy` traced on a 64x64 input, frozen and optimised for CPU inference by TorchScript.

    Only for backbones with ``jit_trace_safe = True`` (no Python that depends on the input size, so one trace
    serves every size). Falls back to the eager folded copy, with a warning, if TorchScript fails.
    """
    fused = fused_copy(backbone)
    if not getattr(backbone, "jit_trace_safe", False):
        return fused
    example = torch.rand(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated; pinned torch keeps it
            traced = torch.jit.trace(fused, example, check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    except Exception as err:  # an unusual torch build: the eager folded copy is exact and nearly as fast
        warnings.warn(f"TorchScript optimisation of the backbone failed ({err}); using the eager folded copy",
                      RuntimeWarning, stacklevel=2)
        return fused


def weight_tensors(module: nn.Module) -> tuple[Tensor, ...]:
    """Every parameter and buffer of ``module`` and its submodules (one walk of the module tree; a tensor shared
    by two submodules appears twice)."""
    out: list[Tensor] = []
    for m in module.modules():
        out.extend(t for t in m._parameters.values() if t is not None)
        out.extend(t for t in m._buffers.values() if t is not None)
    return tuple(out)


class WeightsDerivedCache:
    """One object derived from a module's weights, rebuilt when any parameter or buffer of the module is replaced
    (another storage), modified in place (its version counter moved) or changes dtype, or when ``extra`` differs.
    Never part of a state dict; copies and pickles of the cache are empty and rebuild on use."""

    def __init__(self) -> None:
        self.clear()

    @property
    def value(self) -> Any:
        """The cached object (None before the first lookup)."""
        return self._value

    def _lookup(self, module: nn.Module, build: Any, *extra: Any, tensors: tuple[Tensor, ...] | None = None) -> Any:
        """The cached object, rebuilt by ``build()`` when the key changed (``tensors``: the module's parameters
        and buffers when the caller has them already)."""
        tensors = weight_tensors(module) if tensors is None else tensors
        key = (*extra, *((t.data_ptr(), t._version, t.dtype) for t in tensors))
        if self._value is None or self._key != key:
            self._value, self._key = build(), key
        return self._value

    def clear(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._value: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.clear()


class FusedBackboneCache(WeightsDerivedCache):
    """The inference copy of one backbone, built on first use and reused until the backbone changes.

    Invalidation rule: :meth:`get` rebuilds the copy when the requested kind (traced or eager) differs from the
    cached one, or when any parameter or buffer of the backbone has been replaced (another storage:
    ``.to()``, ``load_state_dict(assign=True)``), modified in place (its version counter moved: optimizer
    steps, ``load_state_dict``, ``mul_``) or changed dtype since the copy was built. The copy is never part of a
    state dict; copies and pickles of a cache are empty (a TorchScript module does not pickle) and rebuild on use.
    """

    @property
    def module(self) -> nn.Module | None:
        """The cached copy (None before the first :meth:`get`)."""
        return self._value

    def get(self, backbone: nn.Module, path: InferencePath) -> nn.Module:
        """The copy of ``backbone`` for ``path`` (FOLDED or FOLDED_JIT), rebuilt per the invalidation rule."""
        if path is InferencePath.PLAIN:
            raise ValueError("the plain path runs the backbone itself, not a cached copy")
        tensors = weight_tensors(backbone)
        jit = (path is InferencePath.FOLDED_JIT and getattr(backbone, "jit_trace_safe", False)
               and all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.int64) for t in tensors))
        return self._lookup(backbone, lambda: optimized_copy(backbone) if jit else fused_copy(backbone), jit,
                            tensors=tensors)
