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
import time
from pathlib import Path

import torch

from os2d.config import InferenceConfig
from os2d.evaluation.metrics import evaluate_detections
from os2d.inference.verify import verify_detections

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_probe import raw_second_look_inputs  # noqa: E402


def parse_arm(text: str) -> tuple[int, str]:
    """``"25:floor"`` -> (25, "floor")."""
    k, _, rest = text.partition(":")
    return int(k), rest or "floor"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["synth-val", "fl27-train"])
    ap.add_argument("--weights", default="default")
    ap.add_argument("--arms", nargs="+", type=parse_arm, default=[(100, "drop"), (40, "floor"), (25, "floor"),
                                                                   (15, "floor")],
                    help="K:rest, the first is the baseline (default: 100:drop 40:floor 25:floor 15:floor)")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--every", type=int, default=1, help="every n-th image of the set")
    ap.add_argument("--raw-cap", type=int, default=100, help="raw detections kept per image (the default's cap)")
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    args = ap.parse_args()
    base = InferenceConfig()
    rows = []
    for set_name in args.sets:
        raw_config = base.replace(max_detections=args.raw_cap, verify_rescore=0.0)
        names, images, det, raws = raw_second_look_inputs(set_name, args.synth_dir, args.weights, raw_config,
                                                           every=args.every, max_images=args.max_images)
        g = det.gallery
        dets: dict[tuple[int, str], list] = {arm: [] for arm in args.arms}
        seconds = dict.fromkeys(args.arms, 0.0)
        for raw, image in raws:
            for k, rest in args.arms:
                t0 = time.perf_counter()
                dets[(k, rest)].append(verify_detections(
                    det.model, raw, image, g.kernels, g.view_class, g.view_aspect, base.verify_rescore,
                    crop=base.verify_crop, top=k, max_detections=base.max_detections, reshape_top=base.reshape_top,
                    rest=rest, size=base.verify_size))
                seconds[(k, rest)] += time.perf_counter() - t0
        for arm, d in dets.items():
            r5, r7 = (evaluate_detections(d, images, len(names), iou, False, class_names=names) for iou in (0.5, 0.7))
            rows.append((set_name, len(images), arm, 100 * r5.map, 100 * r5.recall, 100 * r7.map,
                         seconds[arm] / len(images)))
            print(f"{set_name} {arm}: mAP@0.5 {100 * r5.map:.2f} mAP@0.7 {100 * r7.map:.2f}", flush=True)
    print(f"\nthe second look on the K best, default settings, {torch.get_num_threads()} threads")
    print(f"{'set':<11}{'imgs':>5}{'K':>5} {'rest':<6}{'mAP@0.5':>9}{'d':>7}{'recall':>8}{'mAP@0.7':>9}{'d':>7}"
          f"{'look s/img':>12}")
    print("-" * 80)
    first: dict[str, tuple[float, float]] = {}
    for s, n, (k, rest), m5, r5, m7, sec in rows:
        b5, b7 = first.setdefault(s, (m5, m7))
        print(f"{s:<11}{n:>5}{k:>5} {rest:<6}{m5:>9.2f}{m5 - b5:>+7.2f}{r5:>8.1f}{m7:>9.2f}{m7 - b7:>+7.2f}{sec:>12.3f}")


if __name__ == "__main__":
    main()
