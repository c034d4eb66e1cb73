"""Unknown items (:mod:`os2d.unknown`): do the products missing from the gallery come back as ``unknown``?

On an ``os2d eval`` run of generated shelves, every ``--every``-th class (from ``--start``) is taken out of the
gallery by dropping its detections (classes are detected independently, with per-class NMS, so this is the run
without them). Its objects are then products the gallery does not know; the unknown items of each photo are
compared with them and with the known products' objects:

* ``on unknown product``: IoU >= 0.5 with an object of a removed class (what an auditor wants to see);
* ``on missed known product``: with an object of a kept class that no confident detection found;
* ``elsewhere``: background, shelf edges, or the unannotated look-alike distractors of ``os2d synth``.

    python benchmarks/unknown_eval.py ~/os2d-runs/synth-shelves-eval
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from os2d.evaluation.runs import load_eval_run
from os2d.ops import box_iou
from os2d.unknown import UnknownConfig, unknown_items
from os2d.weights import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="os2d eval --output-dir of generated shelves")
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--start", type=int, default=3)
    ap.add_argument("--weights", default="default", help="whose calibrated threshold says what is known")
    args = ap.parse_args()
    run = load_eval_run(args.run)
    calibration = load_model(args.weights).calibration
    if calibration is None:
        raise SystemExit(f"{args.weights} has no calibration")
    known_score = calibration.threshold_score
    names = [c.name for c in run.dataset.classes]
    removed = set(range(args.start, len(names), args.every))
    counts = {"unknown objects": 0, "items": 0, "on unknown product": 0, "on missed known product": 0,
              "elsewhere": 0, "unknown objects found": 0}
    for image, dets in zip(run.images, run.detections, strict=True):
        kept = dets.filter(torch.tensor([int(v) not in removed for v in dets.labels.tolist()], dtype=torch.bool))
        items = unknown_items(kept, known_score, UnknownConfig())
        gt = torch.from_numpy(image.boxes_xyxy[~image.difficult]).float()
        labels = image.labels[~image.difficult]
        is_unknown = np.array([int(v) in removed for v in labels], bool)
        counts["unknown objects"] += int(is_unknown.sum())
        counts["items"] += len(items)
        confident = kept.filter(kept.scores >= known_score)
        found_known = np.zeros(len(labels), bool)
        if len(confident) and len(gt):
            ious = box_iou(gt, confident.boxes_xyxy.float())
            same = torch.from_numpy(labels)[:, None] == confident.labels[None, :]
            found_known = ((ious >= 0.5) & same).any(dim=1).numpy()
        covered = np.zeros(len(labels), bool)
        for item in items:
            iou = box_iou(torch.tensor([item.box_xyxy]), gt)[0].numpy() if len(gt) else np.zeros(0)
            hit = iou >= 0.5
            if (hit & is_unknown).any():
                counts["on unknown product"] += 1
            elif (hit & ~is_unknown & ~found_known).any():
                counts["on missed known product"] += 1
            else:
                counts["elsewhere"] += 1
            covered |= hit
        counts["unknown objects found"] += int((covered & is_unknown).sum())
    print(f"{run.folder.name}: {len(run.images)} images; {len(removed)} of {len(names)} classes taken out of the "
          f"gallery (every {args.every}th from {args.start}); known = score >= {known_score:.4f} (calibrated "
          f"threshold {calibration.threshold})")
    print("| unknown objects | unknown items | on unknown product | on missed known product | elsewhere | recall of "
          "unknown objects |")
    print("|---:|---:|---:|---:|---:|---:|")
    n = max(1, counts["unknown objects"])
    print(f"| {counts['unknown objects']} | {counts['items']} | {counts['on unknown product']} | "
          f"{counts['on missed known product']} | {counts['elsewhere']} | "
          f"{100 * counts['unknown objects found'] / n:.1f}% |")


if __name__ == "__main__":
    main()
