"""Speed and memory of the OS2D stages on this machine.

Prints a table: feature extraction s/image as inference runs (BatchNorm folded into the convolutions; for
ResNet also traced and optimised by TorchScript), with two in-process baselines timed round-robin with it
(the folded copy run eagerly, and the plain backbone with BatchNorm unfolded), heads s/image/class (median
of repeats; TransformNet in float32 and in int8, ``InferenceConfig.heads_precision``, timed round-robin), the simple per-channel loop resampling as an in-process baseline, and peak resident memory
of inference (measured before the baselines are built). Each backbone runs in its own
subprocess so that peak memory is per configuration.

    python benchmarks/speed.py --height 960 --width 1280 --classes 10 --backbones resnet50 efficientnet_lite0
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _interleaved(fns, repeats: int) -> list[float]:
    """Median seconds of each function, timed round-robin (one warm-up round)."""
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats + 1):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            if r:
                times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def run_one(backbone: str, height: int, width: int, classes: int, repeats: int, variant: str) -> dict:
    import torch.nn.functional as F

    from os2d.config import ModelConfig
    from os2d.model import build_os2d
    from os2d.model.resample import sample_per_channel_unit

    torch.manual_seed(0)
    cfg = ModelConfig.v2(backbone=backbone) if variant == "v2" else ModelConfig.v1(backbone=backbone)
    model = build_os2d(cfg, pretrained_backbone=False).eval()
    image = torch.rand(1, 3, height, width)
    class_images = [torch.rand(3, 240, 240) for _ in range(classes)]
    with torch.no_grad():
        feats = model.extract_features(image)
        kernels = model.class_kernels(class_images)
        t_cls = median_time(lambda: model.class_kernels(class_images[:1]), repeats)
        median_time(lambda: model.heads(feats, kernels, class_chunk=16), 1)
        # peak memory of inference as it runs (features + class kernels + heads), before the baseline copies
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # heads with TransformNet in float32 (exact) and int8 (InferenceConfig.heads_precision), round-robin
        t_heads, t_heads_int8 = _interleaved(
            [lambda: model.heads(feats, kernels, class_chunk=16),
             lambda: model.heads(feats, kernels, class_chunk=16, precision="int8")], repeats)

        def baseline(path: str):
            m = copy.deepcopy(model)  # its own cached inference copy, so that modes do not evict each other
            m.inference_path = path
            return lambda: m.extract_features(image)

        # in-process baselines, timed round-robin with the default so that machine noise hits all alike: the
        # folded copy run eagerly (no TorchScript), and BatchNorm as separate passes ("BN unfolded")
        t_feat, t_feat_eager, t_feat_plain = _interleaved(
            [lambda: model.extract_features(image), baseline("folded"), baseline("plain")], repeats)
        # resampling alone, same unit grid: one grid_sample (a batch element per channel) vs the reference's
        # "simple" loop of 225 grid_sample calls
        n, h, w = classes, feats.shape[-2], feats.shape[-1]
        corr = torch.rand(n, 225, h, w)
        grid = torch.rand(n, 225, h, w, 2) * 2 - 1

        def loop() -> None:
            for c in range(225):
                F.grid_sample(corr[:, c : c + 1], grid[:, c].reshape(n, -1, 1, 2), mode="bilinear",
                              padding_mode="border", align_corners=True)

        t_fast = median_time(lambda: sample_per_channel_unit(corr, grid), repeats)
        t_loop = median_time(loop, repeats)
    return {
        "backbone": backbone, "variant": variant, "image": f"{height}x{width}", "fm": f"{h}x{w}",
        "classes": classes, "features_s": t_feat, "features_eager_s": t_feat_eager,
        "features_unfolded_s": t_feat_plain, "class_image_s": t_cls,
        "heads_s_per_class": t_heads / classes, "heads_int8_s_per_class": t_heads_int8 / classes,
        "resample_fused_s_per_class": t_fast / classes, "resample_loop_s_per_class": t_loop / classes,
        "peak_rss_mb": peak_mb, "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["resnet50", "efficientnet_lite0"])
    ap.add_argument("--height", type=int, default=960)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variant", choices=["v1", "v2"], default="v2")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one backbone, print JSON
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.height, args.width, args.classes, args.repeats, args.variant)))
        return
    rows = []
    for bb in args.backbones:
        cmd = [sys.executable, __file__, "--one", bb, "--height", str(args.height), "--width", str(args.width),
               "--classes", str(args.classes), "--repeats", str(args.repeats), "--variant", args.variant]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{rows[0]['threads']} threads; median of {args.repeats} repeats")
    hdr = (f"{'backbone':<20}{'var':<5}{'image':<11}{'fm':<8}{'K':>4}{'features s':>12}{'eager fold':>12}{'BN unfolded':>12}"
           f"{'heads s/cls':>13}{'int8 s/cls':>12}{'ratio':>7}"
           f"{'resample 1 call':>16}{'225 calls':>11}{'ratio':>7}{'peak MB':>9}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        ratio = r["resample_loop_s_per_class"] / r["resample_fused_s_per_class"]
        print(f"{r['backbone']:<20}{r['variant']:<5}{r['image']:<11}{r['fm']:<8}{r['classes']:>4}"
              f"{r['features_s']:>12.3f}{r['features_eager_s']:>12.3f}{r['features_unfolded_s']:>12.3f}"
              f"{r['heads_s_per_class']:>13.4f}{r['heads_int8_s_per_class']:>12.4f}"
              f"{r['heads_s_per_class'] / r['heads_int8_s_per_class']:>6.2f}x"
              f"{r['resample_fused_s_per_class']:>16.4f}"
              f"{r['resample_loop_s_per_class']:>11.4f}{ratio:>6.1f}x{r['peak_rss_mb']:>9.0f}")


if __name__ == "__main__":
    main()
