"""Size search at the second look (issue 14, tighter boxes), tried and not adopted (README, "Shape search", round 3).

The shape search's K best detections (``InferenceConfig.reshape_top``) also try their own shape and each stretched
shape scaled about the centre by side factors f (area f^2); the crop that agrees best with the class wins, the
score is unchanged. The candidates are added by wrapping :func:`os2d.inference.verify.reshape_candidates` for the
arm being run; everything else is the library's :func:`~os2d.inference.verify.verify_detections` at default
settings (rivals on), every arm on the same raw detections (``second_look_arms.run_arms``).

Rule (``~/os2d-runs/c21/size_rule.txt``, written before the tuning run): an arm passes if the mean mAP@0.5 gains
>= 0.3 or the mean mAP@0.7 >= 0.5, neither set loses more than 0.3 mAP@0.5 nor 0.5 mAP@0.7, and it adds <= 0.1 s per
image. Every arm failed on the synthetic shelves.

    python benchmarks/size_search.py --sets synth-val fl27-train --arms none 0.8 0.8,1.25 0.7,1.4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor

import os2d.inference.verify as verify
from os2d.config import InferenceConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from second_look_arms import add_set_args, print_table, run_arms  # noqa: E402

_shape_candidates = verify.reshape_candidates


def sized_candidates(factors: tuple[float, ...]):
    """A ``reshape_candidates`` that adds, for every detection's own and stretched parallelograms, copies scaled
    about their centre by each side factor of ``factors``."""

    def candidates(corners: Tensor, class_aspect: Tensor) -> tuple[Tensor, Tensor]:
        shapes, owner = _shape_candidates(corners, class_aspect)  # (M, 4, 2), (M,)
        base = torch.cat([corners, shapes])
        base_owner = torch.cat([torch.arange(len(corners)), owner])
        centre = base.mean(dim=1, keepdim=True)  # (N + M, 1, 2)
        out = [shapes] + [centre + (base - centre) * f for f in factors]
        return torch.cat(out), torch.cat([owner] + [base_owner] * len(factors))

    return candidates


def parse_factors(text: str) -> tuple[float, ...]:
    return () if text == "none" else tuple(float(x) for x in text.split(","))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_set_args(ap)
    ap.add_argument("--arms", nargs="+", default=["none", "0.8", "0.8,1.25", "0.7,1.4"],
                    help="comma-separated side factors per arm ('none': the default shape search); the first is the "
                         "baseline the added time is measured against")
    args = ap.parse_args()
    base = InferenceConfig()

    def look(det, raw, image, arm, _):
        verify.reshape_candidates = sized_candidates(parse_factors(arm))
        try:
            g = det.gallery
            return verify.verify_detections(
                det.model, raw, image, g.kernels, g.view_class, g.view_aspect, base.verify_rescore,
                crop=base.verify_crop, top=base.verify_top, max_detections=base.max_detections,
                reshape_top=base.reshape_top, size=base.verify_size, rival_power=base.verify_rivals)
        finally:
            verify.reshape_candidates = _shape_candidates

    rows = run_arms(args, args.arms, look, raw_cap=base.verify_top)
    print_table("size search at the second look", rows, "side factors", str, added=True)


if __name__ == "__main__":
    main()
