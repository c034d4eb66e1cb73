"""Training classes without labels: random patches of Grocery Store train photos, and the photos to compose them on.

The default model trained on 95 classes (81 Grocery Store products, 14 FL27 brands) and does not yet generalise to
new classes well enough. Any textured patch of a real photo can be a class: ``os2d synth`` pastes it, warped, into
another photo and labels where it went. So that a pasted patch does not also appear, unlabelled, in its background
(these photos show one product each, and photos of one product look alike), the patches come from photos of the even
coarse classes of ``natural_images.csv`` and the backgrounds are the odd ones' photos (linked into ``OUT/backgrounds``).
Deterministic for a seed.

    python recipes/patch_classes.py ../shared/data OUT [--num 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from pathlib import Path

import numpy as np
from PIL import Image


def patch(img: Image.Image, rng: random.Random) -> Image.Image | None:
    """A random crop (side 25-60% of the photo's shorter side, aspect 0.4-3, centre in the middle 60%), at most
    320 px on its longer side; None when it is nearly flat (grey std < 25)."""
    w, h = img.size
    side = rng.uniform(0.25, 0.6) * min(w, h)
    aspect = math.exp(rng.uniform(math.log(0.4), math.log(3.0)))
    pw, ph = min(w, side * math.sqrt(aspect)), min(h, side / math.sqrt(aspect))
    cx = rng.uniform(max(0.2 * w, pw / 2), min(0.8 * w, w - pw / 2))
    cy = rng.uniform(max(0.2 * h, ph / 2), min(0.8 * h, h - ph / 2))
    crop = img.crop((round(cx - pw / 2), round(cy - ph / 2), round(cx + pw / 2), round(cy + ph / 2)))
    if float(np.asarray(crop.convert("L"), dtype=np.float32).std()) < 25:
        return None
    crop.thumbnail((320, 320), Image.Resampling.BICUBIC)
    return crop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="../shared/data")
    ap.add_argument("out", type=Path)
    ap.add_argument("--num", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = args.data / "grocerystore"
    with open(root / "natural_images.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    sources = [root / r["image"] for r in rows if int(r["coarse_id"]) % 2 == 0]
    backgrounds = [root / r["image"] for r in rows if int(r["coarse_id"]) % 2 == 1]
    rng = random.Random(args.seed)
    (args.out / "classes").mkdir(parents=True, exist_ok=True)
    (args.out / "backgrounds").mkdir(parents=True, exist_ok=True)
    made = 0
    while made < args.num:
        crop = patch(Image.open(rng.choice(sources)).convert("RGB"), rng)
        if crop is not None:
            crop.save(args.out / "classes" / f"patch{made:04d}.png")
            made += 1
    for i, p in enumerate(backgrounds):
        link = args.out / "backgrounds" / f"{i:04d}{p.suffix}"
        if not link.exists():
            link.symlink_to(p.resolve())
    print(f"{made} patch classes from {len(sources)} photos, {len(backgrounds)} backgrounds in {args.out}")


if __name__ == "__main__":
    main()
