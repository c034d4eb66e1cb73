"""The second look with a learned projection of its cells (issue 14, look-alikes).

The second look compares a detection's crop with its class (and with the other classes: rivals) by cosines of
backbone cells. ``recipes/verify_projection`` learns a (C, C) projection P of those cells (started at the identity)
on crops of training photos, with a pairwise ranking loss on the second look's own score. Here both arms re-score
the same raw detections (default settings, the second look off, capped at ``verify_top``) with the default second
look (gamma 2, rivals 4, 160^2 crops, shape search 10): ``identity`` (the default) and ``learned`` (``--projection``).

Rule, written before the first measurement (``~/os2d-runs/vproj/rule.txt``): adopt P as the default only if the mean
mAP@0.5 over the two tuning sets (``synth-val``, ``fl27-train``) gains >= +1.0, neither set loses more than 0.3
mAP@0.5, and the mean mAP@0.7 is not lower by more than 0.5; one training run with the recipe's defaults. Held-out
sets (``fl27-val``, ``demo``) only afterwards.

    python benchmarks/verify_projection.py --projection ~/os2d-runs/vproj/projection.pt --sets synth-val fl27-train
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from os2d.config import InferenceConfig
from os2d.inference.verify import verify_detections

sys.path.insert(0, str(Path(__file__).resolve().parent))
from second_look_arms import add_set_args, print_table, run_arms  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_set_args(ap)
    ap.add_argument("--projection", type=Path, required=True, help="a file written by recipes/verify_projection/train.py")
    args = ap.parse_args()
    base = InferenceConfig()
    projections = {"identity": None, "learned": torch.load(args.projection)["projection"].float()}

    def look(det, raw, image, arm, _context):
        g = det.gallery
        return verify_detections(det.model, raw, image, g.kernels, g.view_class, g.view_aspect, base.verify_rescore,
                                 crop=base.verify_crop, top=base.verify_top, max_detections=base.max_detections,
                                 reshape_top=base.reshape_top, size=base.verify_size, rival_power=base.verify_rivals,
                                 projection=projections[arm])

    rows = run_arms(args, list(projections), look, raw_cap=base.verify_top)
    print_table("the second look with a learned projection of its cells", rows, "arm", str)


if __name__ == "__main__":
    main()
