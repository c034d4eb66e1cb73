"""Running the demo: detect the generated shelf's classes with a :class:`~os2d.detector.Detector`, count the
planted instances found among the top detections, and write the input, a picture and the ``os2d detect`` JSON.

Example:
    >>> summary = run_demo(Path("demo_out"))
    >>> summary["recall"]  # per class, IoU >= 0.5 among the top-k detections of the class
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from os2d.apps.demo.scene import BASE_OBJECT_SIZE, Box, DemoScene, make_demo_scene
from os2d.ops import box_iou
from os2d.results import Detections, image_record, write_detections_json

# The model likes objects of ~MODEL_OBJECT_SIZE px (its class images are resized to that area).
MODEL_OBJECT_SIZE = 240.0
# Two pyramid levels cover the 0.8-1.2x jitter (12 seeds: 120/120 planted instances in the top-k, min IoU 0.67;
# one level misses ~2%, three levels cost 1.5x more for no gain).
DEMO_SCALES = (0.9, 1.1)


def topk_recall(gt: list[tuple[str, Box]], dets: Detections, iou_threshold: float = 0.5) -> dict[str, dict[str, Any]]:
    """Per class: among its k highest-scoring detections (k = number of its ground-truth boxes), how many
    ground-truth boxes are matched (greedy by score, one detection per box, IoU >= ``iou_threshold``)."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(n for n, _ in gt):
        gts = torch.tensor([b for n, b in gt if n == name], dtype=torch.float64)  # (G, 4)
        mine = (dets.labels == dets.class_names.index(name)) if name in dets.class_names else \
            torch.zeros(len(dets), dtype=torch.bool)
        order = dets.scores[mine].argsort(descending=True, stable=True)[: len(gts)]
        iou = box_iou(dets.boxes_xyxy[mine][order].double(), gts)  # (k, G)
        used = torch.zeros(len(gts), dtype=torch.bool)
        for row in iou:
            row = row.masked_fill(used, -1.0)
            j = int(row.argmax())  # the first of equal maxima
            if row[j] >= iou_threshold:
                used[j] = True
        found = int(used.sum())
        out[name] = {"instances": len(gts), "found": found, "recall": found / len(gts)}
    return out


def demo_image_size(scene: DemoScene) -> int:
    """``image_size`` that shows the planted objects at about the model's preferred size."""
    w, h = scene.image.size
    return int(round(math.sqrt(w * h) * MODEL_OBJECT_SIZE / BASE_OBJECT_SIZE))


def _top_per_class(dets: Detections, scene: DemoScene) -> Detections:
    """The k best detections of each class, k = its planted instances (what the recall counts)."""
    left = {name: sum(1 for n, _ in scene.boxes if n == name) for name in scene.class_images}
    shown = []
    for i, name in enumerate(dets.label_names):  # sorted by score
        if left[name] > 0:
            left[name] -= 1
            shown.append(i)
    return dets.filter(torch.tensor(shown, dtype=torch.long))


def run_demo(output_dir: str | Path, *, weights: str | Path = "default", device: str = "cpu", seed: int = 0,
             scales: tuple[float, ...] = DEMO_SCALES, image_size: int | None = None,
             max_detections: int = 100, draw_top: int | None = None) -> dict[str, Any]:
    """Build the demo scene, detect its classes, write pictures and JSON; return a summary.

    Writes to ``output_dir``: ``demo_scene.png`` (input), ``demo_detections.png`` (top detections drawn over
    the scene + a strip of the class images), ``demo_detections.json`` (the ``os2d detect`` JSON contract,
    :func:`os2d.results.write_detections_json`).

    Args:
        output_dir: created if missing.
        weights: weights name or checkpoint path for :meth:`Detector.from_weights`.
        device: torch device.
        seed: scene seed (see :func:`os2d.apps.demo.scene.make_demo_scene`).
        scales: pyramid levels; ``image_size``: sqrt(w*h) of level 1.0 (default: planted objects ~240 px).
        max_detections: detections kept (and written to the JSON).
        draw_top: draw the ``draw_top`` best detections (default: the k best of each class, k = its
            number of planted instances).

    Returns:
        dict with ``files``, ``classes``, ``num_instances``, ``recall`` (per class: instances, found, recall
        among the top-k detections at IoU 0.5, k = instances of the class), ``overall_recall``,
        ``image_size``, ``scales``, ``num_detections`` and ``seconds`` (model build + detection).
    """
    from os2d.detector import Detector
    from os2d.visualize import draw_detections, draw_gallery, side_by_side

    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = make_demo_scene(seed)
    size = image_size if image_size is not None else demo_image_size(scene)

    t0 = time.perf_counter()
    detector = Detector.from_weights(weights, device=device)
    for name, img in scene.class_images.items():
        detector.add_class(name, img)
    t1 = time.perf_counter()
    dets = detector.detect(scene.image, image_size=size, scales=tuple(scales), max_detections=max_detections)
    t2 = time.perf_counter()

    recall = topk_recall(scene.boxes, dets)
    n_inst = len(scene.boxes)
    found = sum(r["found"] for r in recall.values())

    scene_path = out_dir / "demo_scene.png"
    pic_path = out_dir / "demo_detections.png"
    json_path = out_dir / "demo_detections.json"
    scene.image.save(scene_path)
    if draw_top is None:
        drawn = draw_detections(scene.image, _top_per_class(dets, scene))
        caption = "class images (one each); shown above: the k best detections of each class, k = planted"
    else:
        drawn = draw_detections(scene.image, dets, max_detections=draw_top)
        caption = f"class images (one each); shown above: the {draw_top} best detections"
    gallery = draw_gallery(list(scene.class_images.items()), thumb=150, title=caption)
    side_by_side(drawn, gallery, pad=8, vertical=True).save(pic_path)
    write_detections_json(json_path, detector.classes, [image_record(str(scene_path), scene.image.size, dets)])
    return {
        "files": {"scene": str(scene_path), "detections_png": str(pic_path), "detections_json": str(json_path)},
        "seed": seed,
        "classes": list(scene.class_images),
        "num_instances": n_inst,
        "recall": recall,
        "overall_recall": found / n_inst if n_inst else 1.0,
        "image_size": size,
        "scales": list(map(float, scales)),
        "num_detections": len(dets),
        "seconds": {"setup": round(t1 - t0, 3), "detect": round(t2 - t1, 3), "total": round(t2 - t0, 3)},
    }


__all__ = ["DEMO_SCALES", "MODEL_OBJECT_SIZE", "demo_image_size", "run_demo", "topk_recall"]
