"""How much the automatic scale's level choice leaves on the table (a diagnostic; decides nothing): every true box
(not difficult) found by a detection of its class (IoU >= 0.5, any rank) with the default and with a fixed six-level
pyramid (sqrt(w*h) 384 .. 2048, the ladder's levels from 384 up), and for the boxes only the pyramid finds: the box's
side in probe cells (768 px), the ladder level where it would fill the 15-cell class grid, the levels the default
ran its class at, and the pyramid's score and rank of the box's best hit. The mAP of both arms comes from
``python benchmarks/default_arms.py --sets fl27-train fl27-train-b --arm control '{}' --arm pyramid6 "$PYRAMID"``
(README, "Automatic scale, what the levels leave").

    python recipes/level_headroom/where.py fl27-train     # any set of benchmarks/cascade_probe.load_set
"""

from __future__ import annotations

import collections
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from cascade_probe import probe_cells, set_detector  # noqa: E402

from os2d.io import load_image  # noqa: E402
from os2d.ops.boxes import box_iou  # noqa: E402
from os2d.results import Detections  # noqa: E402

PYRAMID = {"image_size": 768, "scales": [0.5, 0.7071, 1.0, 1.4142, 2.0, 2.6667]}  # 384, 543, 768, 1086, 1536, 2048
PROBE, GRID = 768, 15  # probe sqrt(w*h), class grid side


def best_hit(dets: Detections, box: torch.Tensor, label: int) -> tuple[float, int] | None:
    """(score, rank in the photo) of the best-scoring detection of ``label`` with IoU >= 0.5 with the (1, 4) box."""
    mine = dets.labels == label
    if not bool(mine.any()):
        return None
    hit = box_iou(dets.boxes_xyxy[mine].float(), box)[:, 0] >= 0.5
    if not bool(hit.any()):
        return None
    score = float(dets.scores[mine][hit].max())
    return score, int((dets.scores > score).sum())


def ideal_level(side_cells: float) -> int:
    """The ladder level (768 * sqrt(2)^k) nearest to the one where an object of this many probe cells fills the grid."""
    k = round(math.log(GRID / max(side_cells, 0.1), 2**0.5))  # the level's ratio to the probe: GRID / side_cells
    return round(PROBE * 2 ** (k / 2))


def main(set_name: str) -> None:
    ds, det, names = set_detector(set_name)
    rows = []
    for rec in ds.images:
        pil = load_image(rec.path)
        default, pyramid = det.detect(pil), det.detect(pil, **PYRAMID)
        for k in range(len(rec.labels)):
            if rec.difficult is not None and bool(rec.difficult[k]):
                continue
            box = torch.as_tensor(rec.boxes_xyxy[k : k + 1]).float()
            side = probe_cells(rec.boxes_xyxy[k], pil.size, PROBE)
            c = int(rec.labels[k])
            rows.append((Path(rec.path).name, names[c], side, best_hit(default, box, c), best_hit(pyramid, box, c),
                         (default.levels or {}).get(names[c])))
    only = [r for r in rows if r[4] is not None and r[3] is None]
    print(f"{set_name}: {len(rows)} boxes; found by the default {sum(r[3] is not None for r in rows)}, by the "
          f"pyramid {sum(r[4] is not None for r in rows)}; pyramid only {len(only)}, default only "
          f"{sum(r[3] is not None and r[4] is None for r in rows)}")
    print("pyramid only: photo, class, side (probe cells), ideal level, the default's levels, pyramid score, rank")
    for photo, name, side, _, (score, rank), levels in sorted(only, key=lambda r: r[2]):
        print(f"  {photo} {name:>10} {side:5.1f} {ideal_level(side):5d} {levels} {score:.3f} {rank}")
    per_photo = collections.Counter(r[0] for r in only)
    print("pyramid-only boxes per photo:", per_photo.most_common())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fl27-train")
