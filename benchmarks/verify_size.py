"""A cheaper second look: smaller crops (issue 14, time at default settings).

The second look (:mod:`os2d.inference.verify`) resamples each of an image's 100 best detections to the class image's
size (area ``class_image_size``^2 = 240^2) and encodes the crop with the backbone: about a third of a detection's
time at default settings. Here the crops are resampled to area ``s``^2 instead and compared with class grids encoded
at the same side (``own``: the class views re-encoded at area ``s``^2) or with the gallery's own kernels
(``shared``). The shape search uses the same side; the rivals are on (``verify_rivals``, the default's; the tables in
the README before the rivals became the default were measured without them).

Per set, one detection pass at default settings with the second look off (the raw detections, capped at 100), then
per image :func:`os2d.inference.verify.verify_detections` once per arm, every arm on the same raw detections, timed
in turn. VOC mAP at IoU 0.5 and 0.7, recall, seconds per image of the second look.

Rule, written before the first measurement (``~/os2d-runs/c19/verify_size_rule.txt``): arms s in {192, 160} x
{own, shared} against s = 240. Among the arms with mAP@0.5 within 0.3 of the default on each tuning set
(``synth-val``, ``fl27-train``), mean mAP@0.7 within 0.5 and recall@0.5 at most 0.3 lower on either set, the fastest
becomes the default; if none passes, the default stays. Held-out sets (``fl27-val``, ``demo``) only afterwards.

    python benchmarks/verify_size.py --sets synth-val fl27-train
    python benchmarks/verify_size.py --sets demo fl27-val
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from os2d.config import InferenceConfig
from os2d.evaluation.harness import _load_class_images
from os2d.inference.verify import verify_detections

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_probe import load_set  # noqa: E402
from second_look_arms import add_set_args, arm_parser, print_table, run_arms  # noqa: E402


@contextmanager
def class_size(model, side: int):
    """``model.config.class_image_size`` set to ``side`` inside the block."""
    old = model.config
    model.config = replace(old, class_image_size=side)
    try:
        yield
    finally:
        model.config = old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_set_args(ap)
    ap.add_argument("--arms", nargs="+", type=arm_parser("own"),
                    default=[(240, "own"), (192, "own"), (192, "shared"), (160, "own"), (160, "shared")],
                    help="side:kernels, the first is the baseline (default: 240:own 192:own 192:shared 160:own "
                         "160:shared)")
    ap.add_argument("--raw-cap", type=int, default=100, help="raw detections kept per image (the default's cap)")
    args = ap.parse_args()
    base = InferenceConfig()

    def arm_kernels(det, set_name: str) -> dict:
        """The class grids each arm compares with, in the gallery's view order (the class images read once)."""
        model, g = det.model, det.gallery
        own = [arm for arm in args.arms if arm[1] != "shared" and arm[0] != model.config.class_image_size]
        class_images = _load_class_images(load_set(set_name, args.synth_dir)) if own else []
        kernels = dict.fromkeys(args.arms, g.kernels)
        for side, kind in own:
            with class_size(model, side):
                kernels[(side, kind)] = torch.cat([det.encode_class_images(list(imgs)).kernels
                                                   for imgs in class_images])
            assert kernels[(side, kind)].shape == g.kernels.shape
        return kernels

    def look(det, raw, image, arm, kernels):
        g = det.gallery
        with class_size(det.model, arm[0]):  # "own": class grids at the crop's side; size= gives the side to both
            return verify_detections(det.model, raw, image, kernels[arm], g.view_class, g.view_aspect,
                                     base.verify_rescore, crop=base.verify_crop, top=base.verify_top,
                                     max_detections=base.max_detections, reshape_top=base.reshape_top,
                                     size=arm[0], rival_power=base.verify_rivals)

    rows = run_arms(args, args.arms, look, raw_cap=args.raw_cap, prepare=arm_kernels)
    print_table("the second look at crop side s", rows, "side kernels", lambda a: f"{a[0]} {a[1]}")


if __name__ == "__main__":
    main()
