"""Negative exemplars: how many look-alike confusions they remove, and what they cost (mAP, true positives, time).

Two sets, each run without and with negatives, default settings otherwise (``image_size="auto"``):

* the OS2D demo shelf: the two Danissimo yogurts, each given the other's class image as its negative;
* generated look-alike shelves (``os2d synth``): going through the class CSV in order, a class whose picture the
  exemplar check (:mod:`os2d.exemplar`) calls nearly identical to an already kept class becomes a negative of the
  first such class; the gallery is the kept classes that got negatives. Ground truth: their boxes only; a
  confusion is a detection of a kept class on a box of one of its negatives' classes (IoU >= 0.5).

    python benchmarks/negatives_eval.py --synth ~/os2d-runs/synth-shelves-report
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from os2d.calibration import best_f1_threshold, label_detections
from os2d.data.simple_csv import read_simple_csv
from os2d.detector import Detector
from os2d.evaluation.metrics import ImageGroundTruth, evaluate_detections
from os2d.exemplar import DUPLICATE_SIMILARITY, grid_similarity
from os2d.ops import box_iou
from os2d.results import Detections

HERE = Path(__file__).resolve().parent


def _demo_module():
    spec = importlib.util.spec_from_file_location("demo_shelf", HERE / "demo_shelf.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def confusions(dets: Detections, boxes: np.ndarray, box_labels: list[str], wrong: dict[str, set[str]],
               min_score: float, top: int | None = None) -> int:
    """Detections (score >= ``min_score``, the ``top`` best) of class A on a box of a class in ``wrong[A]``."""
    n = len(dets) if top is None else min(top, len(dets))
    if not n or not len(boxes):
        return 0
    ious = box_iou(dets.boxes_xyxy[:n], torch.from_numpy(boxes).float())
    out = 0
    for i in range(n):
        if float(dets.scores[i]) < min_score:
            continue
        name = dets.class_names[int(dets.labels[i])]
        out += any(ious[i, j] >= 0.5 and box_labels[j] in wrong.get(name, ()) for j in range(len(boxes)))
    return out


def demo(detector: Detector, data: Path) -> None:
    mod = _demo_module()
    facings = mod.FACINGS
    names = ["class_image_0", "class_image_1"]
    pictures = [Image.open(data / f"{n}.jpg").convert("RGB") for n in names]
    photo = Image.open(data / "input_image.jpg").convert("RGB")
    gt = ImageGroundTruth(facings[:, 1:], facings[:, 0].astype(np.int64))
    print("OS2D demo shelf, IoU 0.5: each product's negative is the other product's class image")
    print("| negatives | top-8 hits | AP product 0 | AP product 1 | confusions in top 8 | confusions, score >= 0.5 "
          "| s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    wrong = {names[0]: {names[1]}, names[1]: {names[0]}}
    labels = [names[int(k)] for k in facings[:, 0]]
    for use in (False, True):
        for name, pic, other in zip(names, pictures, pictures[::-1], strict=True):
            if name in detector.classes:
                detector.remove_class(name)
            detector.add_class(name, pic, negatives=[other] if use else [])
        t0 = time.perf_counter()
        dets = detector.detect(photo)
        seconds = time.perf_counter() - t0
        hits = mod.ranking(dets.boxes_xyxy, dets.scores, dets.labels, 0.5)
        ev = evaluate_detections([dets], [gt], 2, 0.5)
        print(f"| {'yes' if use else 'no'} | {sum(hits[:8])}/8 | {ev.ap_per_class[0]:.3f} | {ev.ap_per_class[1]:.3f} "
              f"| {confusions(dets, facings[:, 1:], labels, wrong, -1e9, top=8)} "
              f"| {confusions(dets, facings[:, 1:], labels, wrong, 0.5)} | {seconds:.1f} |", flush=True)
    for name in names:
        detector.remove_class(name)


def lookalike_groups(detector: Detector, class_names: list[str], pictures: dict[str, Image.Image]
                     ) -> dict[str, list[str]]:
    """Kept class -> the later classes the exemplar check calls nearly identical to it (first such kept class)."""
    kept: list[str] = []
    kernels: list[torch.Tensor] = []
    groups: dict[str, list[str]] = {}
    for name in class_names:
        k, views, _ = detector.encode_class_images(pictures[name])
        k = k[[i for i, v in enumerate(views) if v == "original"]]
        if kept:  # the exemplar check's similarity of the original views, one per kept class
            sim = grid_similarity(k.float(), torch.cat(kernels).float()).amax(dim=0)
            similar = [i for i, s in enumerate(sim.tolist()) if s >= DUPLICATE_SIMILARITY]
            if similar:
                groups.setdefault(kept[similar[0]], []).append(name)
                continue
        kept.append(name)
        kernels.append(k)
    return groups


def synthetic(detector: Detector, folder: Path, threshold_iou: float = 0.5) -> None:
    data = read_simple_csv(folder / "annotations.csv", folder / "class_images.csv")
    all_names = [c.name for c in data.classes]
    pictures = {c.name: Image.open(c.image_paths[0]).convert("RGB") for c in data.classes}
    groups = lookalike_groups(detector, all_names, pictures)
    kept = list(groups)
    wrong = {k: set(v) for k, v in groups.items()}
    print(f"\ngenerated look-alike shelves ({folder.name}, {len(data.images)} images): {len(kept)} classes with "
          f"{sum(len(v) for v in groups.values())} look-alike negatives: "
          + "; ".join(f"{k} <- {', '.join(v)}" for k, v in groups.items()))
    images = sorted(data.images, key=lambda i: i.image_id)
    gts, all_boxes = [], []
    for img in images:
        labels = [all_names[int(v)] for v in img.labels]
        keep = np.array([lab in kept for lab in labels], dtype=bool)
        gts.append(ImageGroundTruth(img.boxes_xyxy[keep], np.array([kept.index(lab) for lab in labels
                                                                    if lab in kept], dtype=np.int64),
                                    img.difficult[keep]))
        all_boxes.append((img.boxes_xyxy, labels))
    runs: dict = {}
    for use in (False, True):
        for name in list(detector.classes):
            detector.remove_class(name)
        for name in kept:
            detector.add_class(name, pictures[name], negatives=[pictures[n] for n in groups[name]] if use else [])
        t0 = time.perf_counter()
        runs[use] = [detector.detect(img.path) for img in images]
        runs[use, "s"] = (time.perf_counter() - t0) / len(images)
    t0 = time.perf_counter()
    runs["demote"] = [detector.detect(img.path, negative_mode="demote") for img in images]
    runs["demote", "s"] = (time.perf_counter() - t0) / len(images)
    # best-F1 score threshold of the run without negatives (IoU 0.5, same class)
    threshold = best_f1_threshold(*label_detections(runs[False], gts),
                                  sum(int((~g.difficult).sum()) for g in gts))
    print(f"score threshold {threshold:.3f} (best F1 without negatives)")
    print("| negatives | mAP@0.5 | recall@0.5 | true positives >= thr | confusions >= thr | other false positives "
          ">= thr | s/image |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for use, label in ((False, "no"), (True, "yes, drop"), ("demote", "yes, demote")):
        ev = evaluate_detections(runs[use], gts, len(kept), threshold_iou, class_names=kept)
        tp, fp = _tp_fp(runs[use], gts, threshold)
        conf = sum(confusions(d, b, lab, wrong, threshold) for d, (b, lab) in zip(runs[use], all_boxes, strict=True))
        print(f"| {label} | {100 * ev.map:.1f} | {100 * ev.recall:.1f} | {tp} | {conf} | "
              f"{fp - conf} | {runs[use, 's']:.2f} |", flush=True)


def _tp_fp(runs: list[Detections], gts: list[ImageGroundTruth], min_score: float) -> tuple[int, int]:
    """Correct and wrong detections with score >= ``min_score`` (VOC matching, difficult boxes left out)."""
    scores, hits = label_detections(runs, gts)
    kept = scores >= min_score
    return int(hits[kept].sum()), int((~hits[kept]).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default="default")
    ap.add_argument("--demo", type=Path, default=HERE.parents[1] / "shared" / "data" / "os2d-demo")
    ap.add_argument("--synth", type=Path, help="an os2d synth folder with look-alike classes (skipped if not given)")
    args = ap.parse_args()
    detector = Detector.from_weights(args.weights)
    demo(detector, args.demo)
    if args.synth:
        synthetic(detector, args.synth)


if __name__ == "__main__":
    main()
