"""Where the candidate's recall goes (after the decision; decides nothing): the ground-truth boxes found at IoU 0.5
among the reported detections of their class by the default and not with ``prior_strength`` (and the reverse), with
each box's size in 768-probe cells and the levels its class and the photo ran at in both arms.

    python recipes/autoscale_dense/recall_where.py fl27-train     # any set of benchmarks/cascade_probe.load_set
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from cascade_probe import probe_cells, set_detector  # noqa: E402

from os2d.io import load_image  # noqa: E402
from os2d.ops.boxes import box_iou  # noqa: E402

ARMS = {"control": {}, "strength": {"auto_scale": {"prior_strength": True}}}


def main(set_name: str) -> None:
    ds, det, names = set_detector(set_name)
    rows = []
    for rec in ds.images:
        pil = load_image(rec.path)
        found, levels = {}, {}
        for arm, changes in ARMS.items():
            d = det.detect(pil, **changes)
            levels[arm] = d.levels or {}
            found[arm] = []
            for k in range(len(rec.labels)):
                m = d.labels == int(rec.labels[k])
                gt = torch.from_numpy(rec.boxes_xyxy[k:k + 1]).float()
                found[arm].append(bool(m.any()) and float(box_iou(gt, d.boxes_xyxy[m].float()).max()) >= 0.5)
        for k in range(len(rec.labels)):
            name = names[int(rec.labels[k])]
            cells = probe_cells(rec.boxes_xyxy[k], pil.size)
            photo = {arm: sorted({x for v in levels[arm].values() for x in v}) for arm in ARMS}
            rows.append((rec.image_id, name, round(cells, 1), found["control"][k], found["strength"][k],
                         levels["control"].get(name), levels["strength"].get(name), photo["control"], photo["strength"]))
    lost = [x for x in rows if x[3] and not x[4]]
    won = [x for x in rows if x[4] and not x[3]]
    print(f"{set_name}: {len(rows)} boxes, found by control {sum(x[3] for x in rows)}, by strength "
          f"{sum(x[4] for x in rows)}; lost {len(lost)}, won {len(won)}")
    print("image class cells control-found strength-found class-levels(control) class-levels(strength) "
          "photo-levels(control) photo-levels(strength)")
    for tag, group in (("LOST", lost), ("WON", won)):
        for x in group:
            print(tag, *x)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
