"""Arithmetic of the backbone at inference (``InferenceConfig.trunk_precision``).

``bf16`` runs the backbone under bfloat16 autocast where the hardware has bfloat16 dot products: CUDA devices that
support it, and x86 CPUs with AVX512-BF16 or AMX-BF16 (oneDNN kernels). The features come back as float32, so the
heads, the shortlist and the second look's cosines run exactly as with ``fp32``; only the features carry bf16
round-off (about 4% relative error on EfficientNet-Lite0 features). Elsewhere (CPUs without those instructions,
where oneDNN would emulate bfloat16 more slowly than float32; training; autograd; tracing; ONNX export) the
float32 trunk runs. ``fp32`` is the exact, reference-parity path. Its effect on detections is measured by
``benchmarks/trunk_precision.py`` (README, "Speed").
"""

from __future__ import annotations

import functools
import platform
from enum import Enum
from pathlib import Path

import torch


class TrunkPrecision(str, Enum):
    """Arithmetic of the backbone's convolutions at inference."""

    FP32 = "fp32"  # exact: the reference-parity path
    BF16 = "bf16"  # bfloat16 autocast where the device has bf16 dot products (float32 elsewhere)


@functools.cache
def cpu_bf16_native() -> bool:
    """True on x86 CPUs whose flags include AVX512-BF16 or AMX-BF16 and whose PyTorch has oneDNN bf16 kernels."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    native = any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
    try:
        return native and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_applies(device: torch.device) -> bool:
    """Whether the ``bf16`` trunk runs in bfloat16 on ``device`` (else it falls back to float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_bf16_native()


__all__ = ["TrunkPrecision", "bf16_applies", "cpu_bf16_native"]
