"""Colour re-scoring (``InferenceConfig.colour_rescore``, :mod:`os2d.inference.colour`) on real photos (issue 14).

Per set, one detection pass at default settings with re-scoring off and no cap (the raw OS2D detections), then
for each gamma the library's own :func:`os2d.inference.colour.rescore_detections` (the same call the
:class:`~os2d.detector.Detector` makes: new score = score x colour agreement ** gamma, re-sorted, capped at 100)
and VOC mAP at IoU 0.5 and 0.7 and recall. Gamma 0 is the raw score.

Rule, written before the first measurement (``~/os2d-runs/c15b/rule.txt``): on the two tuning sets (``fl27-train``:
every 6th photo of the 14 FL27 training brands; ``synth-val``: 40 synthetic Grocery Store val shelves with
hue-rotated look-alikes), take the gamma in {0.5, 1, 2} with the best mean mAP@0.5; make re-scoring the default only
if that mean gains >= 1.0 point over gamma 0 and neither set loses more than 0.5. Held-out sets (``fl27-val``, the
6 unseen brands; ``demo``, the OS2D demo shelf at IoU 0.5) are measured for the chosen gamma only.

    python benchmarks/colour_rescore.py --sets synth-val fl27-train --gammas 0 0.5 1 2
    python benchmarks/colour_rescore.py --sets demo fl27-val --gammas 0 0.5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.evaluation.harness import _class_names, _load_class_images
from os2d.evaluation.metrics import evaluate_detections
from os2d.inference.colour import rescore_detections
from os2d.inference.pyramid import prepare_levels
from os2d.io import load_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_probe import load_set  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["synth-val", "fl27-train"])
    ap.add_argument("--gammas", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    ap.add_argument("--weights", default="default")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    ap.add_argument("--max-detections", type=int, default=100)
    args = ap.parse_args()
    rows = []
    for set_name in args.sets:
        dataset = load_set(set_name, args.synth_dir)
        config = InferenceConfig(colour_rescore=0.0, verify_rescore=0.0, max_detections=None)  # raw scores
        det = Detector.from_weights(args.weights, config=config)
        names = _class_names(dataset)
        for name, imgs in zip(names, _load_class_images(dataset), strict=True):
            det.add_class(name, list(imgs))
        g = det.gallery
        images = dataset.images[: args.max_images] if args.max_images else dataset.images
        raw, pictures, seconds, colour_seconds = [], [], 0.0, 0.0
        for rec in images:
            t0 = time.perf_counter()
            levels = prepare_levels(load_image(rec.path), config)
            raw.append(det.detect_pyramid(levels, rec.size()))
            seconds += time.perf_counter() - t0
            pictures.append(max(levels, key=lambda t: t.shape[-1] * t.shape[-2]))
        for gamma in args.gammas:
            t0 = time.perf_counter()
            dets = [rescore_detections(d, im, g.view_colour, g.view_class, gamma, max_detections=args.max_detections)
                    for d, im in zip(raw, pictures, strict=True)]
            colour_seconds = (time.perf_counter() - t0) / len(images)
            r5, r7 = (evaluate_detections(dets, images, len(names), iou, False, class_names=names) for iou in (0.5, 0.7))
            rows.append((set_name, len(images), f"{gamma:.2f}", 100 * r5.map, 100 * r5.recall, 100 * r7.map,
                         seconds / len(images), colour_seconds))
            print(f"{set_name} gamma {gamma}: mAP@0.5 {100 * r5.map:.2f}", flush=True)
    print_rescore_table(f"colour re-scoring, image_size auto, {torch.get_num_threads()} threads", rows, "gamma",
                        "colour s/img")


def print_rescore_table(title: str, rows: list[tuple], arm_name: str, extra_name: str) -> None:
    """Rows (set, images, arm, mAP@0.5, recall, mAP@0.7, s/img, extra s/img); the delta column is against the
    set's first row (the raw score)."""
    print(f"\n{title}")
    print(f"{'set':<11}{'imgs':>5} {arm_name:<14}{'mAP@0.5':>9}{'d':>7}{'recall':>8}{'mAP@0.7':>9}{'s/img':>7}"
          f"{extra_name:>14}")
    print("-" * 84)
    base: dict[str, float] = {}
    for r in rows:
        base.setdefault(r[0], r[3])
        print(f"{r[0]:<11}{r[1]:>5} {r[2]:<14}{r[3]:>9.2f}{r[3] - base[r[0]]:>+7.2f}{r[4]:>8.1f}{r[5]:>9.2f}"
              f"{r[6]:>7.2f}{r[7]:>14.4f}")

if __name__ == "__main__":
    main()
