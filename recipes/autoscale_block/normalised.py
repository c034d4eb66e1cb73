"""Offline: the template (size) each true-class view would get if a template's peak were judged against the rest of
its own score map instead of by the size prior, on the probe maps of recipes/autoscale_block/dump.py.

    python recipes/autoscale_block/normalised.py DUMP.pt

Per set, the share of true-class views whose picked template is within 1.41x / 2x of the true size (grocery-real: 34
cells). Rows: the default (score + 0.06 ln(cells)), the plain score, and the peak minus the map's mean, median or 90th
percentile, the z-score, and the peak minus a fraction of the mean (border positions, where the template hangs over
the edge, left out).
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict

import torch

from os2d.config import InferenceConfig

HOWS = ("default", "plain", "mean", "z", "median", "p90", "mix0.5", "mix0.75")


def inner(m: torch.Tensor, side: int) -> torch.Tensor:
    """The positions of a score map where a template of ``side`` cells lies wholly inside the probe (no border zeros)."""
    h = side // 2
    height, width = m.shape
    return m[h : height - h, h : width - h] if height > 2 * h and width > 2 * h else m


def pick(row: dict, v: int, how: str, auto) -> int:
    """The template index view ``v`` of one dumped photo gets under rule ``how``."""
    scores = row["scores"][v]
    log_cells = torch.tensor(auto.template_cells, dtype=torch.float32).log()
    if how == "default":
        return int((scores + auto.size_prior * log_cells).argmax())
    if how == "plain":
        return int(scores.argmax())
    vals = []
    for m, s in zip(row["maps"][v], auto.template_cells, strict=True):
        m = m.float()
        rest = inner(m, max(1, round(s / 2)) if s > auto.pool_above else s).flatten()
        peak = float(m.max())
        if how == "mean":
            vals.append(peak - float(rest.mean()))
        elif how == "z":
            vals.append((peak - float(rest.mean())) / float(rest.std() + 1e-6))
        elif how == "median":
            vals.append(peak - float(rest.median()))
        elif how == "p90":
            vals.append(peak - float(rest.quantile(0.9)))
        else:  # "mixA": the peak minus A times the mean
            vals.append(peak - float(how[3:]) * float(rest.mean()))
    return int(torch.tensor(vals).argmax())


def main(path: str) -> None:
    rows = torch.load(path, weights_only=False)
    auto = InferenceConfig().auto_scale
    stats = defaultdict(lambda: [0, 0, 0])  # (set, how) -> [views, within 1.41x, within 2x]
    for r in rows:
        for size, views in r["classes"]:
            size = 34.0 if size is None else size
            for v in views:
                for how in HOWS:
                    err = abs(math.log(auto.template_cells[pick(r, v, how, auto)] / size))
                    s = stats[(r["set"], how)]
                    s[0] += 1
                    s[1] += err <= math.log(2**0.5) + 1e-6
                    s[2] += err <= math.log(2) + 1e-6
    names = list(dict.fromkeys(r["set"] for r in rows))
    print("| how | " + " | ".join(names) + " |")
    for how in HOWS:
        print(f"| {how} | " + " | ".join(f"{100 * stats[(n, how)][1] / stats[(n, how)][0]:.0f}/"
                                        f"{100 * stats[(n, how)][2] / stats[(n, how)][0]:.0f}" for n in names) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
