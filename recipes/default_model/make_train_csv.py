"""Training CSVs of the default model: FlickrLogos-27 dev boxes of the 14 training brands + synthetic shelves.

The 6 validation brands (``os2d.data.spec.FL27_VAL_BRANDS``) and every image showing them are left out, so the
FL27 table in the README is on brands and images the model never saw.

    python recipes/default_model/make_train_csv.py --fl27 ../shared/data/flickrlogos27-dev \
        --synth runs/synth --out runs/default-model
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from os2d.data.spec import FL27_VAL_BRANDS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fl27", type=Path, required=True, help="flickrlogos27-dev folder")
    ap.add_argument("--synth", type=Path, nargs="+", required=True,
                    help="output folder(s) of `os2d synth` (or alike); a class name in several is one class")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    val = set(FL27_VAL_BRANDS)
    with open(args.fl27 / "annotations.csv", newline="") as f:
        fl27 = list(csv.DictReader(f))
    val_images = {r["image"] for r in fl27 if r["class"] in val}
    boxes = [{"image": str((args.fl27 / r["image"]).resolve()), "class": r["class"],
              "x1": r["x1"], "y1": r["y1"], "x2": r["x2"], "y2": r["y2"], "difficult": "0"}
             for r in fl27 if r["class"] not in val and r["image"] not in val_images]
    brands = sorted({b["class"] for b in boxes})
    classes = [{"name": b, "path": str((args.fl27 / "class_images" / f"{b}.jpg").resolve())} for b in brands]
    for synth in args.synth:
        with open(synth / "annotations.csv", newline="") as f:
            for r in csv.DictReader(f):
                boxes.append({**r, "image": str((synth / r["image"]).resolve())})
        known = {c["name"] for c in classes}
        with open(synth / "class_images.csv", newline="") as f:
            # a name already listed is the same product (e.g. the real-package mosaics' Grocery Store classes in the
            # synthetic shelves): one class, with the class image of the folder that listed it first
            classes += [{"name": r["name"], "path": str((synth / r["path"]).resolve())} for r in csv.DictReader(f)
                        if r["name"] not in known]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "train_boxes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["image", "class", "x1", "y1", "x2", "y2", "difficult"])
        w.writeheader()
        w.writerows(boxes)
    with open(args.out / "train_classes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["name", "path"])
        w.writeheader()
        w.writerows(classes)
    print(f"{len(boxes)} boxes of {len(classes)} classes ({len(brands)} FL27 brands) -> {args.out}")


if __name__ == "__main__":
    main()
