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
from pathlib import Path

from os2d.config import InferenceConfig
from os2d.inference.verify import verify_detections

sys.path.insert(0, str(Path(__file__).resolve().parent))
from second_look_arms import add_set_args, arm_parser, print_table, run_arms  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_set_args(ap)
    ap.add_argument("--arms", nargs="+", type=arm_parser("image"), default=[(0, "image"), (10, "image")],
                    help="K:scope (image | class), the first is the baseline the added time is measured against "
                         "(default: 0:image 10:image, no search and the default)")
    args = ap.parse_args()
    base = InferenceConfig()

    def look(det, raw, image, arm, _):
        k, scope = arm
        g = det.gallery
        return verify_detections(det.model, raw, image, g.kernels, g.view_class, g.view_aspect, base.verify_rescore,
                                 crop=base.verify_crop, top=base.verify_top, max_detections=base.max_detections,
                                 reshape_top=k, reshape_scope=scope, size=base.verify_size)

    rows = run_arms(args, args.arms, look, raw_cap=base.verify_top)
    print_table("shape search at the second look", rows, "K scope", lambda a: f"{a[0]} {a[1]}", added=True)


if __name__ == "__main__":
    main()
