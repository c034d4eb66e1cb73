"""Seconds per image of the default settings against the earlier defaults, in one process (issue 14's time bar).

Arms (``InferenceConfig`` changes): ``single-1024`` (the default before automatic scale: one level at sqrt(w*h)
= 1024, raw scores), ``auto`` (automatic scale, raw scores), ``default`` (automatic scale and the second look),
``default-crops-240`` (the same with the second look's crops at 240^2, the default before ``verify_size`` 160),
``default-no-rivals`` (the same without comparing the crops with the other classes, the default before
``verify_rivals`` 4), ``default-fp32-heads`` (the dense float32 heads, the default before ``int8-exact``) and
any ``--verify-top`` variants of it (``--arms`` picks some; ``single-1024`` always runs); ``--fast-arms`` adds the default with the second look's crops in bf16
(``verify_precision="bf16"``), with the whole backbone in bf16 (``trunk_precision`` too) and with that and int8
heads (``heads_precision="int8"``). Every image runs every arm in turn (round-robin, so the machine's slow phases
hit all arms alike; the order rotates from image to image, so that no arm always runs after the same one) after
one warm-up image; the table gives the mean seconds per image, the ratio to
``single-1024`` and, on the same images, mAP@0.5 and recall.

    python benchmarks/default_time.py --set fl27-val --every 10
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from os2d.runtime import tune_allocator

tune_allocator()  # as the command line does, before torch is imported: OS2D_ALLOCATOR picks (os2d.runtime)

import torch  # noqa: E402

from os2d.evaluation.metrics import evaluate_detections  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from round_robin import run_round_robin  # noqa: E402

ARMS: dict[str, dict] = {
    "single-1024": {"image_size": 1024, "verify_rescore": 0.0, "heads_precision": "fp32"},  # as it ran then
    "auto": {"verify_rescore": 0.0},
    "default": {},
    "default-fp32-heads": {"heads_precision": "fp32"},  # the default before int8-exact heads
    "default-crops-240": {"verify_size": None},  # the default before the second look's crops became 160^2
    "default-no-rivals": {"verify_rivals": 0.0},  # the default before the second look compared the other classes
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="fl27-val", help="fl27-val | fl27-train | demo | synth-val")
    ap.add_argument("--every", type=int, default=10, help="every Nth image of the set")
    ap.add_argument("--verify-top", type=int, nargs="*", default=[], help="also the default with these verify_top")
    ap.add_argument("--fast-arms", action="store_true", help="also the default with bf16 crops / backbone (+ int8 heads)")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--arms", nargs="+", default=None, choices=list(ARMS), help="only these arms (default: all)")
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    args = ap.parse_args()
    chosen = ["single-1024", *(a for a in args.arms or ARMS if a != "single-1024")]
    arms = {a: ARMS[a] for a in chosen} | {f"default, verify_top {k}": {"verify_top": k} for k in args.verify_top}
    if args.fast_arms:
        bf16 = {"trunk_precision": "bf16", "verify_precision": "bf16"}
        arms |= {"default, bf16 crops": {"verify_precision": "bf16"}, "default, bf16 backbone": bf16,
                 "default, bf16 backbone + int8 heads": bf16 | {"heads_precision": "int8"}}
    names, images, seconds, dets = run_round_robin(args.set, arms, weights=args.weights, every=args.every,
                                                   synth_dir=args.synth_dir)
    base = seconds["single-1024"]
    applied = ", ".join(tune_allocator()) or "none"
    print(f"{args.set}, every {args.every}th image ({len(images)}), {torch.get_num_threads()} threads, one process, "
          f"OS2D_ALLOCATOR={os.environ.get('OS2D_ALLOCATOR') or 'heap+thp'} (applied: {applied})")
    print("| arm | s / image | vs single-1024 | mAP@0.5 | recall |")
    print("|---|---:|---:|---:|---:|")
    for arm in arms:
        r = evaluate_detections(dets[arm], images, len(names), 0.5, False, class_names=names)
        s = seconds[arm]
        print(f"| {arm} | {s:.2f} | {s / base:.2f}x | {100 * r.map:.1f} | {100 * r.recall:.1f} |")


if __name__ == "__main__":
    main()
