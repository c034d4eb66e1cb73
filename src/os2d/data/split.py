"""A held-out split of a small detection dataset, by image, and the CSV files that write each part back.

``os2d finetune`` splits the user's few annotated photos so that the fine-tuned model is judged on photos it
never trained on. The split is seeded (the same dataset, share and seed give the same split), whole images go
to one side, and it tries to keep every class in training (a class with no training box cannot be learnt)
while spreading the classes over the held-out images.

    >>> split = split_held_out(dataset, share=0.3, seed=0)
    >>> write_boxes_csv(dataset, split.train, "run/train.csv")

The written files are the simple CSV format (:mod:`os2d.data.simple_csv`) with absolute paths, so
``os2d eval --boxes run/heldout.csv --classes run/classes.csv`` reads them from anywhere.
"""

from __future__ import annotations

import csv
import io
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from os2d.data.records import DetectionDataset, ImageRecord
from os2d.files import atomic_write

BOXES_HEADER = ("image", "class", "x1", "y1", "x2", "y2", "difficult")


@dataclass(frozen=True)
class HeldOutSplit:
    """Image ids of the two parts (in dataset order) and the classes each part lacks."""

    train: tuple[str, ...]
    held_out: tuple[str, ...]
    classes_not_trained: tuple[str, ...]  # class names without a box in the training images
    classes_not_held_out: tuple[str, ...]  # class names without a box in the held-out images (no AP there)


def _classes_of(image: ImageRecord) -> set[int]:
    return {int(c) for c in image.labels.tolist()}


def held_out_count(num_images: int, share: float) -> int:
    """How many of ``num_images`` images are held out: ``round(share * n)``, at least 1 and at most n - 1."""
    if num_images < 2:
        raise ValueError(f"a held-out split needs at least 2 annotated images, got {num_images}")
    if not 0.0 < share < 1.0:
        raise ValueError(f"the held-out share must be between 0 and 1, got {share}")
    return min(max(round(share * num_images), 1), num_images - 1)


def split_held_out(dataset: DetectionDataset, share: float = 0.3, seed: int = 0) -> HeldOutSplit:
    """Hold out ``held_out_count(n, share)`` of the n images that have boxes (images without boxes are left out).

    Images are visited in a seeded random order, in three passes that stop when enough are held out: first
    images that bring a class not held out yet, then any image, both only if every class of the image keeps
    a training image; then, if still short, any image (its class may then lack training images; reported in
    ``classes_not_trained``).

    Raises:
        ValueError: fewer than 2 images with boxes, or ``share`` outside (0, 1).
    """
    images = [im for im in dataset.images if im.num_boxes]
    n_held = held_out_count(len(images), share)
    order = list(range(len(images)))
    random.Random(seed).shuffle(order)
    in_train = Counter(c for im in images for c in _classes_of(im))  # images per class left in training
    held: set[int] = set()
    held_classes: set[int] = set()
    for rule in ("new class", "keeps training", "any"):
        for i in order:
            if len(held) == n_held:
                break
            classes = _classes_of(images[i])
            if i in held or (rule != "any" and any(in_train[c] <= 1 for c in classes)):
                continue
            if rule == "new class" and classes <= held_classes:
                continue
            held.add(i)
            held_classes |= classes
            in_train.subtract(classes)
    names = dataset.class_names
    return HeldOutSplit(
        train=tuple(im.image_id for i, im in enumerate(images) if i not in held),
        held_out=tuple(im.image_id for i, im in enumerate(images) if i in held),
        classes_not_trained=tuple(names[c] for c in range(len(names)) if in_train[c] <= 0),
        classes_not_held_out=tuple(names[c] for c in range(len(names)) if c not in held_classes))


def _number(value: float) -> str:
    """The shortest text that reads back as the same float32 (``24``, ``10.1``)."""
    return np.format_float_positional(np.float32(value), trim="-")


def boxes_csv_text(dataset: DetectionDataset, image_ids: Sequence[str]) -> str:
    """The simple boxes CSV of some images (dataset order): one row per box, absolute image paths."""
    wanted = set(image_ids)
    names = dataset.class_names
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(BOXES_HEADER)
    for im in dataset.images:
        if im.image_id not in wanted:
            continue
        path = os.path.abspath(im.path)
        for box, label, difficult in zip(im.boxes_xyxy.tolist(), im.labels.tolist(), im.difficult.tolist(),
                                         strict=True):
            w.writerow([path, names[label], *(_number(v) for v in box), int(difficult)])
    return buf.getvalue()


def classes_csv_text(dataset: DetectionDataset) -> str:
    """The class CSV ``name,path`` of every class image, absolute paths."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("name", "path"))
    for c in dataset.classes:
        for p in c.image_paths:
            w.writerow([c.name, os.path.abspath(p)])
    return buf.getvalue()


def write_text(path: str | Path, text: str) -> None:
    """Write a CSV text atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_boxes_csv(dataset: DetectionDataset, image_ids: Sequence[str], path: str | Path) -> None:
    """Write :func:`boxes_csv_text` of ``image_ids`` to ``path`` (atomically)."""
    write_text(path, boxes_csv_text(dataset, image_ids))


__all__ = [
    "BOXES_HEADER",
    "HeldOutSplit",
    "boxes_csv_text",
    "classes_csv_text",
    "held_out_count",
    "split_held_out",
    "write_boxes_csv",
    "write_text",
]
