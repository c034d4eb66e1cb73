"""Cross-class suppression (one label per object) measured offline on a default evaluation's records.

``os2d eval`` writes the final detections of every image (``detections.jsonl``); this script reads them back, applies
:func:`os2d.inference.one_label.suppress_cross_class` at each ``--arms`` IoU and recomputes VOC mAP@0.5 / @0.7 and
recall@0.5 against the set's boxes, so every arm sees exactly the same detections (the suppression is a pure
post-processing step). Also printed: the detections removed per image, and how many of them were correct at IoU 0.5.
Rule: ``recipes/cross_class/rule.txt``.

    os2d eval --boxes $S/annotations.csv --classes $S/class_images.csv --image-dir $S --output-dir RUN --quiet
    python benchmarks/cross_class.py --set unseen --eval-dir RUN --arms 0.5 0.7
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from os2d.evaluation.harness import _class_names, read_detections_jsonl
from os2d.evaluation.metrics import evaluate_detections
from os2d.inference.one_label import suppress_cross_class
from os2d.ops import box_iou

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_probe import load_set  # noqa: E402


def correct_mask(dets, image, iou: float = 0.5) -> np.ndarray:
    """(N,) whether each detection overlaps a box of its own label with IoU >= ``iou`` (no one-to-one matching:
    a count of what was removed, not a metric)."""
    if len(dets) == 0 or len(image.boxes_xyxy) == 0:
        return np.zeros(len(dets), bool)
    ious = box_iou(dets.boxes_xyxy.float(), torch.as_tensor(image.boxes_xyxy, dtype=torch.float32)).numpy()
    same = dets.labels.numpy()[:, None] == np.asarray(image.labels)[None, :]
    return ((ious >= iou) & same).any(axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", required=True, help="fl27-train | synth-val | unseen | fl27-val | demo")
    ap.add_argument("--eval-dir", type=Path, required=True, help="an os2d eval --output-dir of that set")
    ap.add_argument("--arms", type=float, nargs="+", default=[0.5, 0.7], help="IoU thresholds")
    ap.add_argument("--synth-dir", type=Path, default=Path.home() / "os2d-runs" / "synth-grocery-eval")
    args = ap.parse_args()
    dataset = load_set(args.set, args.synth_dir)
    names = _class_names(dataset)
    by_id = read_detections_jsonl(args.eval_dir / "detections.jsonl", names)
    missing = [im.image_id for im in dataset.images if im.image_id not in by_id]
    if missing:
        raise SystemExit(f"{len(missing)} images of {args.set} have no record in {args.eval_dir} (e.g. {missing[0]})")
    images = dataset.images
    base = [by_id[im.image_id] for im in images]
    print(f"{args.set}: {len(images)} images, {sum(len(d) for d in base)} detections ({args.eval_dir})")
    print("| arm | mAP@0.5 (Δ) | mAP@0.7 (Δ) | recall@0.5 | removed / image | removed that were correct |")
    print("|---|---:|---:|---:|---:|---:|")
    ref = None
    for arm in [None, *args.arms]:
        dets = base if arm is None else [suppress_cross_class(d, arm) for d in base]
        r5 = evaluate_detections(dets, images, len(names), 0.5, class_names=names)
        r7 = evaluate_detections(dets, images, len(names), 0.7, class_names=names)
        m5, m7 = 100 * r5.map, 100 * r7.map
        if ref is None:
            ref = (m5, m7)
        removed = sum(len(b) - len(d) for b, d in zip(base, dets, strict=True))
        lost = sum(int(correct_mask(b, im).sum() - correct_mask(d, im).sum())
                   for b, d, im in zip(base, dets, images, strict=True))
        name = "default (none)" if arm is None else f"IoU >= {arm}"
        print(f"| {name} | {m5:.2f} ({m5 - ref[0]:+.2f}) | {m7:.2f} ({m7 - ref[1]:+.2f}) | "
              f"{100 * r5.recall:.1f} | {removed / len(images):.2f} | {lost} |")


if __name__ == "__main__":
    main()
