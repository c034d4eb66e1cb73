"""Offline cost and level coverage of ``AutoScaleConfig.hedge_peak`` variants (recipes/autoscale_peak/rule.txt).

    python recipes/autoscale_peak/table.py DUMP.pt      # DUMP.pt from dump.py; a second

Per set and variant, against the default plan: head work (sum over levels of views x level pixels), trunk work (sum
over distinct levels of level pixels) and how many true classes have a view at a level within 1.41x of their ideal one
(768 * 15 / true size; grocery-real: the product fills about 34 probe cells).
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import torch

from os2d.config import AutoScaleConfig, InferenceConfig
from os2d.inference.autoscale import plan_levels

VARIANTS = {
    "peak, no filter": {"peak_margin": -1.0, "peak_top": 1.0},
    "margin 0.01": {"peak_margin": 0.01, "peak_top": 1.0},
    "margin 0.02": {"peak_margin": 0.02, "peak_top": 1.0},
    "margin 0.03": {"peak_margin": 0.03, "peak_top": 1.0},
    "top 0.05": {"peak_margin": -1.0, "peak_top": 0.05},
    "margin 0.02 + top 0.05": {"peak_margin": 0.02, "peak_top": 0.05},
}


def totals(rows: list[dict], cfg: AutoScaleConfig) -> tuple[float, float, int, int]:
    heads = trunk = covered = n = 0
    for r in rows:
        plan = plan_levels(r["scores"], cfg, grid_size=15)
        heads += sum(len(plan.views_at(lv)) * lv * lv for lv in plan.levels())
        trunk += sum(lv * lv for lv in plan.levels())
        for size, views in r["classes"]:
            ideal = 768 * 15 / (size if size is not None else 34.0)
            n += 1
            covered += any(abs(math.log2(lv / ideal)) <= 0.5 for lv in plan.levels() if views[0] in plan.views_at(lv))
    return heads, trunk, covered, n


def main(path: Path) -> None:
    rows = torch.load(path, weights_only=False)
    auto = InferenceConfig().auto_scale
    print("| set | variant | head work | trunk work | true level within 1.41x |")
    print("|---|---|---:|---:|---:|")
    for set_name in dict.fromkeys(r["set"] for r in rows):
        rs = [r for r in rows if r["set"] == set_name]
        h0, t0, c0, n = totals(rs, auto)
        print(f"| {set_name} | default | 1.000 | 1.000 | {c0}/{n} |")
        for name, kw in VARIANTS.items():
            h, t, c, _ = totals(rs, replace(auto, hedge_peak=True, **kw))
            print(f"| {set_name} | {name} | {h / h0:.3f} | {t / t0:.3f} | {c}/{n} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
