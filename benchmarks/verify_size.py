"""A cheaper second look: smaller crops (issue 14, time at default settings).

The second look (:mod:`os2d.inference.verify`) resamples each of an image's 100 best detections to the class image's
size (area ``class_image_size``^2 = 240^2) and encodes the crop with the backbone: about a third of a detection's
time at default settings. Here the crops are resampled to area ``s``^2 instead and compared with class grids encoded
at the same side (``own``: the class views re-encoded at area ``s``^2) or with the gallery's own kernels
(``shared``). The shape search uses the same side.

Per set, one detection pass at default settings with the second look off (the raw detections, capped at 100), then
per image :func:`os2d.inference.verify.verify_detections` once per arm, every arm on the same raw detections, timed
in turn. VOC mAP at IoU 0.5 and 0.7, recall, seconds per image of the second look.

Rule, written before the first measurement (``~/os2d-runs/c19/verify_size_rule.txt``): arms s in {192, 160} x
{own, shared} against s = 240. Among the arms with mAP@0.5 within 0.3 of the default on each tuning set
(``synth-val``, ``fl27-train``), mean mAP@0.7 within 0.5 and recall@0.5 at most 0.3 lower on either set, the fastest
becomes the default; if none passes, the default stays. Held-out sets (``fl27-val``, ``demo``) only afterwards.

    python benchmarks/verify_size.py --sets synth-val fl27-train
    python benchmarks/verify_size.py --sets demo fl27-val
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from os2d.config import InferenceConfig
from os2d.evaluation.harness import _load_class_images
from os2d.evaluation.metrics import evaluate_detections
from os2d.inference.verify import verify_detections

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_probe import load_set, raw_second_look_inputs  # noqa: E402


def parse_arm(text: str) -> tuple[int, str]:
    """``"160:own"`` -> (160, "own")."""
    side, _, kind = text.partition(":")
    return int(side), kind or "own"


@contextmanager
def class_size(model, side: int):
    """``model.config.class_image_size`` set to ``side`` inside the block."""
    old = model.config
    model.config = replace(old, class_image_size=side)
    try:
        yield
    finally:
        model.config = old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["synth-val", "fl27-train"])
    ap.add_argument("--weights", default="default")
    ap.add_argument("--arms", nargs="+", type=parse_arm,
                    default=[(240, "own"), (192, "own"), (192, "shared"), (160, "own"), (160, "shared")],
                    help="side:kernels, the first is the baseline (default: 240:own 192:own 192:shared 160:own "
                         "160:shared)")
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
        g, model = det.gallery, det.model
        kernels = {}
        for side, kind in args.arms:  # the class grids each arm compares with, in the gallery's view order
            if kind == "shared" or side == model.config.class_image_size:
                kernels[(side, kind)] = g.kernels
                continue
            with class_size(model, side):
                encoded = [det.encode_class_images(list(imgs)).kernels
                           for imgs in _load_class_images(load_set(set_name, args.synth_dir))]
            kernels[(side, kind)] = torch.cat(encoded)
            assert kernels[(side, kind)].shape == g.kernels.shape
        dets: dict[tuple[int, str], list] = {arm: [] for arm in args.arms}
        seconds = dict.fromkeys(args.arms, 0.0)
        for raw, image in raws:
            for side, kind in args.arms:
                t0 = time.perf_counter()
                with class_size(model, side):
                    dets[(side, kind)].append(verify_detections(
                        model, raw, image, kernels[(side, kind)], g.view_class, g.view_aspect, base.verify_rescore,
                        crop=base.verify_crop, top=base.verify_top, max_detections=base.max_detections,
                        reshape_top=base.reshape_top))
                seconds[(side, kind)] += time.perf_counter() - t0
        for arm, d in dets.items():
            r5, r7 = (evaluate_detections(d, images, len(names), iou, False, class_names=names) for iou in (0.5, 0.7))
            rows.append((set_name, len(images), arm, 100 * r5.map, 100 * r5.recall, 100 * r7.map,
                         seconds[arm] / len(images)))
            print(f"{set_name} {arm}: mAP@0.5 {100 * r5.map:.2f} mAP@0.7 {100 * r7.map:.2f}", flush=True)
    print(f"\nthe second look at crop side s, default settings, {torch.get_num_threads()} threads")
    print(f"{'set':<11}{'imgs':>5}{'side':>6} {'kernels':<8}{'mAP@0.5':>9}{'d':>7}{'recall':>8}{'mAP@0.7':>9}{'d':>7}"
          f"{'look s/img':>12}")
    print("-" * 82)
    first: dict[str, tuple[float, float]] = {}
    for s, n, (side, kind), m5, r5, m7, sec in rows:
        b5, b7 = first.setdefault(s, (m5, m7))
        print(f"{s:<11}{n:>5}{side:>6} {kind:<8}{m5:>9.2f}{m5 - b5:>+7.2f}{r5:>8.1f}{m7:>9.2f}{m7 - b7:>+7.2f}"
              f"{sec:>12.3f}")


if __name__ == "__main__":
    main()
