"""The second look against the other classes: look-alike separation (issue 14).

The second look (:mod:`os2d.inference.verify`) scores a detection's crop by its agreement v with the detection's
class. With ``verify_rivals`` = delta > 0 the same crop is also compared with every other class of the gallery, r
being the best of those agreements, and the factor is multiplied by ``(v / max(v, r)) ** delta``: a crop that looks
more like another class goes down.

Per set, one detection pass at default settings with the second look off (the raw detections, capped at 100), then
per image :func:`os2d.inference.verify.verify_detections` once per arm (delta), every arm on the same raw detections,
timed in turn. VOC mAP at IoU 0.5 and 0.7, recall, seconds per image of the second look.

Rule, written before the first measurement (``~/os2d-runs/c20/rivals_rule.txt``): arms delta in {0, 1, 2, 4}; the arm
with the best mean mAP@0.5 over the tuning sets (``synth-val``, ``fl27-train``) becomes the default only if the mean
gains >= 0.5, neither set loses more than 0.3, the mean mAP@0.7 is at most 0.5 lower and the second look takes at
most 10% longer on each set. Held-out sets (``fl27-val``, ``demo``) only afterwards.

    python benchmarks/verify_rivals.py --sets synth-val fl27-train
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from os2d.config import InferenceConfig
from os2d.inference.verify import verify_detections

sys.path.insert(0, str(Path(__file__).resolve().parent))
from second_look_arms import add_set_args, print_table, run_arms  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_set_args(ap)
    ap.add_argument("--deltas", nargs="+", type=float, default=[0.0, 1.0, 2.0, 4.0], help="the first is the baseline")
    args = ap.parse_args()
    base = InferenceConfig()

    def look(det, raw, image, delta, _context):
        g = det.gallery
        return verify_detections(det.model, raw, image, g.kernels, g.view_class, g.view_aspect, base.verify_rescore,
                                 crop=base.verify_crop, top=base.verify_top, max_detections=base.max_detections,
                                 reshape_top=base.reshape_top, size=base.verify_size, rival_power=delta)

    rows = run_arms(args, args.deltas, look, raw_cap=base.verify_top)
    print_table("the second look against the other classes, (v / max(v, r))^delta", rows, "delta", lambda d: f"{d:g}")


if __name__ == "__main__":
    main()
