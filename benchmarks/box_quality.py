"""Box quality of finished ``os2d eval`` runs: mAP at IoU 0.5 and 0.7, and how well the first match of each box fits.

Issue 14 asks for box quality at IoU 0.5 and 0.7, not only the one IoU an evaluation ran with. This re-scores the
detections an ``os2d eval`` folder already holds (no detection is run) and, for every ground-truth box, takes the
best-ranked detection of its class that overlaps it with IoU >= 0.3 (the one VOC AP matches first) and reports the
quartiles of its IoU, of log(detection aspect / box aspect) and of log(detection area / box area). A loss of mAP@0.7
with the same IoU quartiles means the tight boxes rank lower, not that the boxes got looser.

    python benchmarks/box_quality.py OUT_A OUT_B ...   # run where the evaluations ran (relative dataset paths)
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

from os2d.evaluation.metrics import evaluate_detections
from os2d.evaluation.runs import EvalRun, load_eval_run
from os2d.ops import box_iou

MATCH_IOU = 0.3


def first_matches(run: EvalRun) -> tuple[list[float], list[float], list[float]]:
    """(IoU, log aspect ratio det / box, log area det / box) of each box's first-ranked detection with IoU >= 0.3."""
    ious, aspects, areas = [], [], []
    for image, det in zip(run.images, run.detections, strict=True):
        boxes, labels = torch.as_tensor(image.boxes_xyxy).float(), torch.as_tensor(image.labels)
        for box, label in zip(boxes, labels, strict=True):
            cand = det.boxes_xyxy[det.labels == label].float()  # (M, 4), best score first
            if len(cand) == 0:
                continue
            overlap = box_iou(box[None], cand)[0]
            hits = (overlap >= MATCH_IOU).nonzero().flatten()
            if len(hits) == 0:
                continue
            j = int(hits[0])
            (bw, bh), (dw, dh) = (box[2:] - box[:2]).tolist(), (cand[j, 2:] - cand[j, :2]).tolist()
            ious.append(float(overlap[j]))
            aspects.append(math.log((dw / dh) / (bw / bh)))
            areas.append(math.log(dw * dh / (bw * bh)))
    return ious, aspects, areas


def quartiles(values: list[float]) -> str:
    if len(values) < 2:
        return "-"
    return " / ".join(f"{v:.2f}" for v in statistics.quantiles(values, n=4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="os2d eval output folders")
    args = parser.parse_args()
    print("| run | mAP@0.5 | mAP@0.7 | boxes matched | IoU quartiles | log aspect det/box | log area det/box |")
    print("|---|---:|---:|---:|---|---|---|")
    for folder in args.folders:
        run = load_eval_run(folder)
        names = [c.name for c in run.dataset.classes]
        m5, m7 = (evaluate_detections(run.detections, run.images, len(names), iou, False, class_names=names).map
                  for iou in (0.5, 0.7))
        ious, aspects, areas = first_matches(run)
        print(f"| {folder} | {100 * m5:.2f} | {100 * m7:.2f} | {len(ious)} | {quartiles(ious)} | "
              f"{quartiles(aspects)} | {quartiles(areas)} |")


if __name__ == "__main__":
    main()
