"""Training data from real photos of look-alike packages: the Grocery Store *train* close-ups of its 31 package classes
(milks, juices, yoghurts, soy and oat products; several variants of each brand), with pseudo-boxes, tiled into mosaics.

The Grocery Store photos (348x348, one product each, often cut by the frame) have class labels but no boxes, and the
trainer learns from boxes. Two steps:

- ``boxes``: the box of each photo's product is the shipped default's best detection of that product alone (a gallery of
  its one class image) at ``image_size`` 352, the fixed size that suits close-ups best (README, "close-ups"). The
  label is given; the detector only places the box. Photos whose best score is below ``--min-score`` are dropped.
- ``mosaics``: 3x3 tiles of those photos (1044x1044 px; at the training data's ``image_size`` 1000 a product is then
  ~240 px, the size the sampler wants), each mosaic's nine photos drawn from one coarse group where it can (the
  milks, the juices, the yoghurts, ...), nine different products where the group has them. A training patch then
  holds several look-alike real packages side by side, each a positive for its own class image and a negative
  for the others': the discrimination the demo shelf's Danissimo yoghurts need.

Only *train* photos are used: the val photos are ``benchmarks/grocery_real.py``'s set.

    python recipes/real_packages/make_data.py boxes ../shared/data runs/real-packages/boxes.csv
    python recipes/real_packages/make_data.py mosaics ../shared/data runs/real-packages/boxes.csv \
        runs/real-packages/mosaics --rounds 3 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageFilter

TILE = 348  # the Grocery Store photos' size
GRID = 3
MARGIN = 0.08  # context kept around a product's box, per side
BLUR = 16  # radius of the cell background's blur


def package_rows(data: Path) -> tuple[list[dict], list[dict]]:
    """(package classes, their train photos) of the Grocery Store CSVs."""
    root = data / "grocerystore"
    with open(root / "class_images.csv", newline="") as f:
        classes = [r for r in csv.DictReader(f) if "/Packages/" in r["class_image"]]
    ids = {r["class_id"] for r in classes}
    with open(root / "natural_images.csv", newline="") as f:
        photos = [r for r in csv.DictReader(f) if r["split"] == "train" and r["class_id"] in ids]
    return classes, photos


def make_boxes(data: Path, out: Path, min_score: float) -> None:
    from tqdm import tqdm

    from os2d.detector import Detector

    classes, photos = package_rows(data)
    root = data / "grocerystore"
    det = Detector.from_weights("default")
    name = {r["class_id"]: r["class"] for r in classes}
    for r in classes:
        det.add_class(r["class"], str(root / r["class_image"]))
    rows, dropped = [], 0
    for p in tqdm(photos, desc="pseudo-boxes", unit="photo"):
        cls = name[p["class_id"]]
        d = det.detect(str(root / p["image"]), gallery=det.gallery.subset([cls]), image_size=352)
        if len(d.scores) == 0 or float(d.scores[0]) < min_score:
            dropped += 1
            continue
        x1, y1, x2, y2 = (round(float(v), 1) for v in d.boxes_xyxy[0])
        rows.append({"image": p["image"], "class": cls, "coarse": p["coarse_id"], "score": f"{float(d.scores[0]):.4f}",
                     "x1": x1, "y1": y1, "x2": x2, "y2": y2})
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} pseudo-boxes, {dropped} photos dropped (score < {min_score}) -> {out}")


def group_tiles(rows: list[dict], rng: random.Random) -> list[list[dict]]:
    """One round: every photo once, in groups of GRID^2 from one coarse group where it can (as many different
    products per group as the coarse group has); the left-overs of all groups fill the last mosaics."""
    by_coarse: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_coarse[r["coarse"]].append(r)
    n = GRID * GRID
    groups, rest = [], []
    for coarse in sorted(by_coarse):
        pool = by_coarse[coarse][:]
        rng.shuffle(pool)
        # interleave products so consecutive photos are different products
        by_cls: dict[str, list[dict]] = defaultdict(list)
        for r in pool:
            by_cls[r["class"]].append(r)
        order = []
        while any(by_cls.values()):
            for c in sorted(by_cls, key=lambda k: -len(by_cls[k])):
                if by_cls[c]:
                    order.append(by_cls[c].pop())
        full = len(order) // n * n
        groups += [order[i:i + n] for i in range(0, full, n)]
        rest += order[full:]
    rng.shuffle(rest)
    groups += [rest[i:i + n] for i in range(0, len(rest) - n + 1, n)]
    return groups


def product_tile(photo: Image.Image, row: dict, rng: random.Random) -> tuple[Image.Image, tuple[float, ...]]:
    """One TILE x TILE cell: the product's box (with a MARGIN of context) pasted at a random size and place on the
    photo itself blurred beyond recognition, and the product's box in the cell. The blur removes the other packages
    of the photo's shelf (often the same product, unlabelled: they would be taught as negatives)."""
    x1, y1, x2, y2 = (float(row[c]) for c in ("x1", "y1", "x2", "y2"))
    mx, my = MARGIN * (x2 - x1), MARGIN * (y2 - y1)
    cx1, cy1 = max(0.0, x1 - mx), max(0.0, y1 - my)
    cx2, cy2 = min(float(photo.width), x2 + mx), min(float(photo.height), y2 + my)
    crop = photo.crop((round(cx1), round(cy1), round(cx2), round(cy2)))
    side = rng.uniform(0.72, 0.95) * TILE
    f = side / max(crop.width, crop.height)
    crop = crop.resize((max(1, round(crop.width * f)), max(1, round(crop.height * f))), Image.BILINEAR)
    px, py = rng.randint(0, TILE - crop.width), rng.randint(0, TILE - crop.height)
    cell = photo.resize((TILE, TILE)).filter(ImageFilter.GaussianBlur(BLUR))
    cell.paste(crop, (px, py))
    sx, sy = crop.width / (round(cx2) - round(cx1)), crop.height / (round(cy2) - round(cy1))
    return cell, (px + (x1 - round(cx1)) * sx, py + (y1 - round(cy1)) * sy,
                  px + (x2 - round(cx1)) * sx, py + (y2 - round(cy1)) * sy)


def make_mosaics(data: Path, boxes: Path, out: Path, rounds: int, seed: int) -> None:
    root = data / "grocerystore"
    with open(boxes, newline="") as f:
        rows = list(csv.DictReader(f))
    classes, _ = package_rows(data)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    annotations, k = [], 0
    for _ in range(rounds):
        for group in group_tiles(rows, rng):
            canvas = Image.new("RGB", (GRID * TILE, GRID * TILE))
            for t, r in enumerate(group):
                ox, oy = (t % GRID) * TILE, (t // GRID) * TILE
                tile, box = product_tile(Image.open(root / r["image"]).convert("RGB"), r, rng)
                canvas.paste(tile, (ox, oy))
                annotations.append({"image": f"images/mosaic_{k:04d}.jpg", "class": r["class"],
                                    "x1": f"{ox + box[0]:.1f}", "y1": f"{oy + box[1]:.1f}",
                                    "x2": f"{ox + box[2]:.1f}", "y2": f"{oy + box[3]:.1f}", "difficult": "0"})
            canvas.save(out / "images" / f"mosaic_{k:04d}.jpg", quality=92)
            k += 1
    with open(out / "annotations.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(annotations[0]))
        w.writeheader()
        w.writerows(annotations)
    with open(out / "class_images.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "path"])
        w.writerows([r["class"], str((root / r["class_image"]).resolve())] for r in classes)
    print(f"{k} mosaics, {len(annotations)} boxes -> {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("boxes")
    b.add_argument("data", type=Path)
    b.add_argument("out", type=Path)
    b.add_argument("--min-score", type=float, default=0.0)
    m = sub.add_parser("mosaics")
    m.add_argument("data", type=Path)
    m.add_argument("boxes", type=Path)
    m.add_argument("out", type=Path)
    m.add_argument("--rounds", type=int, default=3)
    m.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.cmd == "boxes":
        make_boxes(args.data.resolve(), args.out, args.min_score)
    else:
        make_mosaics(args.data.resolve(), args.boxes, args.out, args.rounds, args.seed)


if __name__ == "__main__":
    main()
