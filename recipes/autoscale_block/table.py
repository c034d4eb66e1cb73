"""Offline: the default plan against the block check, on the probe maps of recipes/autoscale_block/dump.py.

    python recipes/autoscale_block/table.py DUMP.pt

For every true-class view: does one of its levels (the plan's, plus the hedge's extra) lie within 1.41x / 2x of the
level where its objects fill the class grid (true size from the boxes; grocery-real: the product about fills the frame,
34 probe cells)? Per set and setting, the shares, and how many views the check moved. The check: a strong view whose
template picked with the size prior (a) is larger than its plain best template (b) is a *block* when b's score map has
at least ``k`` separate peaks within ``delta`` of its best inside a's footprint at a's peak; a block's size is b's.
(The plan's other parts - strength, main level, max_levels - are simulated for every view, but only present views
have maps, so absent views are never moved here.)
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from os2d.config import InferenceConfig
from os2d.inference.autoscale import ladder, plan_levels

CLOSE_UP_CELLS = 34.0
GRID = 15


def block_peaks(maps: list[torch.Tensor], a: int, b: int, cells: tuple[int, ...], pool_above: int,
                delta: float) -> int:
    """Separate peaks of template b's map within ``delta`` of its best inside template a's footprint at a's peak."""
    ma, mb = maps[a].float(), maps[b].float()
    pa = int(ma.flatten().argmax())
    ya, xa = divmod(pa, ma.shape[1])
    scale = 2 if cells[a] > pool_above else 1
    cy, cx, half = ya * scale + (scale - 1) / 2, xa * scale + (scale - 1) / 2, cells[a] / 2
    k = 2 * (cells[b] // 2) + 1
    peaks = (F.max_pool2d(mb[None, None], k, stride=1, padding=k // 2)[0, 0] == mb)
    ys, xs = torch.meshgrid(torch.arange(mb.shape[0]), torch.arange(mb.shape[1]), indexing="ij")
    inside = ((ys - cy).abs() <= half) & ((xs - cx).abs() <= half)
    if not bool(inside.any()):
        return 0
    top = float(mb[inside].max())
    return int((peaks & inside & (mb >= top - delta)).sum())


def main(path: Path) -> None:
    rows = torch.load(path, weights_only=False)
    auto = replace(InferenceConfig().auto_scale, floor_level=None)  # the plan this study saw (before the floor level)
    cells = auto.template_cells
    sizes = ladder(auto)
    log_cells = torch.tensor(cells, dtype=torch.float32).log()
    log_sizes = torch.tensor([math.log(s) for s in sizes])
    settings = [None] + [(d, k) for d in (0.02, 0.04, 0.06) for k in (2, 3)]
    stats = defaultdict(lambda: [0, 0, 0, 0])  # (set, setting) -> [views, within 1.41, within 2, moved]
    for r in rows:
        scores = r["scores"]
        plan = plan_levels(scores, auto, GRID)
        corrected = scores + auto.size_prior * log_cells[None]
        strength = scores.gather(1, corrected.argmax(dim=1, keepdim=True))[:, 0]  # the plan's plain strength
        strong = strength >= strength.max() - auto.weak_margin  # (V,)
        for size, views in r["classes"]:
            size = CLOSE_UP_CELLS if size is None else size
            ideal = auto.probe_size * GRID / size
            for v in views:
                levels = {plan.view_levels[v]} | {lv for w, lv in plan.extra if w == v}
                a, b = int(corrected[v].argmax()), int(scores[v].argmax())
                for st in settings:
                    lv, moved = set(levels), 0
                    if st is not None and bool(strong[v]) and cells[a] > cells[b] and cells[b] <= auto.pool_above:
                        if block_peaks(r["maps"][v], a, b, cells, auto.pool_above, st[0]) >= st[1]:
                            own = sizes[int((math.log(auto.probe_size * GRID / cells[b]) - log_sizes).abs().argmin())]
                            if own not in lv:
                                lv, moved = (lv - {plan.view_levels[v]}) | {own}, 1
                    err = min(abs(math.log(x / ideal)) for x in lv)
                    s = stats[(r["set"], st)]
                    s[0] += 1
                    s[1] += err <= math.log(2**0.5) + 1e-6
                    s[2] += err <= math.log(2) + 1e-6
                    s[3] += moved
    names = sorted({k[0] for k in stats}, key=lambda n: [r["set"] for r in rows].index(n))
    print("| setting | " + " | ".join(f"{n} <=1.41x / <=2x (moved)" for n in names) + " |")
    for st in settings:
        cellsout = []
        for n in names:
            v, a, b, m = stats[(n, st)]
            cellsout.append(f"{100 * a / v:.0f} / {100 * b / v:.0f}% ({m})")
        print(f"| {'default' if st is None else f'delta {st[0]}, k {st[1]}'} | " + " | ".join(cellsout) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
