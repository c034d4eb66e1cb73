"""How many tuning photos have rescue pairs, round 1's and round 2's (recipes/autoscale_rescue/rule.txt), from a probe
dump of recipes/autoscale_block/dump.py (no heads run; every 2nd photo of each set):

    python recipes/autoscale_block/dump.py D.pt dense-blocks grocery-real fl27-train fl27-train-b synth-val unseen \
        dense-shelves dense-unseen
    python recipes/autoscale_rescue/pairs.py D.pt

Round 1's pairs: every strong view at the level of its best template without the size prior (where the plan put it
elsewhere); round 2's: hedge_peak's pairs (what ``AutoScaleConfig.rescue_confidence`` runs now). The pairs run only on
photos where no detection reaches the calibrated confidence ``rescue_confidence``; this counts where they exist.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict

import torch

from os2d.config import AutoScaleConfig
from os2d.inference.autoscale import _level_index, _top_levels, ladder, plan_levels


def round1_pairs(scores: torch.Tensor, config: AutoScaleConfig, grid_size: int) -> tuple[tuple[int, int], ...]:
    """Round 1's rescue pairs (commit f536261): every strong view at the level of its best template without the size
    prior, where none of its planned levels is that one; at most ``max_levels`` such levels, ranked by strength."""
    plan = plan_levels(scores, config, grid_size)
    sizes = ladder(config)
    log_sizes = torch.tensor([math.log(s) for s in sizes])
    cells = torch.tensor(config.template_cells, dtype=torch.float32)
    strength = scores.gather(1, (scores + config.size_prior * cells.log()[None]).argmax(1, keepdim=True))[:, 0]
    strong = strength >= strength.max() - config.weak_margin
    plain = _level_index(cells[scores.argmax(dim=1)], log_sizes, grid_size, config)
    have = set(enumerate(plan.view_levels)) | set(plan.extra)
    cand = strong & torch.tensor([(v, sizes[int(i)]) not in have for v, i in enumerate(plain.tolist())])
    if not bool(cand.any()):
        return ()
    kept = set(_top_levels(plain, strength, cand, config.max_levels).tolist())
    return tuple((v, sizes[int(plain[v])]) for v in cand.nonzero().flatten().tolist() if int(plain[v]) in kept)


def main(dump: str) -> None:
    config = AutoScaleConfig(rescue_confidence=0.01)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for row in torch.load(dump, weights_only=False):
        scores = row["scores"]  # (V, T)
        one, two = round1_pairs(scores, config, 15), plan_levels(scores, config, 15).rescue
        c = counts[row["set"]]
        c[0] += 1
        c[1] += bool(one)
        c[2] += len(one)
        c[3] += bool(two)
        c[4] += len(two)
    print("| set | photos | round 1: photos with pairs | views | round 2: photos with pairs | views |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, c in counts.items():
        print(f"| {name} | {c[0]} | {c[1]} | {c[2]} | {c[3]} | {c[4]} |")


if __name__ == "__main__":
    main(sys.argv[1])
