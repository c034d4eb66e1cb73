"""Where ``heads_precision="int8-exact"`` spends its time against the dense float32 heads, per image (the
break-even behind ``os2d.inference.exact_values.MIN_LOCATIONS_PER_DETECTION``).

A gallery of the set's first ``--classes`` classes; every ``--every``-th image, at most ``--max-images``; both arms
forced (the cost switch off) and run in turn on each image at default settings; seconds per image of the whole
detection, the heads, the float32 windows and the NMS calls, and the head locations (class views x feature cells,
summed over the levels) per image.

    python benchmarks/exact_cost.py --set fl27-train --classes 6 --every 7 --max-images 14
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from os2d.runtime import tune_allocator

tune_allocator()  # as the command line does, before torch is imported

import os2d.inference.decode as decode  # noqa: E402
import os2d.inference.detect as detect  # noqa: E402
import os2d.inference.exact_values as exact_values  # noqa: E402
from os2d.detector import Detector  # noqa: E402
from os2d.evaluation.harness import _class_names, _load_class_images  # noqa: E402
from os2d.io import load_image  # noqa: E402
from os2d.model.os2d import Os2dModel  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_probe import load_set  # noqa: E402

PARTS = {"heads": (Os2dModel, "heads"), "windows": (Os2dModel, "head_windows"),
         "nms (rounds)": (exact_values, "merged_keep"), "nms": (detect, "merge_and_nms")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="fl27-train")
    ap.add_argument("--classes", type=int, default=6, help="gallery: the set's first N classes")
    ap.add_argument("--every", type=int, default=7)
    ap.add_argument("--max-images", type=int, default=14)
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    args = ap.parse_args()
    exact_values.MIN_LOCATIONS_PER_DETECTION = 0  # both arms as named, whatever the image
    seconds: dict[str, float] = {}
    locations = [0]

    def timed(key, fn):
        def run(*a, **kw):
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t0
            return out
        return run

    for key, (owner, name) in PARTS.items():
        setattr(owner, name, timed(key, getattr(owner, name)))
    heads = decode.Os2dModel.heads

    def counted(self, features, kernels, **kw):
        locations[0] += kernels.shape[0] * features.shape[-2] * features.shape[-1]
        return heads(self, features, kernels, **kw)

    decode.Os2dModel.heads = counted
    dataset = load_set(args.set, args.synth_dir)
    det = Detector.from_weights("default")
    for i, (name, imgs) in enumerate(zip(_class_names(dataset), _load_class_images(dataset), strict=True)):
        if i < args.classes:
            det.add_class(name, list(imgs))
    images = [load_image(r.path) for r in dataset.images[:: args.every][: args.max_images]]
    arms = ("fp32", "int8-exact")
    for arm in arms:  # warm-up
        det.detect(images[0], heads_precision=arm)
    rows = {arm: {} for arm in arms}
    for image in images:
        for arm in arms:
            seconds.clear()
            locations[0] = 0
            t0 = time.perf_counter()
            det.detect(image, heads_precision=arm)
            seconds["total"] = time.perf_counter() - t0
            for key, value in seconds.items():
                rows[arm][key] = rows[arm].get(key, 0.0) + value / len(images)
            rows[arm]["locations"] = rows[arm].get("locations", 0.0) + locations[0] / len(images)
    cols = ("total", "heads", "windows", "nms (rounds)", "nms", "locations")
    print(f"{args.set}, {args.classes} classes, {len(images)} images (s / image; head locations / image)")
    print("| arm | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for arm in arms:
        r = rows[arm]
        print(f"| {arm} | " + " | ".join(f"{r.get(c, 0.0):.3f}" if c != "locations" else f"{r.get(c, 0):.0f}"
                                          for c in cols) + " |")


if __name__ == "__main__":
    main()
