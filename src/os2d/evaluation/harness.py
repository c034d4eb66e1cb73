"""Evaluate a detection method on a :class:`~os2d.data.records.DetectionDataset` (reference §2, §5).

One harness for OS2D and the baselines (:mod:`os2d.evaluation.baselines`): every class of the dataset is registered once
from its class image(s) (views - rotations/flips - from the :class:`~os2d.config.InferenceConfig`), every image
is loaded in its original frame and detected (the method resizes it so that ``sqrt(w*h) = config.image_size``
and runs the pyramid ``config.scales``), and detections in original pixels are scored with Pascal VOC AP
(:func:`os2d.evaluation.metrics.evaluate_detections`): per-class AP, mAP, mAPw, recall, AP over joint classes.

Typical use (training loop)::

    ev = evaluate_model(model, val_dataset, InferenceConfig(image_size=879, scales=(1.0,)), progress=False)
    ev.result.map, ev.seconds_per_image
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from os2d.config import InferenceConfig
from os2d.data.records import DetectionDataset, ImageRecord
from os2d.data.validate import AnnotationError
from os2d.evaluation.baselines import METHODS, MODEL_METHODS, DetectionMethod, build_method
from os2d.evaluation.metrics import EvalResult, ImageDetections, PRCurve, evaluate_detections
from os2d.files import atomic_write
from os2d.io import load_image
from os2d.model.os2d import Os2dModel
from os2d.results import Detections, DetectionsFileError, image_record, jsonl_line

logger = logging.getLogger(__name__)

@dataclass
class DatasetEvaluation:
    """Result of evaluating one method on one dataset.

    Attributes:
        result: VOC metrics (per-class AP, mAP, mAPw, recall, joint AP, PR curves).
        detections: per evaluated image, in original pixels (same order as ``image_ids``).
        seconds_per_image: mean wall time per image (loading + detection).
        method: method name (``os2d``, ``sliding-square``, ...).
        image_ids: ids of the evaluated images.
        class_names: label names (index = label).
        class_seconds: time spent registering the classes (class features computed once).
        config: the inference config and the method's own settings.
        dataset: name and statistics of the evaluated dataset.
        joint_curve: precision/recall of all classes merged into one (the ``AP_joint_classes`` curve).
    """

    result: EvalResult
    detections: list[Detections]
    seconds_per_image: float
    method: str
    image_ids: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    class_seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    joint_curve: PRCurve | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary: ``method``, ``dataset``, ``metrics`` (incl. ``per_class``), ``timing``,
        ``config`` (no NaN: missing values are ``None``)."""
        return {
            "method": self.method,
            "dataset": self.dataset,
            "metrics": self.result.to_dict(),
            "timing": {"seconds_per_image": float(self.seconds_per_image), "class_seconds": float(self.class_seconds),
                       "num_images": len(self.detections)},
            "classes": list(self.class_names),
            "config": self.config,
        }


# ----------------------------------------------------------------------------------------- JSON lines


def detections_record(image: ImageRecord, dets: Detections) -> dict[str, Any]:
    """One JSON Lines record: the image id, then the IMAGE record of the output contract
    (:func:`os2d.results.image_record`: path, width, height, rounded detections)."""
    return {"image_id": image.image_id, **image_record(str(image.path), dets.image_size, dets)}


def read_detections_jsonl(path: str | os.PathLike[str], class_names: Sequence[str]) -> dict[str, Detections]:
    """Read a file written by the harness back into :class:`Detections` per image id.

    Labels are matched by name to ``class_names``; an unknown label is an error naming the line.
    """
    path = Path(path)
    out: dict[str, Detections] = {}
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                out[str(rec["image_id"])] = Detections.from_records(rec["detections"], class_names,
                                                                    (rec["width"], rec["height"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise DetectionsFileError(f"{path}:{ln}: bad detections record: {exc}") from exc
    return out


# -------------------------------------------------------------------------------------------- harness


def _class_names(dataset: DetectionDataset) -> list[str]:
    names = dataset.class_names
    if len(set(names)) == len(names):
        return list(names)
    return [f"{c.class_id}:{c.name}" for c in dataset.classes]  # display names must be unique labels


def _load_class_images(dataset: DetectionDataset) -> list[list[Any]]:
    """RGB class images per class (each method checks them as it registers the class)."""
    out = []
    for cls in dataset.classes:
        if not cls.image_paths:
            raise AnnotationError(f"class {cls.name!r} ({cls.class_id}) has no class image")
        out.append([load_image(p) for p in cls.image_paths])
    return out


def _select_images(dataset: DetectionDataset, max_images: int | None) -> list[ImageRecord]:
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be positive, got {max_images}")
    return dataset.images if max_images is None else dataset.images[:max_images]


def joint_pr_curve(detections: Sequence[Detections], images: Sequence[ImageRecord], iou_threshold: float,
                   plus_one: bool) -> PRCurve:
    """Precision/recall of all classes merged into one label (the ``AP_joint_classes`` curve)."""
    dets = [ImageDetections(d.boxes_xyxy, d.scores, torch.zeros_like(d.labels)) for d in detections]
    gts = [ImageRecord(im.image_id, im.path, im.width, im.height, im.boxes_xyxy, np.zeros_like(im.labels),
                       im.difficult) for im in images]
    return evaluate_detections(dets, gts, 1, iou_threshold, plus_one).precision_recall[0]


def check_iou_threshold(iou_threshold: float) -> None:
    """VOC matching needs an IoU threshold in (0, 1]: at 0 every detection would match, above 1 none.

    Raises:
        ValueError: one line naming the value (nan and inf included).
    """
    if not 0.0 < iou_threshold <= 1.0:  # also false for nan
        raise ValueError(f"the IoU threshold must be in (0, 1], got {iou_threshold}")


def run_method(method: DetectionMethod, dataset: DetectionDataset, *, config: InferenceConfig | None = None,
               progress: bool = True, max_images: int | None = None,
               detections_path: str | os.PathLike[str] | None = None, iou_threshold: float = 0.5,
               plus_one: bool = False) -> DatasetEvaluation:
    """Register every dataset class with ``method``, detect in every image, score with VOC AP.

    Args:
        config: recorded in the result (the method already holds its own copy).
        max_images: evaluate only the first N images.
        detections_path: also write one JSON Lines record per image (see :func:`detections_record`), atomically
            at the end.
        iou_threshold, plus_one: VOC matching (``plus_one`` = the reference's integer-pixel IoU).

    Raises:
        os2d.io.ImageError: a class image or an image cannot be read (or a class image is tiny or uniform).
        os2d.data.AnnotationError: a class without class image, or an image whose size differs from the
            annotation.
    """
    from tqdm import tqdm

    check_iou_threshold(iou_threshold)
    names = _class_names(dataset)
    t0 = time.perf_counter()
    for name, imgs in zip(names, _load_class_images(dataset), strict=True):
        method.add_class(name, imgs)
    class_seconds = time.perf_counter() - t0
    images = _select_images(dataset, max_images)

    detections: list[Detections] = []
    seconds = 0.0
    for rec in tqdm(images, desc=f"eval {method.name}", unit="img", disable=not progress, file=sys.stderr):
        t = time.perf_counter()
        img = load_image(rec.path)
        if img.size != rec.size():
            raise AnnotationError(f"image {rec.path}: size {img.size[0]}x{img.size[1]} differs from the "
                                  f"annotation's {rec.size()[0]}x{rec.size()[1]}")
        detections.append(method.detect(img))
        seconds += time.perf_counter() - t
    if detections_path is not None:
        lines = b"".join(jsonl_line(detections_record(r, d)) for r, d in zip(images, detections, strict=True))
        atomic_write(detections_path, lambda f: f.write(lines))

    result = evaluate_detections(detections, images, len(names), iou_threshold, plus_one, class_names=names)
    describe = method.describe() if hasattr(method, "describe") else {"method": method.name}
    cfg = {"inference": _config_dict(config), "method": describe, "iou_threshold": iou_threshold,
           "plus_one": plus_one, "max_images": max_images}
    sub = dataset if len(images) == len(dataset.images) else dataset.subset(image_ids=[r.image_id for r in images])
    return DatasetEvaluation(
        result=result, detections=detections, seconds_per_image=seconds / max(len(images), 1), method=method.name,
        image_ids=[r.image_id for r in images], class_names=names, class_seconds=class_seconds, config=cfg,
        dataset=sub.stats(), joint_curve=joint_pr_curve(detections, images, iou_threshold, plus_one),
    )


def _config_dict(config: InferenceConfig | None) -> dict[str, Any] | None:
    if config is None:
        return None
    return json.loads(json.dumps(asdict(config)))  # as it reads back from metrics.json (tuples -> lists)


@contextmanager
def _model_state(model: Os2dModel, device: str | torch.device | None) -> Iterator[Os2dModel]:
    """Eval mode (and ``device`` if given) for the duration; the training flag and device are restored."""
    was_training = model.training
    old = next(model.parameters()).device
    if device is not None:
        model.to(device)
    model.eval()
    try:
        yield model
    finally:
        if device is not None:
            model.to(old)
        model.train(was_training)


def evaluate_model(model: Os2dModel, dataset: DetectionDataset, config: InferenceConfig, *,
                   device: str | torch.device | None = None, progress: bool = True, max_images: int | None = None,
                   detections_path: str | os.PathLike[str] | None = None, iou_threshold: float = 0.5,
                   plus_one: bool = False) -> DatasetEvaluation:
    """Evaluate an OS2D model: class kernels of all classes once, then every image (see :func:`run_method`).

    ``device``: where to run (None: where the model is). The model's device and train/eval mode are restored
    afterwards, so this can be called from a training loop.
    """
    return evaluate_method("os2d", dataset, config, model=model, device=device, progress=progress,
                           max_images=max_images, detections_path=detections_path, iou_threshold=iou_threshold,
                           plus_one=plus_one)


def evaluate_method(method: str, dataset: DetectionDataset, config: InferenceConfig, *,
                    model: Os2dModel | None = None, device: str | torch.device | None = None,
                    progress: bool = True, max_images: int | None = None,
                    detections_path: str | os.PathLike[str] | None = None, iou_threshold: float = 0.5,
                    plus_one: bool = False, method_options: dict[str, Any] | None = None) -> DatasetEvaluation:
    """Evaluate a method by name (``os2d``, ``sliding-square``, ``sliding-ar``, ``sift``, ``template``).

    ``model`` is required by the first three (its feature extractor; ``os2d`` also uses its TransformNet);
    ``method_options`` go to the method's constructor.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    check_iou_threshold(iou_threshold)
    options = dict(method_options or {})
    if model is None:
        return run_method(build_method(method, config, **options), dataset, config=config, progress=progress,
                          max_images=max_images, detections_path=detections_path, iou_threshold=iou_threshold,
                          plus_one=plus_one)
    with torch.no_grad(), _model_state(model, device):
        if method in MODEL_METHODS:
            impl = build_method(method, config, model=model, **options)
        else:
            impl = build_method(method, config, **options)
        return run_method(impl, dataset, config=config, progress=progress, max_images=max_images,
                          detections_path=detections_path, iou_threshold=iou_threshold, plus_one=plus_one)


__all__ = [
    "DatasetEvaluation",
    "check_iou_threshold",
    "detections_record",
    "evaluate_method",
    "evaluate_model",
    "joint_pr_curve",
    "read_detections_jsonl",
    "run_method",
]
