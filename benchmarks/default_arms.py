"""The whole default pipeline under a few ``InferenceConfig`` changes, compared on the same photos.

Each arm is a name and a JSON object of ``InferenceConfig`` field changes (``{}``: the default). Per set, every image
runs every arm in turn (the order alternates image by image, so slow phases of the machine hit every arm alike) through
``Detector.detect`` after one warm-up image per arm. The table gives mAP and recall at IoU 0.5, mAP at IoU 0.7, each
with its change against the first arm, and seconds per image with the ratio to the first arm.

    python benchmarks/default_arms.py --sets fl27-train synth-val \
        --arm default '{}' --arm rivals-2 '{"verify_rivals": 2}' --arm no-shape-search '{"reshape_top": 0}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from os2d.runtime import tune_allocator

tune_allocator()  # as the command line does, before torch is imported

import torch  # noqa: E402

from os2d.config import InferenceConfig  # noqa: E402
from os2d.detector import Detector  # noqa: E402
from os2d.evaluation.harness import _class_names, _load_class_images  # noqa: E402
from os2d.evaluation.metrics import evaluate_detections  # noqa: E402
from os2d.io import load_image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_probe import load_set  # noqa: E402


def run_set(set_name: str, arms: dict[str, dict], args: argparse.Namespace) -> list[str]:
    """Table rows of one set, one per arm."""
    dataset = load_set(set_name, args.synth_dir)
    det = Detector.from_weights(args.weights)
    names = _class_names(dataset)
    for name, imgs in zip(names, _load_class_images(dataset), strict=True):
        det.add_class(name, list(imgs))
    images = dataset.images[:: args.every]
    warm = load_image(images[0].path)
    for changes in arms.values():
        det.detect(warm, **changes)
    order = list(arms)
    seconds, dets = dict.fromkeys(arms, 0.0), {a: [] for a in arms}
    for i, rec in enumerate(images):
        pil = load_image(rec.path)
        for a in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            dets[a].append(det.detect(pil, **arms[a]))
            seconds[a] += time.perf_counter() - t0
        if (i + 1) % 10 == 0:
            print(f"{set_name}: {i + 1}/{len(images)}", file=sys.stderr, flush=True)
    rows, first = [], None
    for a in order:
        r5, r7 = (evaluate_detections(dets[a], images, len(names), iou, False, class_names=names) for iou in (0.5, 0.7))
        m5, rc, m7, s = 100 * r5.map, 100 * r5.recall, 100 * r7.map, seconds[a] / len(images)
        first = first or (m5, rc, m7, s)
        rows.append(f"| {set_name} | {len(images)} | {a} | {m5:.2f} ({m5 - first[0]:+.2f}) | {rc:.1f} ({rc - first[1]:+.1f}) "
                    f"| {m7:.2f} ({m7 - first[2]:+.2f}) | {s:.3f} | {s / first[3]:.3f}x |")
        print(rows[-1], flush=True)
    return rows


def parse_arm(name: str, text: str) -> tuple[str, dict]:
    changes = json.loads(text)
    if not isinstance(changes, dict):
        raise SystemExit(f"arm {name}: {text!r} is not a JSON object")
    InferenceConfig().replace(**changes)  # unknown or invalid fields fail here, before any image
    return name, changes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["fl27-train", "synth-val"])
    ap.add_argument("--arm", nargs=2, action="append", metavar=("NAME", "JSON"), required=True,
                    help="an arm: its name and InferenceConfig changes as JSON; the first is the baseline")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--every", type=int, default=1, help="every n-th image of the set")
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    args = ap.parse_args()
    arms = dict(parse_arm(n, t) for n, t in args.arm)
    rows = [row for s in args.sets for row in run_set(s, arms, args)]
    print(f"\ndefault pipeline, arms {json.dumps(arms)}, {torch.get_num_threads()} threads")
    print("| set | images | arm | mAP@0.5 (d) | recall@0.5 (d) | mAP@0.7 (d) | s / image | time ratio |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
