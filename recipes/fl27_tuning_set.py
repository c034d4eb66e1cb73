"""The FL27 training-brand tuning set of the model card: every 6th image (98) of the 14 training brands.

Its boxes are of the training brands only (the held-out brands' boxes in these images are not scored); the images
are training images, so this set tunes and decides, it never reports held-out quality.

    python recipes/fl27_tuning_set.py ../shared/data/flickrlogos27-dev runs/fl27-train6
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from os2d.data.spec import FL27_TRAIN_BRANDS, DatasetSpec, load_dataset


def main() -> None:
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    ds = load_dataset(DatasetSpec(format="simple_csv", annotations=str(src / "annotations.csv"),
                                  classes=str(src / "class_images.csv"), class_names=FL27_TRAIN_BRANDS,
                                  exclude_class_sources=True))
    keep = {im.image_id for im in ds.images[::6]}
    with open(src / "annotations.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["image"] in keep]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "annotations.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "class", "x1", "y1", "x2", "y2"])
        w.writeheader()
        w.writerows({k: r[k] for k in w.fieldnames} for r in rows)


if __name__ == "__main__":
    main()
