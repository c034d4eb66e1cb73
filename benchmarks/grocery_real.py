"""Look-alike packages in real photos: which product is this? Image-level, on the Grocery Store val photos.

The tuning sets with boxes are composites (``synth-val``, ``unseen``: every instance keeps its class image's colours)
or logos (``fl27-train``, ``fl27-train-b``: printed in many colours). Packaged products in real photos are neither, and
the project has no real shelf photos with boxes. The Grocery Store dataset (``../shared/data/grocerystore``) has real
in-store phone photos (348x348) with one product each, and one web image per product. Its 31 package classes (milk,
juice, yoghurt, soy and oat products; several brands and variants of each, look-alikes by construction) make the
gallery; the photos of the *val* split (100 photos of the 20 package classes that have any; never a training
background: the model's synthetic training shelves were composed on *train* photos only) are the set. The products
fill much of the frame and are often cut by it or tilted in a hand, so there are no boxes: the score of a class on a
photo is the largest score of its detections there (none: the class is absent).

Printed per arm (``default_arms.py``'s JSON arms, run round-robin through ``Detector.detect``):
- *top-1*: the share of photos whose best class is the photo's product;
- *image mAP*: per product with val photos, the average precision of the photos ranked by that product's score (the
  photos where it has no detection ranked last, i.e. counted as misses), averaged over the 20 products;
- seconds per image and the ratio to the first arm.

    python benchmarks/grocery_real.py --arm default '{}' --arm no-chroma '{"verify_chroma": 0}'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from os2d.runtime import tune_allocator

tune_allocator()  # as the command line does, before torch is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402

from os2d.results import Detections  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_arms import SYNTH_DIR, parse_arm, run_arms  # noqa: E402


def class_scores(dets: list[Detections], num_classes: int) -> np.ndarray:
    """(images, classes) image-level scores: the best detection of each class, -inf where it has none."""
    out = np.full((len(dets), num_classes), -np.inf)
    for i, d in enumerate(dets):
        for label, score in zip(d.labels.tolist(), d.scores.tolist(), strict=True):
            out[i, label] = max(out[i, label], score)
    return out


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Non-interpolated AP of one class's image ranking (at least one positive); positives without a score (-inf)
    count as misses."""
    found = np.isfinite(scores)
    hits = positive[found][np.argsort(-scores[found], kind="stable")]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / positive.sum())


def image_metrics(dets: list[Detections], truth: np.ndarray, num_classes: int) -> tuple[float, float]:
    """(top-1 %, image mAP %) of one arm; ``truth`` holds each photo's class index."""
    s = class_scores(dets, num_classes)
    has_any = np.isfinite(s).any(1)
    top1 = float(np.mean(has_any & (s.argmax(1) == truth)))
    aps = [average_precision(s[:, c], truth == c) for c in np.unique(truth)]
    return 100 * top1, 100 * float(np.mean(aps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arm", nargs=2, action="append", metavar=("NAME", "JSON"), required=True,
                    help="an arm: its name and InferenceConfig changes as JSON; the first is the baseline")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--max-images", type=int, default=None)
    args = ap.parse_args()
    arms = dict(parse_arm(n, t) for n, t in args.arm)
    runs = run_arms("grocery-real", arms, weights=args.weights, every=args.every, max_images=args.max_images,
                    synth_dir=SYNTH_DIR)
    truth = np.array([int(im.labels[0]) for im in runs.images])
    print(f"\nGrocery Store val package photos: {len(truth)} photos of {len(np.unique(truth))} products, gallery of "
          f"{len(runs.class_names)} packages; arms {json.dumps(arms)}, {torch.get_num_threads()} threads")
    print("| arm | top-1 % (d) | image mAP % (d) | s / image | time ratio |")
    print("|---|---:|---:|---:|---:|")
    first = None
    for a, dets in runs.detections.items():
        top1, m = image_metrics(dets, truth, len(runs.class_names))
        s = runs.seconds[a]
        first = first or (top1, m, s)
        print(f"| {a} | {top1:.1f} ({top1 - first[0]:+.1f}) | {m:.2f} ({m - first[1]:+.2f}) | {s:.3f} | "
              f"{s / first[2]:.3f}x |", flush=True)


if __name__ == "__main__":
    main()
