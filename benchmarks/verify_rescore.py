"""A second look at the top detections at the class image's resolution (issue 14: look-alikes).

The heads score a location on the stride-16 feature map of a pyramid level. This re-scorer takes each of an
image's top ``--top`` detections, resamples the ORIGINAL photo inside it to the class image's size (area 240^2,
the class image's aspect ratio) and encodes that crop exactly like a class image (backbone, 15x15 grid, L2-normal
cells). Its agreement ``v`` with the class is the mean over the pooled inner cells of the cell-wise cosine with the
class grid (the OS2D score at the identity alignment, now between two class-sized images). The new score is
``score * max(v, 0.01) ** gamma`` (negative scores divided), re-sorted and capped at 100.

Crops (``--crops``):
    box      the detection's axis-aligned box;
    aligned  the parallelogram of the alignment the head estimated (``corners_xy``): the crop is warped into the
             class image's frame, so rotations and shears are undone before the cell-wise comparison.

Rule, written before the first measurement (``~/os2d-runs/c16/verify_rule.txt``): on the two tuning sets (``synth-val``,
``fl27-train``), choose the (crop, gamma) in {box, aligned} x {0.5, 1, 2} with the best mean mAP@0.5; it becomes the
default only if that mean gains >= 1.0 point over the raw score, each set gains >= 0.5, and it adds at most 1 s per
image. Held-out sets (``fl27-val``, ``demo`` at IoU 0.5) are measured for the chosen arm only, after the decision.

    python benchmarks/verify_rescore.py --sets synth-val fl27-train --crops box aligned --gammas 0 0.5 1 2
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.evaluation.harness import _class_names, _load_class_images
from os2d.evaluation.metrics import evaluate_detections
from os2d.inference.colour import apply_score_factors
from os2d.inference.pyramid import prepare_levels
from os2d.inference.verify import agreement as verify_agreement
from os2d.inference.verify import box_corners
from os2d.io import image_to_tensor, load_image
from os2d.results import Detections

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_probe import load_set  # noqa: E402
from colour_rescore import print_rescore_table  # noqa: E402


@torch.no_grad()
def agreement(det: Detector, image: torch.Tensor, dets: Detections, crop: str, top: int) -> torch.Tensor:
    """(N,) agreement of each detection's crop with its class (NaN beyond the ``top`` first), by the library's
    :func:`os2d.inference.verify.agreement` on the original photo."""
    g = det.gallery
    out = torch.full((len(dets),), math.nan)
    n = min(top, len(dets))
    corners = dets.corners_xy[:n] if crop == "aligned" else box_corners(dets.boxes_xyxy[:n])
    out[:n] = verify_agreement(det.model, image, corners.float(), dets.labels[:n], g.kernels, g.view_class,
                               g.view_aspect)
    return out


def rescored(dets: Detections, v: torch.Tensor, gamma: float, max_detections: int = 100) -> Detections:
    """Scores times ``max(v, 0.01) ** gamma`` (unlooked-at detections unchanged), re-sorted and capped."""
    factors = v.nan_to_num(1.0).clamp(min=0.01) ** gamma
    return apply_score_factors(dets, factors, max_detections=max_detections)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["synth-val", "fl27-train"])
    ap.add_argument("--crops", nargs="+", default=["box", "aligned"], choices=["box", "aligned"])
    ap.add_argument("--gammas", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    ap.add_argument("--weights", default="default")
    ap.add_argument("--top", type=int, default=100, help="detections per image looked at again")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    args = ap.parse_args()
    rows = []
    for set_name in args.sets:
        dataset = load_set(set_name, args.synth_dir)
        config = InferenceConfig(max_detections=args.top, verify_rescore=0.0)  # raw: re-scored here
        det = Detector.from_weights(args.weights, config=config)
        names = _class_names(dataset)
        for name, imgs in zip(names, _load_class_images(dataset), strict=True):
            det.add_class(name, list(imgs))
        images = dataset.images[: args.max_images] if args.max_images else dataset.images
        raw, photos, seconds = [], [], 0.0
        for rec in images:
            t0 = time.perf_counter()
            pil = load_image(rec.path)
            raw.append(det.detect_pyramid(prepare_levels(pil, config), rec.size()))
            seconds += time.perf_counter() - t0
            photos.append(image_to_tensor(pil))
        for crop in args.crops:
            t0 = time.perf_counter()
            agree = [agreement(det, im, d, crop, args.top) for d, im in zip(raw, photos, strict=True)]
            verify_s = (time.perf_counter() - t0) / len(images)
            for gamma in args.gammas:
                if gamma == 0 and crop != args.crops[0]:
                    continue
                dets = [rescored(d, v, gamma) for d, v in zip(raw, agree, strict=True)]
                r5, r7 = (evaluate_detections(dets, images, len(names), iou, False, class_names=names)
                          for iou in (0.5, 0.7))
                arm = f"{crop} {gamma:.2f}" if gamma else "raw"
                rows.append((set_name, len(images), arm, 100 * r5.map, 100 * r5.recall, 100 * r7.map,
                             seconds / len(images), verify_s if gamma else 0.0))
                print(f"{set_name} {crop} gamma {gamma}: mAP@0.5 {100 * r5.map:.2f}", flush=True)
    print_rescore_table(f"second look at the top {args.top} detections, image_size auto, "
                        f"{torch.get_num_threads()} threads", rows, "crop gamma", "look s/img")

if __name__ == "__main__":
    main()
