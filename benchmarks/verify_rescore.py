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
import torch.nn.functional as F

from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.evaluation.harness import _class_names, _load_class_images
from os2d.evaluation.metrics import evaluate_detections
from os2d.inference.colour import apply_score_factors
from os2d.inference.pyramid import prepare_levels
from os2d.io import image_to_tensor, load_image
from os2d.model.correlation import resize_class_features
from os2d.model.resample import pool_mask
from os2d.results import Detections

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_probe import load_set  # noqa: E402
from colour_rescore import print_rescore_table  # noqa: E402


def crop_grid(corners: torch.Tensor, out_h: int, out_w: int, width: int, height: int) -> torch.Tensor:
    """(N, 4, 2) corners (top-left, top-right, bottom-left, bottom-right, original pixels) -> (N, h, w, 2)
    ``grid_sample`` coordinates (align_corners=False) of an out_h x out_w crop spanning the parallelogram."""
    tl, tr, bl = corners[:, 0], corners[:, 1], corners[:, 2]  # (N, 2)
    u = (torch.arange(out_w, dtype=corners.dtype) + 0.5) / out_w  # (w,) in (0, 1)
    v = (torch.arange(out_h, dtype=corners.dtype) + 0.5) / out_h
    pts = (tl[:, None, None] + u[None, None, :, None] * (tr - tl)[:, None, None]
           + v[None, :, None, None] * (bl - tl)[:, None, None])  # (N, h, w, 2) pixels
    scale = torch.tensor([2.0 / width, 2.0 / height], dtype=corners.dtype)
    return pts * scale - 1.0


def box_corners(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) xyxy -> (N, 4, 2) corners in the order of ``Detections.corners_xy``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([torch.stack([x1, y1], -1), torch.stack([x2, y1], -1), torch.stack([x1, y2], -1),
                        torch.stack([x2, y2], -1)], dim=1)


@torch.no_grad()
def agreement(det: Detector, image: torch.Tensor, dets: Detections, crop: str, top: int) -> torch.Tensor:
    """(N,) agreement of each detection's crop with its class (NaN beyond the ``top`` first)."""
    model, gallery = det.model, det.gallery
    cfg = model.config
    s, side = cfg.class_grid_size, cfg.class_image_size
    mask = pool_mask(s, cfg.pool_border)  # (S*S,) in kernel order (symmetric, so the order does not matter)
    inner = mask > 0
    out = torch.full((len(dets),), math.nan)
    n = min(top, len(dets))
    width, height = dets.image_size
    corners = dets.corners_xy[:n] if crop == "aligned" else box_corners(dets.boxes_xyxy[:n])
    labels = dets.labels[:n]
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().squeeze(1)
        views = (gallery.view_class == c).nonzero().squeeze(1)
        aspect = float(gallery.view_aspect[views[0]])
        w = max(16, round(side * math.sqrt(aspect)))
        h = max(16, round(side / math.sqrt(aspect)))
        grid = crop_grid(corners[idx].float(), h, w, width, height)
        crops = F.grid_sample(image[None].expand(len(idx), -1, -1, -1), grid, mode="bilinear",
                              padding_mode="border", align_corners=False)  # (n, 3, h, w)
        feats = model.extract_features(crops, align_to_anchors=False)
        grids = torch.stack([resize_class_features(f, s) for f in feats])  # (n, C, S, S)
        cells = grids.permute(0, 3, 2, 1).reshape(len(idx), s * s, -1)  # kernel layout (n, S*S, C)
        kernels = gallery.kernels[views]  # (V, S*S, C)
        cos = torch.einsum("nkc,vkc->nvk", cells, kernels)[..., inner].mean(-1)  # (n, V)
        out[idx] = cos.max(dim=1).values
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
        config = InferenceConfig(max_detections=args.top)
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
