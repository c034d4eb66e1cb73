"""The largest level of the automatic scale (``AutoScaleConfig.max_size``): small objects against time (issue 14).

The levels are ``probe_size * level_step^k`` (768 * sqrt(2)^k) within ``[min_size, max_size]``, so the default
``max_size`` 2048 stops the ladder at 1536: an object whose side is under ~1/10 of a photo's sqrt(w*h) is smaller
than the class grid's 240 px even there. Each arm is the default with another ``max_size`` (2200 adds the level
2172, 3100 adds 2172 and 3072). Every photo runs every arm in turn (order rotated per photo) after a warm-up; per
arm: seconds per image, its ratio to the first arm, mAP and recall at IoU 0.5 and 0.7.

Rule, written before the first measurement (``~/os2d-runs/c23/max_size_rule.txt``): the arm with the best mAP@0.5 on
the FL27 tuning set among those that gain >= 1.0 there over 2048, lose <= 0.3 on the synthetic val shelves and cost
<= 20% more seconds per image on the FL27 tuning set; none: 2048 stays.

    python benchmarks/auto_max_size.py --sets fl27-train synth-val --max-sizes 2048 2200 3100
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from os2d.runtime import tune_allocator

tune_allocator()  # as the command line does, before torch is imported

import torch  # noqa: E402

from os2d.config import AutoScaleConfig  # noqa: E402
from os2d.evaluation.metrics import evaluate_detections  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from round_robin import run_round_robin  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["fl27-train", "synth-val"])
    ap.add_argument("--max-sizes", nargs="+", type=int, default=[2048, 2200, 3100], help="the first is the baseline")
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--weights", default="default")
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    args = ap.parse_args()
    arms = {m: {"auto_scale": replace(AutoScaleConfig(), max_size=m)} for m in args.max_sizes}
    rows = []
    for set_name in args.sets:
        names, images, seconds, dets = run_round_robin(set_name, arms, weights=args.weights, every=args.every,
                                                       synth_dir=args.synth_dir)
        for arm in arms:
            r5, r7 = (evaluate_detections(dets[arm], images, len(names), iou, False, class_names=names)
                      for iou in (0.5, 0.7))
            rows.append((set_name, len(images), arm, seconds[arm], 100 * r5.map, 100 * r5.recall,
                         100 * r7.map))
            print(f"{set_name} max_size {arm}: mAP@0.5 {100 * r5.map:.2f}", flush=True)
    print(f"\nautomatic scale's max_size, default settings otherwise, {torch.get_num_threads()} threads, one process")
    print("| set | photos | max_size | s / image | time ratio | mAP@0.5 | d | recall@0.5 | mAP@0.7 | d |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    first: dict[str, tuple] = {}
    for row in rows:
        set_name, n, arm, s, m5, rec5, m7 = row
        b = first.setdefault(set_name, row)
        print(f"| {set_name} | {n} | {arm} | {s:.2f} | {s / b[3]:.2f}x | {m5:.2f} | {m5 - b[4]:+.2f} | {rec5:.1f} "
              f"| {m7:.2f} | {m7 - b[6]:+.2f} |")


if __name__ == "__main__":
    main()
