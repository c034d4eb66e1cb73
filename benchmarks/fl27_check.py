"""Real-image check on FlickrLogos-27 (../shared/data/flickrlogos27-dev), one-shot protocol of its README.

For each brand: the class image is ``class_images/<Brand>.jpg`` (a crop of one box); test images are all
annotated images except that crop's source image; a detection is a true positive at IoU >= 0.5 with an
unmatched box of its brand. Prints per-brand AP (VOC all-point), recall and seconds per image.

    python benchmarks/fl27_check.py --brands Adidas Cocacola Google --negatives 50
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from os2d.detector import Detector
from os2d.ops import box_iou

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickrlogos27-dev"


def voc_ap(scores: list[float], tps: list[bool], num_gt: int) -> float:
    """All-point interpolated AP of detections (score, is_tp) against ``num_gt`` ground-truth boxes."""
    if num_gt == 0:
        return float("nan")
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    tp = fp = 0
    prec, rec = [], []
    for i in order:
        tp += tps[i]
        fp += not tps[i]
        prec.append(tp / (tp + fp))
        rec.append(tp / num_gt)
    ap, prev_r = 0.0, 0.0
    for j in range(len(prec)):
        p_interp = max(prec[j:])
        ap += (rec[j] - prev_r) * p_interp
        prev_r = rec[j]
    return ap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--brands", nargs="*", default=None)
    ap.add_argument("--negatives", type=int, default=-1,
                    help="images without any of the chosen brands to add (-1 = all)")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.5, 0.7, 1.0, 1.4])
    args = ap.parse_args()

    gt: dict[str, list[tuple[str, list[float]]]] = defaultdict(list)
    with open(args.data / "annotations.csv") as f:
        for row in csv.DictReader(f):
            gt[row["image"]].append((row["class"], [float(row[k]) for k in ("x1", "y1", "x2", "y2")]))
    sources = {}
    with open(args.data / "class_images.csv") as f:
        for row in csv.DictReader(f):
            sources[row.get("class") or row.get("brand")] = row.get("source_image") or row.get("image")
    brands = args.brands or sorted(sources)
    with_brand = sorted(n for n in gt if any(c in brands for c, _ in gt[n]))
    others = sorted(n for n in gt if n not in with_brand)
    images = with_brand + (others if args.negatives < 0 else others[: args.negatives])
    det = Detector.from_weights(args.weights, image_size=args.image_size, scales=tuple(args.scales),
                                max_detections=50)
    for b in brands:
        det.add_class(b, args.data / "class_images" / f"{b}.jpg")
    per_brand: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    n_gt: dict[str, int] = defaultdict(int)
    times = []
    for name in images:
        t0 = time.perf_counter()
        dets = det.detect(args.data / name)
        times.append(time.perf_counter() - t0)
        for b in brands:
            if sources.get(b) == name:
                continue  # the class image's own source is not a test image for that brand
            boxes = torch.tensor([bx for c, bx in gt[name] if c == b]).view(-1, 4)
            n_gt[b] += len(boxes)
            mask = dets.labels == brands.index(b)
            d_boxes, d_scores = dets.boxes_xyxy[mask], dets.scores[mask]
            used = torch.zeros(len(boxes), dtype=torch.bool)
            iou = box_iou(d_boxes, boxes) if len(boxes) else torch.zeros(len(d_boxes), 0)
            for i in range(len(d_boxes)):
                hit = False
                if iou.shape[1]:
                    cand = iou[i].masked_fill(used, -1)
                    j = int(cand.argmax())
                    if cand[j] >= 0.5:
                        used[j] = True
                        hit = True
                per_brand[b].append((float(d_scores[i]), hit))
    print(f"{len(images)} images, weights={args.weights}, image_size={args.image_size}, scales={args.scales}, "
          f"{statistics.median(times):.2f} s/image (median, {len(brands)} classes)")
    print(f"{'brand':<12}{'GT':>5}{'AP@0.5':>9}{'recall':>8}")
    aps = []
    for b in brands:
        scores = [s for s, _ in per_brand[b]]
        tps = [t for _, t in per_brand[b]]
        a = voc_ap(scores, tps, n_gt[b])
        aps.append(a)
        rec = sum(tps) / n_gt[b] if n_gt[b] else float("nan")
        print(f"{b:<12}{n_gt[b]:>5}{a:>9.3f}{rec:>8.3f}")
    print(f"{'mAP':<12}{'':>5}{statistics.fmean(aps):>9.3f}")


if __name__ == "__main__":
    main()
