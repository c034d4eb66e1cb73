"""The class CSV of the 81 Grocery Store products (their iconic photos), in the dataset's class order: the class
images of the synthetic training shelves of every recipe.

    python recipes/grocery_classes.py ../shared/data runs/synth/classes.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python recipes/grocery_classes.py DATA_DIR OUT.csv")
    data, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])  # absolute: the CSV may live anywhere
    with open(data / "grocerystore" / "class_images.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "path"])
        w.writerows([r["class"], str(data / "grocerystore" / r["class_image"])] for r in rows)


if __name__ == "__main__":
    main()
