"""After the decision (decides nothing): on the photos where ``hedge_peak`` changes the levels, the true boxes found
(IoU 0.5, right class, any rank) and the false positives among the photo's top n (n = its true boxes), both arms.

    python recipes/autoscale_peak/where.py fl27-train-b     # any set of benchmarks/cascade_probe.load_set
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from cascade_probe import add_set_classes, load_set  # noqa: E402

from os2d.detector import Detector  # noqa: E402
from os2d.io import load_image  # noqa: E402
from os2d.ops.boxes import box_iou  # noqa: E402

ARMS = {"control": {}, "peak": {"auto_scale": {"hedge_peak": True}}}


def found_and_top_fp(dets, boxes: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """True boxes found by a detection of their class (IoU >= 0.5) and false positives among the top len(boxes)."""
    if not len(dets.scores):
        return 0, 0
    hit = (box_iou(dets.boxes_xyxy.float(), boxes) >= 0.5) & (labels[None] == dets.labels[:, None])  # (N, G)
    return int(hit.any(0).sum()), int((~hit.any(1))[: max(1, len(boxes))].sum())


def main(set_name: str) -> None:
    ds = load_set(set_name, Path.home() / "os2d-runs" / "synth-grocery-eval")
    det = Detector.from_weights("default")
    add_set_classes(det, ds)
    changed, totals = 0, {arm: [0, 0, 0] for arm in ARMS}
    for rec in ds.images:
        pil = load_image(rec.path)
        out = {arm: det.detect(pil, **kw) for arm, kw in ARMS.items()}
        if out["control"].levels == out["peak"].levels:
            continue
        changed += 1
        boxes, labels = torch.from_numpy(rec.boxes_xyxy).float(), torch.from_numpy(rec.labels)
        line = [Path(rec.path).name]
        for arm, d in out.items():
            found, top_fp = found_and_top_fp(d, boxes, labels)
            totals[arm] = [totals[arm][0] + found, totals[arm][1] + top_fp, totals[arm][2] + len(boxes)]
            line.append(f"{arm}: found {found}/{len(boxes)}, fp in top {len(boxes)}: {top_fp}")
        moved = {k: (out["control"].levels.get(k), v) for k, v in out["peak"].levels.items()
                 if out["control"].levels.get(k) != v}
        print(*line, moved, flush=True)
    print(set_name, "photos with changed levels", changed,
          {arm: f"found {t[0]}/{t[2]}, fp in top-n {t[1]}" for arm, t in totals.items()})


if __name__ == "__main__":
    main(sys.argv[1])
