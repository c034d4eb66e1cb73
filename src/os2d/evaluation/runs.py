"""An ``os2d eval --output-dir`` folder read back: its dataset (from the spec recorded in ``metrics.json``), the
detections of each image (``detections.jsonl``) and what produced them (method, weights, inference config).

What :mod:`os2d.calibration` fits on and measures with (``os2d weights calibrate --from-eval DIR``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from os2d.data.records import DetectionDataset, ImageRecord
from os2d.data.spec import DatasetSpec, load_dataset
from os2d.errors import Os2dError
from os2d.evaluation.harness import read_detections_jsonl
from os2d.results import Detections


class EvalRunError(Os2dError):
    """A folder that is not a complete ``os2d eval`` output (or whose dataset files moved)."""


@dataclass
class EvalRun:
    """One evaluation: ``images`` (ground truth) and ``detections`` in the same order."""

    folder: Path
    method: str
    weights: str
    config: dict[str, Any]
    dataset: DetectionDataset
    images: list[ImageRecord]
    detections: list[Detections]


def load_eval_run(folder: str | os.PathLike[str]) -> EvalRun:
    """Read ``metrics.json`` and ``detections.jsonl`` of an ``os2d eval`` output folder and reload its dataset.

    Raises:
        EvalRunError: a file missing or malformed, a dataset without its spec, an image without detections.
    """
    folder = Path(folder)
    metrics_path, dets_path = folder / "metrics.json", folder / "detections.jsonl"
    for p in (metrics_path, dets_path):
        if not p.is_file():
            raise EvalRunError(f"{folder} is not an os2d eval output folder: {p.name} is missing")
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        config = metrics["config"]
        spec = DatasetSpec(**config["dataset_spec"])
    except (ValueError, KeyError, TypeError) as e:
        raise EvalRunError(f"{metrics_path}: no usable dataset spec ({e}); was it written by os2d eval?") from None
    try:
        dataset = load_dataset(spec)
    except (Os2dError, OSError) as e:
        raise EvalRunError(f"{folder}: its dataset cannot be loaded again ({e})") from None
    class_names = [c.name for c in dataset.classes]
    per_image = read_detections_jsonl(dets_path, class_names)
    max_images = config.get("max_images")
    images = dataset.images[:max_images] if max_images else dataset.images
    missing = [im.image_id for im in images if im.image_id not in per_image]
    if missing:
        raise EvalRunError(f"{dets_path}: no detections for {len(missing)} images of its dataset (e.g. "
                           f"{missing[0]!r}): an interrupted run? Finish it with os2d eval first")
    return EvalRun(folder=folder, method=str(metrics.get("method", "")), weights=str(config.get("weights", "")),
                   config=config, dataset=dataset, images=list(images),
                   detections=[per_image[im.image_id] for im in images])


__all__ = ["EvalRun", "EvalRunError", "load_eval_run"]
