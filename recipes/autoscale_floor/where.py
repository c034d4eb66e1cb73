"""Where the floor level's loss on one box set comes from (after the decision of recipes/autoscale_floor/rule.txt;
decides nothing).

    python recipes/autoscale_floor/where.py dense-unseen [CACHE.pt]     # ~5 minutes; CACHE.pt keeps the detections

Both arms (the default, and ``floor_level`` 384) on every image of the set (``default_arms.run_arms``). Prints the
classes whose AP@0.5 moved most, and the detections of the floor arm that are *new* (no detection of the same class in
the control arm within IoU 0.5 of them) and false (no true box of their class within IoU 0.5): how many, how large
against the photo (sqrt of box area over sqrt of image area), and where they rank among all of the class's detections
over the set.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from default_arms import run_arms  # noqa: E402

from os2d.evaluation.metrics import evaluate_detections  # noqa: E402
from os2d.ops.boxes import box_iou  # noqa: E402

ARMS = {"control": {}, "floor": {"auto_scale": {"floor_level": 384}}}


def main(set_name: str, cache: Path | None = None) -> None:
    if cache is not None and cache.is_file():
        runs = torch.load(cache, weights_only=False)
    else:
        runs = run_arms(set_name, ARMS)
        if cache is not None:
            torch.save(runs, cache)
    names, images = runs.class_names, runs.images
    ap = {a: evaluate_detections(runs.detections[a], images, len(names), 0.5, False, class_names=names).ap_per_class
          for a in ARMS}
    scored = [c for c in range(len(names)) if math.isfinite(float(ap["control"][c]))]  # classes with true boxes
    moved = sorted(scored, key=lambda c: float(ap["floor"][c] - ap["control"][c]))
    print("classes moved most (AP@0.5 control -> floor):")
    for c in moved[:5] + moved[-3:]:
        print(f"  {names[c]:>12s} {100 * ap['control'][c]:6.2f} -> {100 * ap['floor'][c]:6.2f}")
    new_false, rel_sizes, ranks = 0, [], []
    by_class: dict[int, list[tuple[float, bool]]] = {}  # class -> (score, is a new false one) over the set
    for rec, ctl, flo in zip(images, runs.detections["control"], runs.detections["floor"], strict=True):
        side = (rec.width * rec.height) ** 0.5
        truth = torch.as_tensor(rec.boxes_xyxy, dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(rec.labels)
        for box, score, label in zip(flo.boxes_xyxy, flo.scores.tolist(), flo.labels.tolist(), strict=True):
            same = ctl.labels == label
            is_new = not bool(same.any()) or float(box_iou(box[None], ctl.boxes_xyxy[same]).max()) < 0.5
            t = truth[labels == label]
            is_false = len(t) == 0 or float(box_iou(box[None], t).max()) < 0.5
            flag = is_new and is_false
            by_class.setdefault(label, []).append((score, flag))
            if flag:
                new_false += 1
                rel_sizes.append(float((box[2] - box[0]) * (box[3] - box[1])) ** 0.5 / side)
    for dets in by_class.values():
        dets.sort(key=lambda d: -d[0])
        ranks += [i for i, (_, flag) in enumerate(dets) if flag]
    q = torch.tensor(rel_sizes).quantile(torch.tensor([0.1, 0.5, 0.9])).tolist() if rel_sizes else []
    print(f"new false detections of the floor arm: {new_false}; box side / photo side, 10/50/90%: "
          + ", ".join(f"{v:.2f}" for v in q))
    print(f"their ranks within their class over the set: {sum(r < 20 for r in ranks)} in the top 20, "
          f"{sum(r < 50 for r in ranks)} in the top 50 (median rank {sorted(ranks)[len(ranks) // 2] if ranks else '-'})")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]) if len(sys.argv) > 2 else None)
