"""Automatic scale with probe templates shaped like the class image (``AutoScaleConfig.template_aspect_power``).

Arms: the power p of the class image's aspect ratio that the probe's templates take (0: square, the default).
Per set, every image runs every arm in turn (round-robin) through the whole default pipeline (``Detector.detect``:
automatic scale, second look, shape search) after one warm-up image. The table gives mAP and recall at IoU 0.5 and
0.7, the change against the first arm, seconds per image and the share of images whose levels (``Detections.levels``)
differ from the first arm's.

    python benchmarks/probe_aspect.py --sets fl27-train synth-val --powers 0 0.5 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from os2d.runtime import tune_allocator

tune_allocator()  # as the command line does, before torch is imported

import torch  # noqa: E402

from os2d.config import AutoScaleConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_arms import SYNTH_DIR, run_arms  # noqa: E402


def run_set(set_name: str, powers: list[float], args: argparse.Namespace) -> list[str]:
    """Table rows of one set, one per power."""
    runs = run_arms(set_name, {str(p): {"auto_scale": AutoScaleConfig(template_aspect_power=p)} for p in powers},
                    weights=args.weights, every=args.every, max_images=args.max_images, synth_dir=args.synth_dir)
    n = len(runs.images)
    rows, first = [], None
    for arm, dets in runs.detections.items():
        m5, rc, m7 = runs.metrics(arm)
        first = first or (m5, m7, dets)
        moved = sum(a.levels != b.levels for a, b in zip(dets, first[2], strict=True)) / n
        rows.append(f"| {set_name} | {n} | {float(arm):g} | {m5:.2f} ({m5 - first[0]:+.2f}) | {rc:.1f} | "
                    f"{m7:.2f} ({m7 - first[1]:+.2f}) | {runs.seconds[arm]:.2f} | {100 * moved:.0f}% |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["fl27-train", "synth-val"])
    ap.add_argument("--powers", type=float, nargs="+", default=[0.0, 0.5, 1.0], help="the first is the baseline")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--every", type=int, default=1, help="every n-th image of the set")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--synth-dir", type=Path, default=SYNTH_DIR)
    args = ap.parse_args()
    rows = [row for s in args.sets for row in run_set(s, args.powers, args)]
    print(f"\nprobe templates with the class aspect ratio^p, default settings, {torch.get_num_threads()} threads")
    print("| set | images | p | mAP@0.5 (d) | recall@0.5 | mAP@0.7 (d) | s / image | levels changed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
