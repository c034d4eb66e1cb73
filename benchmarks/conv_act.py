"""Convolution + ReLU6 and convolution + residual addition as one oneDNN call each in the folded EfficientNet-Lite
backbone, against separate passes.

The BatchNorm-folded inference copy of the default model's backbone (as ``Os2dModel.extract_features`` runs it) is
timed whole in three arms: every ReLU6 and every shortcut addition as its own pass (both flags of ``mark_folded``
unset), the ReLU6 fused, and both fused (the default), on a photo of 1024x1365 and on a batch of 16 second-look crops
of 160x160, in float32 and under bfloat16 autocast (``--trunk-precision`` / ``--verify-precision bf16``, where the
CPU has bf16 dot products; the addition is fused in float32 only): median of ``--repeats``, the arms alternating in
one process, and the largest difference of each arm's features from the separate passes'.

    python benchmarks/conv_act.py
"""

from __future__ import annotations

import argparse
import copy

from os2d.runtime import tune_allocator

tune_allocator()  # as the command line does, before torch is imported

import torch  # noqa: E402
from round_robin import alternating_medians, backbone_inputs  # noqa: E402  (benchmarks/, the script's folder)
from torch import Tensor, nn  # noqa: E402

from os2d.detector import Detector  # noqa: E402
from os2d.model.backbone.conv_act import fused_relu6_available  # noqa: E402
from os2d.model.trunk_precision import bf16_applies  # noqa: E402


def refolded(fused: nn.Module, *, fuse_relu6: bool, fuse_add: bool) -> nn.Module:
    """A copy of the folded backbone with the given fusions (the others as separate passes)."""
    other = copy.deepcopy(fused)
    other.mark_folded(fuse_relu6=fuse_relu6, fuse_add=fuse_add)
    return other


def timed(arms: dict[str, nn.Module], x: Tensor, repeats: int, bf16: bool) -> tuple[dict[str, float],
                                                                                    dict[str, float]]:
    """Median seconds per arm (:func:`round_robin.alternating_medians`) and each arm's largest absolute difference
    from the first arm's output."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        times, outs = alternating_medians({name: lambda m=m: m(x) for name, m in arms.items()}, repeats)
    first = next(iter(outs.values())).float()
    return times, {name: float((out.float() - first).abs().max()) for name, out in outs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="default")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    model = Detector.from_weights(args.weights).model.eval()
    fused = model.inference_cache.get(model.backbone, model.inference_path)
    if not getattr(fused, "fuse_relu6", False) or not fused_relu6_available():
        raise SystemExit("no fused convolution + ReLU6 here (not an EfficientNet-Lite backbone, or no oneDNN op)")
    arms = {"separate": refolded(fused, fuse_relu6=False, fuse_add=False),
            "relu6": refolded(fused, fuse_relu6=True, fuse_add=False), "both": fused}
    inputs = backbone_inputs()
    print(f"backbone {model.config.backbone}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print("| input | precision | separate s | ReLU6 fused s | both fused s | speed-up (ReLU6) | speed-up (both) "
          "| max |diff| (ReLU6, both) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    precisions = ["fp32"] + (["bf16"] if bf16_applies(torch.device("cpu")) else [])
    for name, x in inputs.items():
        x = model.backbone.normalize(x).contiguous(memory_format=torch.channels_last)
        for precision in precisions:
            t, diff = timed(arms, x, args.repeats, precision == "bf16")
            print(f"| {name} | {precision} | {t['separate']:.3f} | {t['relu6']:.3f} | {t['both']:.3f} | "
                  f"{t['separate'] / t['relu6']:.2f}x | {t['separate'] / t['both']:.2f}x | "
                  f"{diff['relu6']:.1e}, {diff['both']:.1e} |")


if __name__ == "__main__":
    main()
