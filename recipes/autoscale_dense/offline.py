"""Offline statistics for recipes/autoscale_dense/rule.txt: does the probe peak's *breadth* tell a close-up from a
small object?

    python recipes/autoscale_dense/offline.py dump DUMP.pt    # every 2nd image of the five tuning sets (minutes)
    python recipes/autoscale_dense/offline.py table DUMP.pt   # size-estimate shares per rule variant

The size prior (recipes/autoscale_closeups) moves the template choice to large templates whenever scores fall slowly
with size: right on close-ups (the small template matches a patch of a product that fills the frame), wrong on tiny
logos and on shelves packed with near-identical facings (a large template matches a group of products). What differs
is the plain best template's peak: on a close-up its high-scoring area is broad (it slides over the product and keeps
scoring), on one small object it is a spot. ``dump`` stores, per image and class present, each true view's best score
per template and the *breadth* of every template's peak: the share of the (2s+1)^2 window around the peak (s the
template's side, in the cells of its map) scoring at least ``peak - delta``, for delta in DELTAS. ``table`` prints the
share of true-class size estimates within 1.41x / 2x of the true size for: no prior, the prior everywhere (the default
now) and the prior only on views whose plain best template's breadth exceeds a threshold.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autoscale_closeups.offline import CELLS, CLOSE_UP_CELLS, probe_photos  # noqa: E402

from os2d.inference.autoscale import kernel_grids  # noqa: E402
from os2d.model.correlation import l2_normalize  # noqa: E402

POOL_ABOVE = 20
DELTAS = (0.02, 0.04, 0.06)
SETS = ("grocery-real", "fl27-train", "synth-val", "unseen", "dense-shelves")


def breadth(score: torch.Tensor, radius: int) -> list[float]:
    """(H, W) template score map -> for each delta, the share of the (2r+1)^2 window around the peak (cells outside
    the map count as not scoring) with score >= peak - delta."""
    h, w = score.shape
    i = int(score.argmax())
    y, x = divmod(i, w)
    win = score[max(0, y - radius): y + radius + 1, max(0, x - radius): x + radius + 1]
    peak = float(score[y, x])
    return [float((win >= peak - d).sum()) / (2 * radius + 1) ** 2 for d in DELTAS]


@torch.no_grad()
def view_stats(features: torch.Tensor, grids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, C, H, W) probe features, (V, C, S, S) class grids -> (V, T) peaks and (V, T, len(DELTAS)) breadths."""
    feats = l2_normalize(features.float(), dim=1)
    pooled = l2_normalize(F.avg_pool2d(feats, 2, ceil_mode=True), dim=1)
    v = grids.shape[0]
    peaks, breadths = torch.empty(v, len(CELLS)), torch.empty(v, len(CELLS), len(DELTAS))
    for j, s in enumerate(CELLS):
        fmap, side = (pooled, max(1, round(s / 2))) if s > POOL_ABOVE else (feats, s)
        t = l2_normalize(F.interpolate(grids, size=(side, side), mode="bilinear", align_corners=True), dim=1)
        score = F.conv2d(fmap, t, padding=side // 2)[0] / side**2  # (V, H', W')
        for k in range(v):
            peaks[k, j] = score[k].max()
            breadths[k, j] = torch.tensor(breadth(score[k], side))
    return peaks, breadths


def dump(out: Path) -> None:
    rows = []
    for set_name, g, feats, classes in probe_photos(SETS):
        grids = kernel_grids(g.kernels.float())
        for size, views in classes:
            peaks, breadths = view_stats(feats, grids[views])
            rows.append({"set": set_name, "size": size, "peaks": peaks, "breadths": breadths})
    torch.save(rows, out)


def pick(peaks: torch.Tensor, breadths: torch.Tensor, a: float, delta_i: int | None, thr: float) -> int:
    """The template a rule picks for one class (its views' best): prior ``a`` on the views whose plain best template's
    breadth (at DELTAS[delta_i]) exceeds ``thr``; delta_i None: the prior on every view."""
    log_cells = torch.tensor(CELLS, dtype=torch.float32).log()
    best, arg = -1e9, 0
    for k in range(peaks.shape[0]):
        j0 = int(peaks[k].argmax())
        on = delta_i is None or float(breadths[k, j0, delta_i]) > thr
        j = int((peaks[k] + (a if on else 0.0) * log_cells).argmax())
        val = float(peaks[k, j] + (a if on else 0.0) * log_cells[j])
        if val > best:
            best, arg = val, j
    return arg


def table(path: Path) -> None:
    rows = torch.load(path, weights_only=False)
    variants = [("no prior", 0.0, None, 0.0), ("prior 0.06 everywhere", 0.06, None, 0.0)]
    variants += [(f"0.06 if breadth@{DELTAS[d]} > {t}", 0.06, d, t) for d in range(len(DELTAS))
                 for t in (0.1, 0.2, 0.3, 0.4, 0.5)]
    print("| rule | " + " | ".join(SETS) + " | mean |")
    print("|---|" + "---:|" * (len(SETS) + 1))
    for name, a, d, t in variants:
        parts, means = [], []
        for set_name in SETS:
            errs = []
            for r in (r for r in rows if r["set"] == set_name):
                j = pick(r["peaks"], r["breadths"], a, d, t)
                true = CLOSE_UP_CELLS if r["size"] is None else max(r["size"], 1e-3)
                errs.append(abs(math.log(CELLS[j] / true)))
            e = torch.tensor(errs)
            parts.append(f"{100 * (e < 0.35).float().mean():.0f} / {100 * (e < 0.7).float().mean():.0f}")
            means.append(float(100 * (e < 0.35).float().mean()))
        print(f"| {name} | " + " | ".join(parts) + f" | {sum(means) / len(means):.1f} |")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("dump", "table"):
        sys.exit(__doc__)
    (dump if sys.argv[1] == "dump" else table)(Path(sys.argv[2]))
