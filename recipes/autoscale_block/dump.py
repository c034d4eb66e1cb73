"""Probe score *maps* of the tuning sets, for recipes/autoscale_block/table.py.

    python recipes/autoscale_block/dump.py DUMP.pt dense-blocks grocery-real fl27-train fl27-train-b synth-val \
        unseen dense-shelves dense-unseen      # a few minutes

Per image (every 2nd, as recipes/autoscale_closeups): the (V, T) probe scores of all gallery views (the plan needs
them), and per class present its true size in probe cells (grocery-real: None), its view indices and, for those views,
each template's score map over the probe ((k, H', W') per template; templates above ``pool_above`` cells on the 2x2-
pooled grid, as ``probe_scores`` slides them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autoscale_closeups.offline import probe_photos  # noqa: E402

from os2d.config import InferenceConfig  # noqa: E402
from os2d.inference.autoscale import probe_scores, template_score_maps  # noqa: E402


def probe_maps(features: Tensor, kernels: Tensor, cells: tuple[int, ...], pool_above: int) -> list[Tensor]:
    """Every square template's whole score map (:func:`os2d.inference.autoscale.template_score_maps`): per template
    a (V, H', W') tensor (H' x W' the probe's grid, or the pooled grid above ``pool_above`` cells)."""
    return [maps for _, _, maps in template_score_maps(features, kernels, cells, pool_above=pool_above)]


def main(out: Path, sets: tuple[str, ...]) -> None:
    auto = InferenceConfig().auto_scale
    rows = []
    for set_name, g, feats, classes in probe_photos(sets):
        scores = probe_scores(feats, g.kernels, auto.template_cells, pool_above=auto.pool_above)  # (V, T)
        present = sorted({int(v) for _, views in classes for v in views})
        maps = probe_maps(feats, g.kernels[present], auto.template_cells, auto.pool_above) if present else []
        if present:
            check = torch.stack([m.flatten(1).amax(1) for m in maps], dim=1)
            assert torch.allclose(check, scores[present], atol=1e-5), "maps disagree with probe_scores"
        rows.append({"set": set_name, "scores": scores, "grid": tuple(feats.shape[-2:]),
                     "classes": [(s, v.tolist()) for s, v in classes],
                     "maps": {v: [m[i].half() for m in maps] for i, v in enumerate(present)}})
    torch.save(rows, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), tuple(sys.argv[2:]))
