"""OS2D demo shelf (``../shared/data/os2d-demo``): do the 4 + 4 facings of two look-alike yogurts rank first?

The photo (685x507) shows two Danissimo Fantasy yogurts side by side, 4 facings each: ``class_image_0`` (pink
and white balls) in the right column, ``class_image_1`` (white and brown balls) in the middle column, next to
a column of a third, similar Danissimo product and other yogurts. The set has no boxes; :data:`FACINGS` are
ours, drawn by hand on the photo (front of each cup, +-5 px).

A detection is correct when its label is the facing's product and its box overlaps a not yet taken facing of
that product with IoU >= ``--iou`` (0.3: the hand boxes are approximate and the cups overlap each other).
Printed per method: how many of the top 8 detections (both classes pooled, by score) are correct (the bar:
8 of 8), the rank of the first wrong detection, AP at that IoU per product, and seconds.

    python benchmarks/demo_shelf.py --weights default efficientnet_lite0-imagenet \
        --methods os2d sliding-ar sift
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from os2d.config import InferenceConfig
from os2d.data.records import ClassRecord, DetectionDataset, ImageRecord
from os2d.evaluation.baselines import AUTO_SCALE_METHODS, METHODS, MODEL_METHODS
from os2d.evaluation.harness import evaluate_method
from os2d.ops import box_iou
from os2d.weights import load_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "os2d-demo"

# (class index, x1, y1, x2, y2) in pixels of input_image.jpg; drawn by hand on a zoomed copy of the photo
FACINGS = np.array([
    (0, 495, 95, 648, 160), (0, 480, 152, 645, 212), (0, 480, 205, 645, 265), (0, 480, 262, 645, 318),
    (1, 325, 92, 495, 152), (1, 325, 150, 480, 207), (1, 325, 203, 475, 262), (1, 325, 258, 465, 312),
], dtype=np.float32)


def demo_dataset(data: Path) -> DetectionDataset:
    """The demo photo with :data:`FACINGS` as boxes and the two class images."""
    image = ImageRecord(image_id="input_image", path=data / "input_image.jpg", width=685, height=507,
                        boxes_xyxy=FACINGS[:, 1:].copy(), labels=FACINGS[:, 0].astype(np.int64),
                        difficult=np.zeros(len(FACINGS), bool))
    classes = [ClassRecord(class_id=f"class_image_{i}", name=f"class_image_{i}",
                           image_paths=[data / f"class_image_{i}.jpg"]) for i in (0, 1)]
    return DetectionDataset(name="os2d-demo", images=[image], classes=classes)


def ranking(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float) -> list[bool]:
    """Correctness of each detection in score order (greedy: a facing is taken by its first hit)."""
    order = torch.argsort(scores, descending=True)
    gt = torch.from_numpy(FACINGS[:, 1:])
    gt_labels = torch.from_numpy(FACINGS[:, 0]).long()
    taken = torch.zeros(len(FACINGS), dtype=torch.bool)
    ious = box_iou(boxes[order].float(), gt) if len(order) else torch.zeros(0, len(FACINGS))
    out = []
    for i, j in enumerate(order.tolist()):
        ok = (gt_labels == labels[j]) & ~taken & (ious[i] >= iou)
        if ok.any():
            best = int(torch.where(ok, ious[i], torch.full_like(ious[i], -1)).argmax())
            taken[best] = True
            out.append(True)
        else:
            out.append(False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--methods", nargs="+", default=["os2d", "sliding-square", "sliding-ar", "sift"],
                    choices=METHODS)
    ap.add_argument("--weights", nargs="+", default=["default"],
                    help="weights for the model methods (one row per weights for os2d)")
    ap.add_argument("--sliding-weights", default="efficientnet_lite0-imagenet",
                    help="backbone of the sliding-window baselines (the untrained ImageNet features)")
    ap.add_argument("--image-size", type=lambda t: t if t == "auto" else int(t), default="auto",
                    help="auto (the default: levels chosen per photo and class; methods without auto run at "
                         "1500) or sqrt(w*h) of the photo at scale 1 (reference demo: 1500: the cups are then "
                         "about class-image size)")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0])
    ap.add_argument("--iou", type=float, default=0.3)
    args = ap.parse_args()
    if not (args.data / "input_image.jpg").is_file():
        sys.exit(f"os2d demo data not found under {args.data}")
    dataset = demo_dataset(args.data)
    config = InferenceConfig(image_size=args.image_size, scales=tuple(args.scales))
    fixed = config.replace(image_size=1500) if args.image_size == "auto" else config
    print(f"os2d demo shelf: 2 products x 4 facings; image size {args.image_size}, scales {args.scales}, "
          f"IoU >= {args.iou}")
    print("| method | weights | correct in top 8 | first wrong at rank | AP product 0 | AP product 1 | s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    runs = []
    for method in args.methods:
        if method == "os2d":
            runs += [(method, w) for w in args.weights]
        else:
            runs.append((method, args.sliding_weights if method in MODEL_METHODS else "-"))
    for method, weights in runs:
        model = load_model(weights) if method in MODEL_METHODS else None
        t0 = time.perf_counter()
        cfg = config if method in AUTO_SCALE_METHODS else fixed
        ev = evaluate_method(method, dataset, cfg, model=model, progress=False, iou_threshold=args.iou)
        seconds = time.perf_counter() - t0
        det = ev.detections[0]
        hits = ranking(det.boxes_xyxy, det.scores, det.labels, args.iou)
        first_wrong = next((i + 1 for i, h in enumerate(hits) if not h), None)
        per_class = ev.to_dict()["metrics"]["per_class"]
        ap0, ap1 = (per_class[f"class_image_{i}"][f"AP@{args.iou:.2f}"] for i in (0, 1))
        print(f"| {method} | {weights} | {sum(hits[:8])}/8 | {first_wrong or '-'} | {ap0:.3f} | {ap1:.3f} | "
              f"{seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
