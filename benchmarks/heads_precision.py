"""Heads in float32 vs int8 (``InferenceConfig.heads_precision``) on real photos, at default settings (issue 15).

Per set, in one process: the exact heads (``fp32``) and the int8 TransformNet (``int8``,
:mod:`os2d.model.int8_transform`) run the same ``os2d eval`` protocol at default settings (``image_size="auto"``).
Printed per set and arm: the heads' seconds per class view and level (``Os2dModel.heads`` timed around every call),
the speed-up over fp32, seconds per image, VOC mAP@0.5 and its difference to fp32, and the share of images whose
top-10 detections agree with fp32's:

- *same set*: the same 10 detections (one-to-one: same label, IoU >= 0.95), in any order;
- *same order*: the same labels in the same order with IoU >= 0.95 at every rank (near-equal scores may swap).

Rule fixed before the first measurement (``int8`` becomes the default only if it holds on every set):
|mAP(int8) - mAP(fp32)| <= 0.5 points and *same set* >= 95% of images.

Sets (``../shared/data``, see ``benchmarks/cascade_probe.py``): ``demo``, ``fl27-val`` (the 6 held-out brands,
592 images), ``fl27-train`` (the 14 training brands, every 6th image), ``synth-val`` (``--synth-dir``).

    python benchmarks/heads_precision.py --sets demo synth-val fl27-train fl27-val

``int8-exact`` (:mod:`os2d.inference.exact_values`): int8 finds the detections, float32 windows give the reported
ones their exact values; its heads time includes the windows. Its rule (``~/os2d-runs/c22/exact_rule.txt``, written
before its measurement): at default settings with the second look (``--second-look``), on both tuning sets
(``synth-val``, ``fl27-train``), |dmAP| <= 0.5, same top-10 set >= 95% and heads >= 1.5x faster than fp32.

    python benchmarks/heads_precision.py --sets synth-val fl27-train --second-look \
        --arms fp32 int8 int8-exact int8-exact:30 int8-exact:10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.evaluation.detector_method import DetectorMethod
from os2d.evaluation.harness import run_method
from os2d.ops.boxes import box_iou
from os2d.results import Detections

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_probe import TimedHeads, load_set, print_report  # noqa: E402

ARMS = ("fp32", "int8", "int8-exact")  # an arm "int8-exact:N" sets exact_top N


def arm_config(arm: str, second_look: bool) -> InferenceConfig:
    """The default config with an arm's heads precision (``"int8-exact:N"``: exact_top N); the second look off
    unless ``second_look`` (then the whole default pipeline runs)."""
    precision, _, top = arm.partition(":")
    extra = {} if second_look else {"verify_rescore": 0.0}
    return InferenceConfig(heads_precision=precision, exact_top=int(top) if top else None, **extra)


class TimedWindows:
    """Replaces ``model.head_windows`` (int8-exact's float32 windows) and adds its wall time to a
    :class:`TimedHeads` (the heads' time includes them; they add no class views)."""

    def __init__(self, model, heads: TimedHeads) -> None:
        self.model, self.inner, self.heads = model, model.head_windows, heads
        model.head_windows = self

    def __call__(self, *args, **kw):
        t0 = time.perf_counter()
        out = self.inner(*args, **kw)
        self.heads.seconds += time.perf_counter() - t0
        return out


def top_agreement(a: Detections, b: Detections, k: int = 10, iou: float = 0.95) -> tuple[bool, bool]:
    """(same set, same order) of the top-``k`` detections of two runs on one image."""
    n = min(k, len(a.scores))
    if min(k, len(b.scores)) != n:
        return False, False
    if n == 0:
        return True, True
    la, lb = a.labels[:n], b.labels[:n]
    ious = box_iou(a.boxes_xyxy[:n], b.boxes_xyxy[:n]) * (la.view(-1, 1) == lb.view(1, -1))
    ordered = bool((ious.diagonal() >= iou).all())
    free = torch.ones(n, dtype=torch.bool)
    for i in range(n):  # greedy one-to-one matching (boxes this close are unambiguous)
        cand = (ious[i] >= iou) & free
        if not cand.any():
            return False, ordered
        free[int(cand.nonzero()[0])] = False
    return True, ordered


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["demo", "synth-val"])
    ap.add_argument("--weights", default="default")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), help="fp32 first; int8-exact:N sets exact_top N")
    ap.add_argument("--second-look", action="store_true",
                    help="the whole default pipeline (second look on); default: the heads' raw scores")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for set_name in args.sets:
        dataset = load_set(set_name, args.synth_dir)
        runs = {}
        for arm in args.arms:
            det = Detector.from_weights(args.weights, config=arm_config(arm, args.second_look))
            timer = TimedHeads(det.model, None)  # the model's own heads, timed
            TimedWindows(det.model, timer)
            ev = run_method(DetectorMethod(det), dataset, config=det.config, progress=False,
                            max_images=args.max_images)
            runs[arm] = (ev, timer.seconds / max(timer.views, 1))
            print(f"{set_name} {arm}: mAP {100 * ev.result.map:.2f}, heads {timer.seconds:.1f} s, "
                  f"{ev.seconds_per_image:.2f} s/img", flush=True)
        exact, exact_per_view = runs["fp32"]
        for arm in args.arms:
            ev, per_view = runs[arm]
            agree = [top_agreement(a, b) for a, b in zip(exact.detections, ev.detections, strict=True)]
            rows.append((set_name, len(ev.detections), arm, per_view, exact_per_view / per_view,
                         ev.seconds_per_image, 100 * ev.result.map, 100 * (ev.result.map - exact.result.map),
                         100 * statistics.mean(s for s, _ in agree), 100 * statistics.mean(o for _, o in agree)))
    look = "second look on" if args.second_look else "raw scores"
    print_report(f"heads: fp32 vs int8 TransformNet, image_size auto, {look}, {torch.get_num_threads()} threads",
                 f"{'set':<11}{'imgs':>5} {'arm':<14}{'heads s/view':>13}{'speed-up':>9}{'s/img':>7}{'mAP':>7}"
                 f"{'dmAP':>7}{'same set %':>11}{'same order %':>13}",
                 [f"{r[0]:<11}{r[1]:>5} {r[2]:<14}{r[3]:>13.4f}{r[4]:>8.2f}x{r[5]:>7.2f}{r[6]:>7.2f}{r[7]:>+7.2f}"
                  f"{r[8]:>11.1f}{r[9]:>13.1f}" for r in rows])


if __name__ == "__main__":
    main()
