"""The loc stage's rule (run.sh): mAP@0.5 and mAP@0.7 of two evaluations per tuning set, from their detections.

    python recipes/loc_stage/rule.py DATA RUNS BASE_DIR NEW_DIR

DATA is ``../shared/data``; RUNS holds the tuning sets (``fl27-train6``, ``synth-grocery-eval``).

BASE_DIR and NEW_DIR each hold ``fl27-train6-verify`` and ``synth-val-verify`` (``os2d eval`` output folders of the
default settings). Prints both models' mAP at IoU 0.5 and 0.7 per set and whether the rule (written in run.sh before
the run) passes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from os2d.data.spec import FL27_TRAIN_BRANDS, DatasetSpec, load_dataset
from os2d.evaluation.harness import _class_names, read_detections_jsonl
from os2d.evaluation.metrics import evaluate_detections


def tuning_sets(runs: Path, data: Path) -> dict[str, object]:
    fl27 = data / "flickrlogos27-dev"
    return {
        "fl27-train6": load_dataset(DatasetSpec(format="simple_csv", annotations=str(runs / "fl27-train6/annotations.csv"),
                                                image_dir=str(fl27), classes=str(fl27 / "class_images.csv"),
                                                class_names=list(FL27_TRAIN_BRANDS), exclude_class_sources=True)),
        "synth-val": load_dataset(DatasetSpec(format="simple_csv",
                                              annotations=str(runs / "synth-grocery-eval/annotations.csv"),
                                              classes=str(runs / "synth-grocery-eval/class_images.csv"),
                                              image_dir=str(runs / "synth-grocery-eval"))),
    }


def scores(dataset, folder: Path) -> tuple[float, float]:
    names = _class_names(dataset)
    dets = read_detections_jsonl(folder / "detections.jsonl", names)
    per_image = [dets[im.image_id] for im in dataset.images]
    return tuple(100 * evaluate_detections(per_image, dataset.images, len(names), iou, False, class_names=names).map
                 for iou in (0.5, 0.7))


def main() -> None:
    data, runs, base, new = (Path(a) for a in sys.argv[1:5])
    gains5, gains7, worst5 = [], [], 0.0
    for name, ds in tuning_sets(runs, data).items():
        b5, b7 = scores(ds, base / f"{name}-verify")
        n5, n7 = scores(ds, new / f"{name}-verify")
        print(f"{name}: mAP@0.5 {b5:.2f} -> {n5:.2f} ({n5 - b5:+.2f}), mAP@0.7 {b7:.2f} -> {n7:.2f} ({n7 - b7:+.2f})")
        gains5.append(n5 - b5)
        gains7.append(n7 - b7)
        worst5 = min(worst5, n5 - b5)
    m5, m7 = sum(gains5) / 2, sum(gains7) / 2
    ok = (m5 >= 0.5 or m7 >= 1.0) and worst5 >= -0.3
    print(f"mean gain mAP@0.5 {m5:+.2f}, mAP@0.7 {m7:+.2f}, worst set mAP@0.5 {worst5:+.2f}: "
          f"{'PASSED' if ok else 'not passed'}")


if __name__ == "__main__":
    main()
