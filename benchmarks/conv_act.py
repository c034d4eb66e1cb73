"""Convolution + ReLU6 as one oneDNN call in the folded EfficientNet-Lite backbone, against the separate ReLU6 pass.

The BatchNorm-folded inference copy of the default model's backbone (as ``Os2dModel.extract_features`` runs it) is
timed whole, with the fused convolutions (``mark_folded``, the default) and with every ReLU6 as its own pass (the
flags unset), on a photo of 1024x1365 and on a batch of 16 second-look crops of 160x160, in float32 and under
bfloat16 autocast (``--trunk-precision`` / ``--verify-precision bf16``, where the CPU has bf16 dot products):
median of ``--repeats``, the two arms alternating in one process, and the largest difference between their features.

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


def separate_relu6(fused: nn.Module) -> nn.Module:
    """The folded copy with its ReLU6 as a separate pass after each convolution."""
    other = copy.deepcopy(fused)
    other.mark_folded(fuse_relu6=False)
    return other


def timed(arms: dict[str, nn.Module], x: Tensor, repeats: int, bf16: bool) -> tuple[dict[str, float], float]:
    """Median seconds per arm (:func:`round_robin.alternating_medians`) and the largest absolute difference."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        times, outs = alternating_medians({name: lambda m=m: m(x) for name, m in arms.items()}, repeats)
    a, b = outs.values()
    return times, float((a.float() - b.float()).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="default")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    model = Detector.from_weights(args.weights).model.eval()
    fused = model.inference_cache.get(model.backbone, model.inference_path)
    if not getattr(fused, "fuse_relu6", False) or not fused_relu6_available():
        raise SystemExit("no fused convolution + ReLU6 here (not an EfficientNet-Lite backbone, or no oneDNN op)")
    arms = {"separate ReLU6": separate_relu6(fused), "fused": fused}
    inputs = backbone_inputs()
    print(f"backbone {model.config.backbone}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print("| input | precision | separate ReLU6 s | fused s | speed-up | max |diff| |")
    print("|---|---|---:|---:|---:|---:|")
    precisions = ["fp32"] + (["bf16"] if bf16_applies(torch.device("cpu")) else [])
    for name, x in inputs.items():
        x = model.backbone.normalize(x).contiguous(memory_format=torch.channels_last)
        for precision in precisions:
            t, diff = timed(arms, x, args.repeats, precision == "bf16")
            print(f"| {name} | {precision} | {t['separate ReLU6']:.3f} | {t['fused']:.3f} | "
                  f"{t['separate ReLU6'] / t['fused']:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
