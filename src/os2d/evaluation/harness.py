"""Evaluate a detection method on a :class:`~os2d.data.annotations.DetectionDataset` (reference §2, §5).

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
from os2d.data.annotations import DetectionDataset, ImageRecord
from os2d.evaluation.baselines import METHODS, MODEL_METHODS, DetectionMethod, build_method
from os2d.evaluation.metrics import EvalResult, ImageDetections, PRCurve, evaluate_detections
from os2d.io import load_image, validate_class_image
from os2d.model.os2d import Os2dModel
from os2d.results import Detections

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
    """One JSON Lines record: the image and its detections at full float precision."""
    return {
        "image_id": image.image_id,
        "path": str(image.path),
        "width": int(dets.image_size[0]),
        "height": int(dets.image_size[1]),
        "detections": [
            {"label": dets.class_names[lab], "label_index": int(lab), "score": float(s),
             "box_xyxy": [float(v) for v in box], "corners_xy": [[float(x), float(y)] for x, y in corners]}
            for box, s, lab, corners in zip(dets.boxes_xyxy.tolist(), dets.scores.tolist(), dets.labels.tolist(),
                                            dets.corners_xy.tolist(), strict=True)
        ],
    }


def read_detections_jsonl(path: str | os.PathLike[str], class_names: Sequence[str]) -> dict[str, Detections]:
    """Read a file written by the harness back into :class:`Detections` per image id.

    Labels are matched by name to ``class_names``; an unknown label is an error naming the line.
    """
    path = Path(path)
    index = {n: i for i, n in enumerate(class_names)}
    out: dict[str, Detections] = {}
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                dets = rec["detections"]
                labels = []
                for d in dets:
                    if d["label"] not in index:
                        raise ValueError(f"unknown label {d['label']!r}")
                    labels.append(index[d["label"]])
                out[str(rec["image_id"])] = Detections(
                    torch.tensor([d["box_xyxy"] for d in dets], dtype=torch.float32).view(-1, 4),
                    torch.tensor([d["score"] for d in dets], dtype=torch.float32),
                    torch.tensor(labels, dtype=torch.long),
                    torch.tensor([d.get("corners_xy", [[0, 0]] * 4) for d in dets], dtype=torch.float32).view(-1, 4, 2),
                    list(class_names), (int(rec["width"]), int(rec["height"])))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{ln}: bad detections record: {exc}") from exc
    return out


# -------------------------------------------------------------------------------------------- harness


def _class_names(dataset: DetectionDataset) -> list[str]:
    names = dataset.class_names
    if len(set(names)) == len(names):
        return list(names)
    return [f"{c.class_id}:{c.name}" for c in dataset.classes]  # display names must be unique labels


def _load_class_images(dataset: DetectionDataset) -> list[list[Any]]:
    out = []
    for cls in dataset.classes:
        if not cls.image_paths:
            raise ValueError(f"class {cls.name!r} ({cls.class_id}) has no class image")
        imgs = []
        for p in cls.image_paths:
            img = load_image(p)
            validate_class_image(img)
            imgs.append(img)
        out.append(imgs)
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


def run_method(method: DetectionMethod, dataset: DetectionDataset, *, config: InferenceConfig | None = None,
               progress: bool = True, max_images: int | None = None,
               detections_path: str | os.PathLike[str] | None = None, iou_threshold: float = 0.5,
               plus_one: bool = False) -> DatasetEvaluation:
    """Register every dataset class with ``method``, detect in every image, score with VOC AP.

    Args:
        config: recorded in the result (the method already holds its own copy).
        max_images: evaluate only the first N images.
        detections_path: also write one JSON Lines record per image (see :func:`detections_record`); written
            to a temporary file beside it and renamed at the end.
        iou_threshold, plus_one: VOC matching (``plus_one`` = the reference's integer-pixel IoU).

    Raises:
        ValueError: a class image or an image cannot be read, or an image's size differs from the annotation.
    """
    from tqdm import tqdm

    names = _class_names(dataset)
    t0 = time.perf_counter()
    for name, imgs in zip(names, _load_class_images(dataset), strict=True):
        method.add_class(name, imgs)
    class_seconds = time.perf_counter() - t0
    images = _select_images(dataset, max_images)

    out_file = None
    if detections_path is not None:
        final = Path(detections_path)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp")
        out_file = open(tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in finally
    detections: list[Detections] = []
    seconds = 0.0
    try:
        bar = tqdm(images, desc=f"eval {method.name}", unit="img", disable=not progress, file=sys.stderr)
        for rec in bar:
            t = time.perf_counter()
            img = load_image(rec.path)
            if img.size != rec.size():
                raise ValueError(f"image {rec.path}: size {img.size[0]}x{img.size[1]} differs from the annotation's "
                                 f"{rec.size()[0]}x{rec.size()[1]}")
            dets = method.detect(img)
            seconds += time.perf_counter() - t
            detections.append(dets)
            if out_file is not None:
                out_file.write(json.dumps(detections_record(rec, dets)) + "\n")
        if out_file is not None:
            out_file.close()
            os.replace(tmp, final)
    finally:
        if out_file is not None and not out_file.closed:
            out_file.close()
            tmp.unlink(missing_ok=True)

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
    d = asdict(config)
    d["scales"] = list(d["scales"])
    return d


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
    "detections_record",
    "evaluate_method",
    "evaluate_model",
    "joint_pr_curve",
    "read_detections_jsonl",
    "run_method",
]
