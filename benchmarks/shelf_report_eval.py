"""Shelf-report accuracy on generated shelves whose truth is known (``os2d synth --shelf-prob 1``).

The truth report of an image is :func:`os2d.report.shelf_report` of its annotated (not difficult) boxes; the
predicted one is the report of the detections at a score threshold. The threshold is chosen on the even-numbered
images (the score that maximises F1 at IoU >= 0.5, same class) and everything is reported on the odd ones.
Detections on a difficult (heavily occluded) box are left out of both, neither counted nor penalised.

Rows printed: the report of the annotated boxes themselves (``truth boxes``: the row grouping alone) and of the
detections (``os2d``), with:

* ``plan ok``: the truth report's facings per (class, row) used as the planogram; share of its lines ``ok``;
* ``count exact`` / ``count MAE``: facings per (image, class), exact share and mean absolute error;
* ``rows right``: images whose number of shelf rows is right; ``in right row``: matched facings in their row.

    os2d synth --class-images $G/iconic-images-and-descriptions --backgrounds $G/val --output-dir $S \
        --num-images 40 --shelf-prob 1 --seed 21
    os2d detect --images-from list.txt --classes $S/class_images.csv -o $S/detections.json
    python benchmarks/shelf_report_eval.py --data $S --detections $S/detections.json

``--detections`` also takes an ``os2d eval`` run's ``detections.jsonl`` of the same images. The report counts one label
per facing (:data:`os2d.report.ONE_LABEL_IOU`); the rows here are computed without it, and ``--one-label IOU ...`` adds
rows with it at those IoUs, on the even images as well (they decided its default: ``recipes/cross_class/rule.txt``).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from os2d.calibration import best_f1_threshold
from os2d.data.simple_csv import read_simple_csv
from os2d.ops import box_iou
from os2d.report import ShelfReport, compare_planogram, shelf_report
from os2d.report import one_label as report_one_label
from os2d.weights import load_model


def match(dets: list[dict[str, Any]], boxes: np.ndarray, labels: list[str], iou: float = 0.5) -> list[int]:
    """Greedy matching in score order: the index of the box each detection takes (same label), or -1."""
    result = [-1] * len(dets)
    if not dets or not len(boxes):
        return result
    ious = box_iou(torch.tensor([d["box_xyxy"] for d in dets]), torch.from_numpy(boxes)).numpy()
    taken: set[int] = set()
    for k in sorted(range(len(dets)), key=lambda k: -dets[k]["score"]):
        best, best_iou = -1, iou
        for j in range(len(boxes)):
            if j not in taken and labels[j] == dets[k]["label"] and ious[k, j] >= best_iou:
                best, best_iou = j, ious[k, j]
        if best >= 0:
            taken.add(best)
            result[k] = best
    return result


def per_image(data: Any, dets_by_image: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per image: truth boxes/labels (not difficult), its detections without those on difficult boxes."""
    names = [c.name for c in data.classes]
    out = []
    for img in sorted(data.images, key=lambda i: i.image_id):
        labels = [names[int(v)] for v in img.labels]
        dets = dets_by_image.get(img.image_id, [])
        on_difficult = set()
        if img.difficult.any():
            hard = img.boxes_xyxy[img.difficult]
            hard_labels = [lab for lab, d in zip(labels, img.difficult, strict=True) if d]
            on_difficult = {k for k, j in enumerate(match(dets, hard, hard_labels)) if j >= 0}
        keep = ~img.difficult
        out.append({"id": img.image_id, "boxes": img.boxes_xyxy[keep],
                    "labels": [lab for lab, k in zip(labels, keep, strict=True) if k],
                    "dets": [d for k, d in enumerate(dets) if k not in on_difficult]})
    return out


def one_label(dets: list[dict[str, Any]], iou: float) -> list[dict[str, Any]]:
    """The records that no better-scoring record of another class overlaps with IoU >= ``iou`` (the report's own
    :func:`os2d.report.one_label`, on the records so that they can still be matched to the boxes)."""
    items = [(d["label"], float(d["score"]), tuple(float(v) for v in d["box_xyxy"])) for d in dets]
    kept = {id(it) for it in report_one_label(items, iou)}
    return [d for d, it in zip(dets, items, strict=True) if id(it) in kept]


def f1_threshold(images: list[dict[str, Any]]) -> float:
    """The score threshold with the best F1 (IoU 0.5, same class) over ``images``."""
    scores, hits = [], []
    for im in images:
        taken = match(im["dets"], im["boxes"], im["labels"])
        scores += [d["score"] for d in im["dets"]]
        hits += [j >= 0 for j in taken]
    return best_f1_threshold(np.asarray(scores), np.asarray(hits, bool), sum(len(im["labels"]) for im in images))


def truth_report(im: dict[str, Any]) -> ShelfReport:
    return shelf_report([{"label": lab, "score": 1.0, "box_xyxy": b.tolist()}
                         for lab, b in zip(im["labels"], im["boxes"], strict=True)], one_label_iou=None)


def report_metrics(images: list[dict[str, Any]], threshold: float | None, *,
                   one_label_iou: float | None = None) -> dict[str, float]:
    """Metrics of the reports of the detections (``threshold``; ``one_label_iou``: the report's cross-class
    suppression, :func:`os2d.report.shelf_report`) or of the truth boxes (None) vs the truth."""
    ok = lines = exact = pairs = rows_right = right_row = matched = 0
    abs_err = 0.0
    for im in images:
        truth = truth_report(im)
        if threshold is None:
            dets = [{"label": lab, "score": 1.0, "box_xyxy": b.tolist()} for lab, b in
                    zip(im["labels"], im["boxes"], strict=True)]
        else:
            dets = [d for d in im["dets"] if d["score"] >= threshold]
            if one_label_iou is not None:
                dets = one_label(dets, one_label_iou)
        pred = shelf_report(dets, one_label_iou=None)  # the arm's suppression is applied above, on the records
        comparison = compare_planogram(pred, truth.row_counts())
        ok += sum(c["status"] == "ok" for c in comparison)
        lines += len(comparison)
        t, p = truth.counts(), pred.counts()
        for name in set(t) | set(p):
            exact += t.get(name, 0) == p.get(name, 0)
            abs_err += abs(t.get(name, 0) - p.get(name, 0))
            pairs += 1
        rows_right += truth.num_rows == pred.num_rows
        # rows of matched facings: truth row of the box vs predicted row of the detection
        truth_row = {tuple(round(v, 2) for v in f.box_xyxy): f.row for f in truth.facings}
        pred_row = {tuple(round(v, 2) for v in f.box_xyxy): f.row for f in pred.facings}
        for d, j in zip(dets, match(dets, im["boxes"], im["labels"]), strict=True):
            if j >= 0:
                matched += 1
                right_row += pred_row[tuple(round(v, 2) for v in d["box_xyxy"])] == \
                    truth_row[tuple(round(float(v), 2) for v in im["boxes"][j])]
    n = max(1, len(images))
    return {"plan ok": ok / max(1, lines), "count exact": exact / max(1, pairs), "count MAE": abs_err / max(1, pairs),
            "rows right": rows_right / n, "in right row": right_row / max(1, matched),
            "facings": sum(len(im["labels"]) for im in images)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="os2d synth folder (annotations.csv, class_images.csv)")
    ap.add_argument("--detections", required=True,
                    help="os2d detect JSON of its images, or an os2d eval detections.jsonl of them")
    ap.add_argument("--one-label", type=float, nargs="*", default=[],
                    help="also report with the report's cross-class suppression at these IoUs (rows on the even "
                         "images too: the rule of recipes/cross_class/rule.txt decides on them)")
    ap.add_argument("--weights", default="default",
                    help="also report at these weights' calibrated confidence threshold (when they have one)")
    args = ap.parse_args()
    data = read_simple_csv(Path(args.data) / "annotations.csv", Path(args.data) / "class_images.csv",
                           check_class_images=False)
    text = Path(args.detections).read_text()
    if args.detections.endswith(".jsonl"):  # os2d eval records: one image per line
        doc = {"images": [json.loads(line) for line in text.splitlines() if line.strip()]}
    else:
        doc = json.loads(text)
    root = Path(args.data).resolve()
    dets_by_image: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in doc["images"]:
        dets_by_image[str(Path(rec["path"]).resolve().relative_to(root))] = rec["detections"]
    images = per_image(data, dets_by_image)
    tune, test = images[0::2], images[1::2]
    threshold = f1_threshold(tune)
    print(f"{len(images)} images; threshold {threshold:.3f} (best F1 on the {len(tune)} even images); "
          f"reported on the {len(test)} odd images")
    cols = ["plan ok", "count exact", "count MAE", "rows right", "in right row"]
    print("| report of | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    rows = [("truth boxes (rows alone)", None), (f"os2d, score >= {threshold:.3f} (best F1, even images)", threshold)]
    calibration = load_model(args.weights).calibration
    if calibration is not None:
        score = calibration.threshold_score
        rows.append((f"os2d, calibrated threshold {calibration.threshold} (score {score:.3f})", score))
    arms = [(name, t, None) for name, t in rows]
    arms += [(f"{name}, one label at IoU >= {iou}", t, iou) for name, t in rows[1:] for iou in args.one_label]
    halves = ([("even (decides)", tune)] if args.one_label else []) + [("odd", test)]
    for half, ims in halves:
        if len(halves) > 1:
            print(f"{half} images:")
        for name, t, iou in arms:
            m = report_metrics(ims, t, one_label_iou=iou)
            print(f"| {name} | " + " | ".join(f"{m[c]:.2f}" if c == "count MAE" else f"{100 * m[c]:.1f}%"
                                             for c in cols) + " |")


if __name__ == "__main__":
    main()
