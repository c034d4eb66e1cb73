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
import time
from pathlib import Path

from os2d.runtime import tune_allocator

tune_allocator()  # as the command line does, before torch is imported

import torch  # noqa: E402

from os2d.config import AutoScaleConfig  # noqa: E402
from os2d.detector import Detector  # noqa: E402
from os2d.evaluation.harness import _class_names, _load_class_images  # noqa: E402
from os2d.evaluation.metrics import evaluate_detections  # noqa: E402
from os2d.io import load_image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_probe import load_set  # noqa: E402


def run_set(set_name: str, powers: list[float], args: argparse.Namespace) -> list[str]:
    """Table rows of one set, one per power."""
    dataset = load_set(set_name, args.synth_dir)
    det = Detector.from_weights(args.weights)
    names = _class_names(dataset)
    for name, imgs in zip(names, _load_class_images(dataset), strict=True):
        det.add_class(name, list(imgs))
    images = dataset.images[:: args.every][: args.max_images]
    arms = {p: AutoScaleConfig(template_aspect_power=p) for p in powers}
    warm = load_image(images[0].path)
    for auto in arms.values():
        det.detect(warm, auto_scale=auto)
    seconds = dict.fromkeys(arms, 0.0)
    dets: dict[float, list] = {p: [] for p in arms}
    for i, rec in enumerate(images):
        pil = load_image(rec.path)
        for p, auto in arms.items():
            t0 = time.perf_counter()
            dets[p].append(det.detect(pil, auto_scale=auto))
            seconds[p] += time.perf_counter() - t0
        if (i + 1) % 10 == 0:
            print(f"{set_name}: {i + 1}/{len(images)}", file=sys.stderr, flush=True)
    rows, first = [], None
    for p in arms:
        r5, r7 = (evaluate_detections(dets[p], images, len(names), iou, False, class_names=names) for iou in (0.5, 0.7))
        m5, m7 = 100 * r5.map, 100 * r7.map
        first = first or (m5, m7, dets[p])
        moved = sum(a.levels != b.levels for a, b in zip(dets[p], first[2], strict=True)) / len(images)
        rows.append(f"| {set_name} | {len(images)} | {p:g} | {m5:.2f} ({m5 - first[0]:+.2f}) | {100 * r5.recall:.1f} | "
                    f"{m7:.2f} ({m7 - first[1]:+.2f}) | {seconds[p] / len(images):.2f} | {100 * moved:.0f}% |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["fl27-train", "synth-val"])
    ap.add_argument("--powers", type=float, nargs="+", default=[0.0, 0.5, 1.0], help="the first is the baseline")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--every", type=int, default=1, help="every n-th image of the set")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    args = ap.parse_args()
    rows = [row for s in args.sets for row in run_set(s, args.powers, args)]
    print(f"\nprobe templates with the class aspect ratio^p, default settings, {torch.get_num_threads()} threads")
    print("| set | images | p | mAP@0.5 (d) | recall@0.5 | mAP@0.7 (d) | s / image | levels changed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
