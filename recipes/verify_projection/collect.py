"""Training data of the second look's projection: the crops of the default's raw detections on training photos.

Per image, the default detector with the second look off (the raw detections it would look at, capped at
``verify_top`` = 100), each detection's crop encoded as the second look encodes it
(:func:`os2d.inference.verify.crop_cells`, inner cells only), and whether it is a true positive of its class (VOC:
IoU >= 0.5 with a not yet matched box, best score first; -1 where it matches a "difficult" box).

Sets (training photos only; the tuning sets of the rules are not among them):
    fl27-rest    the FL27 training-brand photos that are not in the tuning set (every 6th is) and show no held-out
                 brand, gallery = the 14 brands
    synth-train  the first ``--max-images`` of stage 3's training shelves (variant classes; ``--synth-train``),
                 gallery per photo = its classes + ``--extra-classes`` random others (seeded)

    python recipes/verify_projection/collect.py --set fl27-rest --out ~/os2d-runs/vproj/fl27-rest.pt
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from os2d.config import InferenceConfig
from os2d.data.spec import FL27_TRAIN_BRANDS, DatasetSpec, load_dataset
from os2d.detector import Detector
from os2d.evaluation.harness import _class_names, _load_class_images
from os2d.inference.pyramid import prepare_levels
from os2d.inference.verify import crop_cells
from os2d.io import load_image
from os2d.model.resample import pool_mask
from os2d.ops.boxes import box_iou

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def load(name: str, synth_train: Path):
    if name == "fl27-rest":
        fl27 = SHARED / "flickrlogos27-dev"
        ds = load_dataset(DatasetSpec(format="simple_csv", annotations=str(fl27 / "annotations.csv"),
                                      classes=str(fl27 / "class_images.csv"), class_names=FL27_TRAIN_BRANDS,
                                      exclude_class_sources=True, name="fl27-train"))
        tuning = {im.image_id for im in ds.images[::6]}
        with open(fl27 / "annotations.csv", newline="") as f:  # photos showing a held-out brand stay unseen
            held_out = {r["image"] for r in csv.DictReader(f) if r["class"] not in FL27_TRAIN_BRANDS}
        keep = [im.image_id for im in ds.images if im.image_id not in tuning | held_out]
        return ds.subset(image_ids=keep, name="fl27-rest")
    if name == "synth-train":
        return load_dataset(DatasetSpec(format="simple_csv", annotations=str(synth_train / "annotations.csv"),
                                        classes=str(synth_train / "class_images.csv"), image_dir=str(synth_train),
                                        name="synth-train"))
    raise SystemExit(f"unknown set {name!r}")


def true_positives(boxes: torch.Tensor, labels: torch.Tensor, rec, iou: float = 0.5) -> torch.Tensor:
    """(N,) 1 / 0 / -1 (matches a difficult box) for detections sorted by score, VOC matching per class."""
    out = torch.zeros(len(boxes), dtype=torch.int8)
    gt_boxes = torch.as_tensor(rec.boxes_xyxy, dtype=torch.float32).reshape(-1, 4)
    gt_labels = torch.as_tensor(rec.labels, dtype=torch.long).reshape(-1)
    difficult = torch.as_tensor(rec.difficult if rec.difficult is not None else [False] * len(gt_labels),
                                dtype=torch.bool).reshape(-1)
    used = torch.zeros(len(gt_labels), dtype=torch.bool)
    if len(gt_labels) == 0 or len(boxes) == 0:
        return out
    ious = box_iou(boxes.float(), gt_boxes)  # (N, G)
    for i in range(len(boxes)):
        cand = ious[i].clone()
        cand[gt_labels != labels[i]] = -1
        j = int(cand.argmax())
        if cand[j] >= iou:
            if difficult[j]:
                out[i] = -1
            elif not used[j]:
                out[i], used[j] = 1, True
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", required=True, choices=["fl27-rest", "synth-train"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--extra-classes", type=int, default=6)
    ap.add_argument("--synth-train", type=Path, default=Path.home() / "os2d-runs" / "loc-stage" / "synth" / "out")
    args = ap.parse_args()
    ds = load(args.set, args.synth_train)
    base = InferenceConfig()
    raw = base.replace(max_detections=base.verify_top, verify_rescore=0.0)
    det = Detector.from_weights("default", config=raw)
    names = _class_names(ds)
    for name, imgs in zip(names, _load_class_images(ds), strict=True):
        det.add_class(name, list(imgs))
    g = det.gallery
    cfg = det.model.config
    inner = pool_mask(cfg.class_grid_size, cfg.pool_border) > 0
    rng = random.Random(0)
    images = ds.images[: args.max_images]
    cells, labels, tps, scores, image_idx, galleries = [], [], [], [], [], []
    for rec in tqdm(images, desc=args.set, file=sys.stdout):
        if args.set == "synth-train":
            present = sorted({names[int(c)] for c in rec.labels})
            others = [n for n in names if n not in present]
            gallery_names = present + rng.sample(others, min(args.extra_classes, len(others)))
        else:
            gallery_names = list(names)
        sub = g.subset(gallery_names)
        levels = prepare_levels(load_image(rec.path), raw)
        dets = det.detect_pyramid(levels, rec.size(), gallery=sub)
        if len(dets) == 0:
            continue
        image = max(levels, key=lambda t: t.shape[-1] * t.shape[-2])
        width, height = dets.image_size
        scale = torch.tensor([image.shape[-1] / width, image.shape[-2] / height])
        corners = dets.corners_xy.float() * scale
        c = crop_cells(det.model, image, corners, dets.labels, sub.view_class, sub.view_aspect,
                       size=base.verify_size)[:, inner]  # (n, I, C)
        global_labels = torch.tensor([names.index(gallery_names[int(i)]) for i in dets.labels])
        cells.append(c.half())
        labels.append(global_labels)
        tps.append(true_positives(dets.boxes_xyxy, global_labels, rec))
        scores.append(dets.scores.float())
        image_idx.append(torch.full((len(dets),), len(galleries)))  # index into galleries
        galleries.append(torch.tensor([names.index(n) for n in gallery_names]))
    kernels = g.kernels[:, inner].half()  # (V, I, C)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"cells": torch.cat(cells), "labels": torch.cat(labels), "tp": torch.cat(tps),
                "scores": torch.cat(scores), "image": torch.cat(image_idx), "galleries": galleries,
                "kernels": kernels, "view_class": g.view_class.clone(), "class_names": names}, args.out)
    tp = torch.cat(tps)
    print(f"{args.set}: {len(images)} images, {len(tp)} detections, {int((tp == 1).sum())} true positives, "
          f"{int((tp == -1).sum())} on difficult boxes")


if __name__ == "__main__":
    main()
