"""Probe scores of every gallery view on every 2nd image of the tuning sets, for recipes/autoscale_peak/table.py.

    python recipes/autoscale_peak/dump.py DUMP.pt grocery-real fl27-train fl27-train-b synth-val unseen \
        dense-shelves dense-unseen      # about two minutes

Per image: the (V, T) probe scores of all views (absent classes too: they decide which levels a plan adds), and per
class present its true size in probe cells (grocery-real: None) and its view indices.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autoscale_closeups.offline import probe_photos  # noqa: E402

from os2d.config import InferenceConfig  # noqa: E402
from os2d.inference.autoscale import probe_scores  # noqa: E402


def main(out: Path, sets: tuple[str, ...]) -> None:
    auto = InferenceConfig().auto_scale
    rows = []
    for set_name, g, feats, classes in probe_photos(sets):
        scores = probe_scores(feats, g.kernels, auto.template_cells, pool_above=auto.pool_above)  # (V, T)
        rows.append({"set": set_name, "scores": scores, "classes": [(s, v.tolist()) for s, v in classes]})
    torch.save(rows, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), tuple(sys.argv[2:]))
