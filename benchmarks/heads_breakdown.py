"""Where the heads' time goes, stage by stage, in float32 and with the int8 TransformNet (issue 15).

The heads of the default model on a real photo at default settings (``image_size="auto"``): the inputs of the
largest ``Os2dModel.heads`` call are captured, then each stage of ``os2d.model.head._head_chunk`` is re-run on
them alone (one thread, median of ``--repeats``). The stages follow the library's code path for each
precision; their sum is checked against the whole head timed the same way.

    python benchmarks/heads_breakdown.py --set demo --repeats 7
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.evaluation.detector_method import DetectorMethod
from os2d.evaluation.harness import run_method
from os2d.model.correlation import correlate, correlate_channels_last, l2_normalize
from os2d.model.grids import grid_corners, params_to_affine, unit_grid_in_channel_layout
from os2d.model.head import os2d_head
from os2d.model.int8_transform import Int8TransformNet
from os2d.model.resample import pool_mask, sample_per_channel_unit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_probe import CapturedHeads, load_set  # noqa: E402
from speed import median_time  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="demo")
    ap.add_argument("--max-images", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    args = ap.parse_args()
    torch.set_num_threads(1)
    det = Detector.from_weights("default", config=InferenceConfig(verify_rescore=0.0))  # the heads alone
    model = det.model.eval()
    cap = CapturedHeads(model)
    run_method(DetectorMethod(det), load_set(args.set, args.synth_dir), config=det.config, progress=False,
               max_images=args.max_images)
    cap.restore()
    features, kernels, _ = max(cap.calls, key=lambda c: c[0].shape[-1] * c[0].shape[-2] * c[1].shape[0])
    cfg = model.config
    b, _, h, w = features.shape
    k, s = kernels.shape[0], cfg.class_grid_size
    n = b * k
    border = cfg.pool_border
    cells = range(border, s - border)
    inner_idx = torch.tensor([q * s + p for q in cells for p in cells])
    mask = pool_mask(s, border)[inner_idx]
    net = model.transform_net
    q8 = Int8TransformNet(net)
    conv1, bn1, _, conv2, bn2, _ = net.conv
    rows: list[tuple[str, str, float]] = []

    def stage(arm: str, name: str, fn: Callable[[], Any]) -> Any:
        rows.append((arm, name, median_time(fn, args.repeats)))
        return fn()

    with torch.inference_mode():
        # float32: the library's TransformNet module, layer by layer
        corr = stage("fp32", "correlation (225 cells)", lambda: correlate(features, kernels).reshape(n, s * s, h, w))
        x = stage("fp32", "ReLU + L2 norm", lambda: l2_normalize(corr.relu(), dim=1, eps=1e-6))
        y1 = stage("fp32", "conv 7x7 225->128 + BN + ReLU", lambda: F.relu(bn1(conv1(x))))
        y2 = stage("fp32", "conv 5x5 128->64 + BN + ReLU", lambda: F.relu(bn2(conv2(y1))))
        params = stage("fp32", "conv 5x5 64->6", lambda: net.linear(y2))
        corr_inner = stage("fp32", "inner cells (slice)", lambda: corr[:, inner_idx])
        # int8: the library's Int8TransformNet path
        corr_cl = stage("int8", "correlation, channels-last", lambda: correlate_channels_last(features, kernels))
        stage("int8", "inner cells (2nd GEMM)",
              lambda: correlate(features, kernels[:, inner_idx]).view(n, len(inner_idx), h, w))

        # the library's quantisation (on a copy: it works in place)
        q, scale = stage("int8", "ReLU + L2 norm + quantise",
                         lambda: q8.quantize_input(corr_cl.view(n, h, w, s * s).clone()))
        z1 = stage("int8", "conv 7x7 in int8 (oneDNN)", lambda: q8.conv1.quantized(q.permute(0, 3, 1, 2), scale))
        z2 = stage("int8", "conv 5x5 128->64 (float32)",
                   lambda: F.conv2d(z1, q8.conv2_weight, q8.conv2_bias, padding=q8.conv2_padding).relu_())
        stage("int8", "conv 5x5 64->6 (float32)",
              lambda: F.conv2d(z2, q8.linear_weight, q8.linear_bias, padding=q8.linear_padding).contiguous())
        # shared by both: alignment, resampling, pooling, boxes
        theta = stage("both", "affine (+ inversion)", lambda: params_to_affine(params, invert=cfg.invert_transform))
        grid = stage("both", "grid of the inner cells",
                     lambda: unit_grid_in_channel_layout(theta, s, h, w, inner_idx))
        stage("both", "resample + pool",
              lambda: torch.einsum("nchw,c->nhw", sample_per_channel_unit(corr_inner, grid), mask))
        stage("both", "corners + boxes",
              lambda: grid_corners(theta, box_size=cfg.anchor_size, stride=float(model.stride)))
        whole = {arm: median_time(lambda a=arm: os2d_head(features, kernels, net if a == "fp32" else q8,
                                                          invert_transform=cfg.invert_transform, grid_size=s,
                                                          pool_border=border), args.repeats)
                 for arm in ("fp32", "int8")}

    shared = sum(t for arm, _, t in rows if arm == "both")
    print(f"set {args.set}: largest heads call {k} class views x {h}x{w} cells; 1 thread; median of {args.repeats}")
    print(f"{'arm':<5} {'stage':<34}{'ms/view':>9}{'share':>8}")
    print("-" * 56)
    for arm in ("fp32", "int8"):
        total = sum(t for a, _, t in rows if a == arm) + shared
        for a, name, t in rows:
            if a in (arm, "both"):
                print(f"{arm:<5} {name:<34}{1000 * t / n:>9.2f}{100 * t / total:>7.1f}%")
        print(f"{arm:<5} {'sum of the stages':<34}{1000 * total / n:>9.2f}")
        print(f"{arm:<5} {'the whole head (os2d_head)':<34}{1000 * whole[arm] / n:>9.2f}")
        print("-" * 56)
    print(f"int8 / fp32 whole head: {whole['fp32'] / whole['int8']:.2f}x; the stages both share are "
          f"{100 * shared / whole['fp32']:.0f}% of the float32 head, {100 * shared / whole['int8']:.0f}% of the int8 one")


if __name__ == "__main__":
    main()
