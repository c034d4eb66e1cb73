"""Where the default's time goes, and what bfloat16 does to the backbone alone.

1. Default settings (automatic scale, the second look) on every Nth image of a set, with ``Os2dModel.extract_features``
   and ``Os2dModel.heads`` timed around every call: seconds per image for the photo's backbone (probe and levels),
   the second look's crops through the backbone, the heads and the rest.
2. The backbone alone, float32 vs bf16 (``precision="bf16"``, where the CPU has bf16 dot products), median of 5 after
   a warm-up, in one process: one 1024x1365 photo and one batch of 16 crops of the second look's size (160x160), and the relative error of the
   bf16 crop features.

    python benchmarks/default_breakdown.py --set fl27-val --every 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from os2d.runtime import tune_allocator

tune_allocator()  # as the command line does, before torch is imported: OS2D_ALLOCATOR picks (os2d.runtime)

import torch  # noqa: E402

from os2d.config import InferenceConfig  # noqa: E402
from os2d.detector import Detector  # noqa: E402
from os2d.evaluation.harness import _class_names, _load_class_images  # noqa: E402
from os2d.io import load_image  # noqa: E402
from os2d.model.os2d import Os2dModel  # noqa: E402
from os2d.model.trunk_precision import bf16_applies  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_probe import load_set  # noqa: E402


def breakdown(det: Detector, images: list) -> dict[str, float]:
    """Seconds per image of each part of ``det.detect`` at default settings."""
    seconds: dict[str, float] = defaultdict(float)
    features, heads = Os2dModel.extract_features, Os2dModel.heads

    def timed_features(self, x, **kw):
        t0 = time.perf_counter()
        out = features(self, x, **kw)
        part = "backbone, second-look crops" if kw.get("align_to_anchors") is False else "backbone, photo"
        seconds[part] += time.perf_counter() - t0
        return out

    def timed_heads(self, *a, **kw):
        t0 = time.perf_counter()
        out = heads(self, *a, **kw)
        seconds["heads"] += time.perf_counter() - t0
        return out

    det.detect(load_image(images[0].path))  # warm-up (folded copy, class kernels)
    Os2dModel.extract_features, Os2dModel.heads = timed_features, timed_heads
    try:
        total = 0.0
        for rec in images:
            pil = load_image(rec.path)
            t0 = time.perf_counter()
            det.detect(pil)
            total += time.perf_counter() - t0
    finally:
        Os2dModel.extract_features, Os2dModel.heads = features, heads
    parts = {k: v / len(images) for k, v in seconds.items()}
    parts["rest"] = total / len(images) - sum(parts.values())
    parts["total"] = total / len(images)
    return parts


def backbone_times(model: Os2dModel, x: torch.Tensor, repeats: int = 5) -> dict[str, float]:
    """Median seconds of the backbone on ``x`` per precision (float32 first, then bf16, alternating)."""
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with torch.no_grad():
        for p in times:
            model.extract_features(x, align_to_anchors=False, precision=p)
        for _ in range(repeats):
            for p in times:
                t0 = time.perf_counter()
                model.extract_features(x, align_to_anchors=False, precision=p)
                times[p].append(time.perf_counter() - t0)
    return {p: statistics.median(t) for p, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="fl27-val", help="fl27-val | fl27-train | demo | synth-val")
    ap.add_argument("--every", type=int, default=30, help="every Nth image of the set")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    args = ap.parse_args()
    dataset = load_set(args.set, args.synth_dir)
    det = Detector.from_weights(args.weights)
    for name, imgs in zip(_class_names(dataset), _load_class_images(dataset), strict=True):
        det.add_class(name, list(imgs))
    images = dataset.images[:: args.every]
    parts = breakdown(det, images)
    print(f"{args.set}, every {args.every}th image ({len(images)}), default settings, {torch.get_num_threads()} threads")
    print("| part | s / image | share |")
    print("|---|---:|---:|")
    for k, v in parts.items():
        print(f"| {k} | {v:.2f} | {100 * v / parts['total']:.0f}% |")
    if not bf16_applies(torch.device("cpu")):
        print("no native bf16 dot products on this CPU: the backbone comparison is skipped")
        return
    model = det.model.eval()
    torch.manual_seed(0)
    side = InferenceConfig().verify_size or model.config.class_image_size  # the second look's crops
    crops, photo = torch.rand(16, 3, side, side), torch.rand(1, 3, 1024, 1365)
    with torch.no_grad():
        exact = model.extract_features(crops, align_to_anchors=False)
        fast = model.extract_features(crops, align_to_anchors=False, precision="bf16")
    print("| backbone input | fp32 s | bf16 s | speed-up |")
    print("|---|---:|---:|---:|")
    for name, x in (("photo 1024x1365", photo), (f"16 crops {side}x{side}", crops)):
        t = backbone_times(model, x)
        print(f"| {name} | {t['fp32']:.3f} | {t['bf16']:.3f} | {t['fp32'] / t['bf16']:.2f}x |")
    print(f"relative error of the bf16 crop features: {float((fast - exact).norm() / exact.norm()):.3f}")


if __name__ == "__main__":
    main()
