"""Shape search at the second look (``InferenceConfig.reshape_top``, issue 14: tighter boxes).

Per set, one detection pass at default settings with the second look off (the raw detections, capped at the
second look's 100), then per image the library's :func:`os2d.inference.verify.verify_detections` once per arm,
exactly as the :class:`~os2d.detector.Detector` calls it: ``--arms K:scope`` (``reshape_top`` K, ``reshape_scope``;
by default the second look alone, K = 0, and the default K = 10 of the image). VOC mAP at IoU 0.5 and 0.7, recall,
and the seconds each arm adds per image over the first (the calls timed in turn on every image).

Rule, written before the first measurement (``~/os2d-runs/c17/shape_rule.txt``): K = 10, betas {0.5, 1}. On the two
tuning sets (``synth-val``, ``fl27-train``) it becomes the default only if the mean mAP@0.5 gains >= 0.5 or the mean
mAP@0.7 gains >= 1.0, neither set loses more than 0.3 mAP@0.5, and it adds <= 0.3 s per image. Held-out sets
(``fl27-val``, ``demo``) are measured after the decision only.

    python benchmarks/shape_search.py --sets synth-val fl27-train
    python benchmarks/shape_search.py --sets demo fl27-val

Round 2, per class (rule ``~/os2d-runs/c19/reshape_scope_rule.txt``): the K best of each class instead of the 10 best
of the image; an arm passes if the mean mAP@0.7 gains >= 0.5 or the mean mAP@0.5 >= 0.3, neither set loses more than
0.3 mAP@0.5 and it adds <= 0.15 s per image:

    python benchmarks/shape_search.py --sets synth-val fl27-train --arms 10:image 2:class 4:class
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from os2d.config import InferenceConfig
from os2d.evaluation.metrics import evaluate_detections
from os2d.inference.verify import verify_detections

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_probe import raw_second_look_inputs  # noqa: E402


def parse_arm(text: str) -> tuple[int, str]:
    """``"4:class"`` -> (4, "class"); ``"10"`` -> (10, "image")."""
    k, _, scope = text.partition(":")
    return int(k), scope or "image"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["synth-val", "fl27-train"])
    ap.add_argument("--weights", default="default")
    ap.add_argument("--arms", nargs="+", type=parse_arm, default=[(0, "image"), (10, "image")],
                    help="K:scope (image | class), the first is the baseline the added time is measured against "
                         "(default: 0:image 10:image, no search and the default)")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--every", type=int, default=1, help="every n-th image of the set")
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    args = ap.parse_args()
    base = InferenceConfig()
    rows = []
    for set_name in args.sets:
        raw_config = base.replace(max_detections=base.verify_top, verify_rescore=0.0)
        names, images, det, raws = raw_second_look_inputs(set_name, args.synth_dir, args.weights, raw_config,
                                                           every=args.every, max_images=args.max_images)
        g = det.gallery
        arms: dict[tuple[int, str], list] = {arm: [] for arm in args.arms}
        seconds = dict.fromkeys(args.arms, 0.0)
        for raw, image in raws:
            for k, scope in arms:
                t0 = time.perf_counter()
                arms[(k, scope)].append(verify_detections(
                    det.model, raw, image, g.kernels, g.view_class, g.view_aspect, base.verify_rescore,
                    crop=base.verify_crop, top=base.verify_top, max_detections=base.max_detections, reshape_top=k,
                    reshape_scope=scope, size=base.verify_size))
                seconds[(k, scope)] += time.perf_counter() - t0
        baseline = args.arms[0]
        for k, dets in arms.items():
            r5, r7 = (evaluate_detections(dets, images, len(names), iou, False, class_names=names) for iou in (0.5, 0.7))
            rows.append((set_name, len(images), k, 100 * r5.map, 100 * r5.recall, 100 * r7.map, 100 * r7.recall,
                         (seconds[k] - seconds[baseline]) / len(images)))
            print(f"{set_name} reshape {k}: mAP@0.5 {100 * r5.map:.2f} mAP@0.7 {100 * r7.map:.2f}", flush=True)
    print(f"\nshape search at the second look, default settings, {torch.get_num_threads()} threads")
    print(f"{'set':<11}{'imgs':>5}{'K':>4} {'scope':<6}{'mAP@0.5':>9}{'d':>7}{'recall':>8}{'mAP@0.7':>9}{'d':>7}{'rec@0.7':>9}"
          f"{'added s/img':>13}")
    print("-" * 89)
    first: dict[str, tuple[float, float]] = {}
    for s, n, k, m5, r5, m7, r7, sec in rows:
        b5, b7 = first.setdefault(s, (m5, m7))
        print(f"{s:<11}{n:>5}{k[0]:>4} {k[1]:<6}{m5:>9.2f}{m5 - b5:>+7.2f}{r5:>8.1f}{m7:>9.2f}{m7 - b7:>+7.2f}{r7:>9.1f}{sec:>13.3f}")


if __name__ == "__main__":
    main()
