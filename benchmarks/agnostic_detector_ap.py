"""Class-agnostic AP of the detector of the detector + retrieval baseline (all classes merged into one).

Sets:
  * ``fl27-val``: FlickrLogos-27 dev images showing one of the 6 validation brands
    (:data:`os2d.data.spec.FL27_VAL_BRANDS`), the 6 class-source images excluded; ground truth = every box of
    those images (any brand); image size = the one ``os2d eval`` uses for the FL27 held-out protocol (879);
  * ``--boxes CSV [--image-dir DIR]``: any set, every box counted (e.g. synth-grocery-eval).

The detector proposes at most ``--proposals`` boxes per image (its NMS over the pyramid levels); AP at IoU 0.5
(VOC all-point), recall = matched boxes / all boxes, seconds per image (detector only).

    python benchmarks/agnostic_detector_ap.py --detector runs/agnostic/detector.pt --scales 1.0
    python benchmarks/agnostic_detector_ap.py --boxes ~/os2d-runs/synth-grocery-eval/annotations.csv
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from os2d.agnostic.proposals import AgnosticDetector
from os2d.agnostic.weights import load_detector
from os2d.config import InferenceConfig
from os2d.data.spec import FL27_VAL_BRANDS
from os2d.evaluation.baselines.detector_retrieval import DEFAULT_DETECTOR
from os2d.evaluation.metrics import ImageDetections, ImageGroundTruth, evaluate_detections
from os2d.io import load_image
from os2d.weights import load_model

FL27 = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickrlogos27-dev"
FL27_IMAGE_SIZE = 879  # suggest_image_size of the FL27 held-out set (benchmarks/fl27_table.py)


def read_boxes(csv_path: Path, image_dir: Path) -> dict[str, list[list[float]]]:
    boxes: dict[str, list[list[float]]] = {}
    with open(csv_path, newline="") as f:
        for r in csv.DictReader(f):
            boxes.setdefault(str(image_dir / r["image"]), []).append([float(r[k]) for k in ("x1", "y1", "x2", "y2")])
    return boxes


def fl27_val_boxes(root: Path) -> dict[str, list[list[float]]]:
    with open(root / "class_images.csv", newline="") as f:
        sources = {str(root / r["source_image"]) for r in csv.DictReader(f) if r["class"] in FL27_VAL_BRANDS}
    with open(root / "annotations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    val = {str(root / r["image"]) for r in rows if r["class"] in FL27_VAL_BRANDS} - sources
    all_boxes = read_boxes(root / "annotations.csv", root)
    return {p: b for p, b in all_boxes.items() if p in val}


def suggested_image_size(gt: dict[str, list[list[float]]], target: float = 240.0) -> int:
    """As ``os2d eval``'s default for a baseline (:func:`os2d.data.scales.suggest_image_size`): the median over
    boxes of sqrt(W*H) * target / sqrt(w*h)."""
    from PIL import Image

    cands = []
    for path, boxes in gt.items():
        with Image.open(path) as im:
            side = np.sqrt(im.width * im.height)
        cands += [side * target / np.sqrt((b[2] - b[0]) * (b[3] - b[1])) for b in boxes if b[2] > b[0] and b[3] > b[1]]
    return int(round(float(np.median(cands))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    ap.add_argument("--weights", default="default", help="os2d weights whose trunk the detector runs on")
    ap.add_argument("--boxes", type=Path, default=None, help="boxes CSV (default: the FL27 held-out-brand set)")
    ap.add_argument("--image-dir", type=Path, default=None, help="root of --boxes image paths (default: its folder)")
    ap.add_argument("--image-size", type=int, default=None, help="sqrt(w*h) of scale 1 (default: 879 on FL27, "
                                                                 "the median object ~240 px otherwise)")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0])
    ap.add_argument("--proposals", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.boxes is None:
        gt, image_size, name = fl27_val_boxes(FL27), args.image_size or FL27_IMAGE_SIZE, "fl27-val"
    else:
        gt = read_boxes(args.boxes, args.image_dir or args.boxes.parent)
        image_size, name = args.image_size or suggested_image_size(gt), str(args.boxes)
    weights = load_detector(args.detector)
    model = load_model(args.weights).eval()
    det = AgnosticDetector(model, weights.head, weights.head_config)
    r = weights.retrieval_config
    dets, gts, seconds = [], [], 0.0
    for path, boxes in sorted(gt.items()):
        image = load_image(path)
        cfg = InferenceConfig(image_size=image_size, scales=tuple(args.scales))
        t = time.perf_counter()
        props = det.propose(image, cfg, max_proposals=args.proposals, nms_iou=r.proposal_nms_iou)
        seconds += time.perf_counter() - t
        dets.append(ImageDetections(props.boxes_xyxy.numpy(), props.scores.numpy(), np.zeros(len(props.scores), int)))
        gts.append(ImageGroundTruth(np.array(boxes, np.float32), np.zeros(len(boxes), int)))
    res = evaluate_detections(dets, gts, num_classes=1, iou_threshold=0.5)
    print(f"{name}: {len(gts)} images, {sum(len(g.boxes_xyxy) for g in gts)} boxes, scales {args.scales}, "
          f"<= {args.proposals} proposals: class-agnostic AP@0.5 {100 * res.map:.1f}, recall {100 * res.recall:.1f}, "
          f"{seconds / max(1, len(gts)):.3f} s/image")


if __name__ == "__main__":
    main()
