"""A cheaper second look: look at fewer detections and keep the rest (issue 14, time at default settings).

The second look (:mod:`os2d.inference.verify`) encodes a crop per detection: at default settings its 100 crops are
about a third of a detection's time. Here it looks at an image's K best detections only and keeps the others with
their raw score times the image's lowest factor (``rest="floor"``), instead of looking at all 100 (``rest="drop"``
drops what was not looked at).

Per set, one detection pass at default settings with the second look off (the raw detections, capped at 100), then
per image the library's :func:`os2d.inference.verify.verify_detections` once per arm, as the
:class:`~os2d.detector.Detector` calls it, every arm on the same raw detections, timed in turn. VOC mAP at IoU 0.5
and 0.7, recall, seconds per image of the second look.

Rule, written before the first measurement (``~/os2d-runs/c18/verify_top_rule.txt``): arms K in {15, 25, 40} with
the floor against the default (K = 100). Among the arms with mAP@0.5 within 0.3 of the default on each tuning set
(``synth-val``, ``fl27-train``), mean mAP@0.7 within 0.5 and recall@0.5 not lower on either set, the smallest K
becomes the default; if none passes, the default stays. Held-out sets (``fl27-val``, ``demo``) only afterwards.

    python benchmarks/verify_top.py --sets synth-val fl27-train
    python benchmarks/verify_top.py --sets demo fl27-val
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
    ap.add_argument("--arms", nargs="+", type=arm_parser("floor"), default=[(100, "drop"), (40, "floor"), (25, "floor"),
                                                                   (15, "floor")],
                    help="K:rest, the first is the baseline (default: 100:drop 40:floor 25:floor 15:floor)")
    ap.add_argument("--raw-cap", type=int, default=100, help="raw detections kept per image (the default's cap)")
    args = ap.parse_args()
    base = InferenceConfig()

    def look(det, raw, image, arm, _):
        k, rest = arm
        g = det.gallery
        return verify_detections(det.model, raw, image, g.kernels, g.view_class, g.view_aspect, base.verify_rescore,
                                 crop=base.verify_crop, top=k, max_detections=base.max_detections,
                                 reshape_top=base.reshape_top, rest=rest, size=base.verify_size)

    rows = run_arms(args, args.arms, look, raw_cap=args.raw_cap)
    print_table("the second look on the K best", rows, "K rest", lambda a: f"{a[0]} {a[1]}")


if __name__ == "__main__":
    main()
