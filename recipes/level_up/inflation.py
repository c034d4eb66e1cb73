"""Why a level above the plan loses mAP (a diagnostic; decides nothing): on a tuning set, the default and the default
with ``up_steps`` 1 run on every photo; per photo, the best score of each class *absent* from it (no true box) and the
best score of a true detection (IoU >= 0.5 with a true box of its class) of each class present. If the up level
raises the absent classes' best scores more than the true ones', its new false detections outrank true ones.
README "Automatic scale, levels above the plan".

    python recipes/level_up/inflation.py fl27-train
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from cascade_probe import set_detector  # noqa: E402

from os2d.io import load_image  # noqa: E402
from os2d.ops.boxes import box_iou  # noqa: E402
from os2d.results import Detections  # noqa: E402

UP = {"auto_scale": {"up_steps": 1}}


def best_scores(dets: Detections, gt: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[list, list]:
    """(best score of each absent class (0 without a detection), best true-detection score of each present class
    (None without one))."""
    absent, present = [], []
    for c in range(classes):
        mine = dets.labels == c
        scores, boxes = dets.scores[mine], dets.boxes_xyxy[mine].float()
        truth = gt[labels == c]
        if not len(truth):
            absent.append(float(scores.max()) if len(scores) else 0.0)
            continue
        hit = (box_iou(boxes, truth) >= 0.5).any(1) if len(scores) else torch.zeros(0, dtype=torch.bool)
        present.append(float(scores[hit].max()) if bool(hit.any()) else None)
    return absent, present


def main(set_name: str) -> None:
    ds, det, names = set_detector(set_name)
    rows = []
    for rec in ds.images:
        pil = load_image(rec.path)
        gt, labels = torch.as_tensor(rec.boxes_xyxy).float(), torch.as_tensor(rec.labels)
        rows.append([best_scores(d, gt, labels, len(names)) for d in (det.detect(pil), det.detect(pil, **UP))])
    absent = np.array([a for row in rows for a in row[0][0]])
    absent_up = np.array([a for row in rows for a in row[1][0]])
    true = [(p, q) for row in rows for p, q in zip(row[0][1], row[1][1], strict=True) if p is not None and q is not None]
    t, tu = np.array([p for p, _ in true]), np.array([q for _, q in true])
    print(f"{set_name}: {len(absent)} absent (photo, class) pairs: best score median {np.median(absent):.4f} -> "
          f"{np.median(absent_up):.4f}, 90th percentile {np.percentile(absent, 90):.4f} -> "
          f"{np.percentile(absent_up, 90):.4f}, raised in {int((absent_up > absent + 1e-6).sum())}, lowered in "
          f"{int((absent_up < absent - 1e-6).sum())}")
    print(f"  {len(t)} present classes found by both: best true score median {np.median(t):.4f} -> {np.median(tu):.4f}, "
          f"raised in {int((tu > t + 1e-6).sum())}, lowered in {int((tu < t - 1e-6).sum())}")
    found = [(row[0][1], row[1][1]) for row in rows]
    only_up = sum(p is None and q is not None for a, b in found for p, q in zip(a, b, strict=True))
    only_control = sum(p is not None and q is None for a, b in found for p, q in zip(a, b, strict=True))
    print(f"  present classes with a true detection: only with up {only_up}, only in the default {only_control}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fl27-train")
