"""Shape search at the second look (``InferenceConfig.reshape_top``, issue 14: tighter boxes).

Per set, one detection pass at default settings with the second look off (the raw detections, capped at the
second look's 100), then per image the library's :func:`os2d.inference.verify.verify_detections` twice, exactly
as the :class:`~os2d.detector.Detector` calls it: the second look alone (``reshape_top`` 0) and with the shape search
on its ``--top`` best. VOC mAP at IoU 0.5 and 0.7, recall, and the seconds the search adds per image (the two calls
timed in turn on every image). ``--iou`` adds a column at another threshold (0.3 for the demo shelf's old table).

Rule, written before the first measurement (``~/os2d-runs/c17/shape_rule.txt``): K = 10, betas {0.5, 1}. On the two
tuning sets (``synth-val``, ``fl27-train``) it becomes the default only if the mean mAP@0.5 gains >= 0.5 or the mean
mAP@0.7 gains >= 1.0, neither set loses more than 0.3 mAP@0.5, and it adds <= 0.3 s per image. Held-out sets
(``fl27-val``, ``demo``) are measured after the decision only.

    python benchmarks/shape_search.py --sets synth-val fl27-train
    python benchmarks/shape_search.py --sets demo fl27-val
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["synth-val", "fl27-train"])
    ap.add_argument("--weights", default="default")
    ap.add_argument("--top", type=int, default=10, help="K: the best detections per image the search looks at")
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
        arms: dict[int, list] = {0: [], args.top: []}
        seconds = {0: 0.0, args.top: 0.0}
        for raw, image in raws:
            for k in arms:
                t0 = time.perf_counter()
                arms[k].append(verify_detections(det.model, raw, image, g.kernels, g.view_class, g.view_aspect,
                                                 base.verify_rescore, crop=base.verify_crop, top=base.verify_top,
                                                 max_detections=base.max_detections, reshape_top=k))
                seconds[k] += time.perf_counter() - t0
        for k, dets in arms.items():
            r5, r7 = (evaluate_detections(dets, images, len(names), iou, False, class_names=names) for iou in (0.5, 0.7))
            rows.append((set_name, len(images), k, 100 * r5.map, 100 * r5.recall, 100 * r7.map, 100 * r7.recall,
                         (seconds[k] - seconds[0]) / len(images)))
            print(f"{set_name} reshape_top {k}: mAP@0.5 {100 * r5.map:.2f} mAP@0.7 {100 * r7.map:.2f}", flush=True)
    print(f"\nshape search at the second look, default settings, {torch.get_num_threads()} threads")
    print(f"{'set':<11}{'imgs':>5}{'K':>4}{'mAP@0.5':>9}{'d':>7}{'recall':>8}{'mAP@0.7':>9}{'d':>7}{'rec@0.7':>9}"
          f"{'added s/img':>13}")
    print("-" * 82)
    first: dict[str, tuple[float, float]] = {}
    for s, n, k, m5, r5, m7, r7, sec in rows:
        b5, b7 = first.setdefault(s, (m5, m7))
        print(f"{s:<11}{n:>5}{k:>4}{m5:>9.2f}{m5 - b5:>+7.2f}{r5:>8.1f}{m7:>9.2f}{m7 - b7:>+7.2f}{r7:>9.1f}{sec:>13.3f}")


if __name__ == "__main__":
    main()
