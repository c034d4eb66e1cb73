"""Frozen trunk features of the training images, computed once and stored float16 on disk.

The trunk never changes while the head trains, so each training image runs through it once per cached level
(a few per image) instead of once per epoch: this is what makes training the head fit a CPU.

Convention: a cached level is the image resized to ``(w, h)`` pixels; its features are (C, ceil(h/16),
ceil(w/16)) without anchor padding; its boxes are xyxy pixels of that level image.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from os2d.files import atomic_torch_save
from os2d.io import image_to_tensor, load_image
from os2d.model.os2d import Os2dModel

logger = logging.getLogger(__name__)


@dataclass
class TrainImage:
    """One training image and its boxes (original pixels)."""

    path: str
    boxes_xyxy: Tensor  # (N, 4) float32


@dataclass
class CachedLevel:
    """Trunk features of one image at one level and the boxes in that level's pixels."""

    features: Tensor  # (C, H, W) float16
    boxes_xyxy: Tensor  # (N, 4) float32, level pixels


def read_box_csvs(paths: Sequence[str | Path], exclude_classes: Iterable[str] = ()) -> list[TrainImage]:
    """Images and boxes of CSVs ``image,class,x1,y1,x2,y2[,...]``; paths relative to each CSV's folder.

    Every image with a box of a class in ``exclude_classes`` is dropped entirely (held-out classes must not
    even appear as background). Images are returned sorted by path (a fixed order for seeds and the cache).
    """
    excluded = set(exclude_classes)
    boxes: dict[str, list[list[float]]] = {}
    banned: set[str] = set()
    for csv_path in paths:
        root = Path(csv_path).resolve().parent
        with open(csv_path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                p = Path(row["image"])
                image = str(p if p.is_absolute() else root / p)
                if row["class"] in excluded:
                    banned.add(image)
                    continue
                boxes.setdefault(image, []).append([float(row[k]) for k in ("x1", "y1", "x2", "y2")])
    out = [TrainImage(p, torch.tensor(b, dtype=torch.float32).view(-1, 4))
           for p, b in sorted(boxes.items()) if p not in banned]
    logger.info("%d training images (%d dropped: they show an excluded class)", len(out), len(banned & boxes.keys()))
    return out


def level_sizes(width: int, height: int, boxes_xyxy: Tensor, object_sizes: Sequence[float],
                side_range: tuple[int, int]) -> list[tuple[int, int]]:
    """(w, h) of the cached levels of one image: one per target object size (its median box side
    sqrt(w*h) brought to that size), with sqrt(w*h) of the level clipped into ``side_range``; duplicates
    removed."""
    side = math.sqrt(width * height)
    wh = (boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]).clamp(min=1)
    median = float(wh.prod(-1).sqrt().median()) if len(wh) else side / 4
    sizes: list[tuple[int, int]] = []
    for target in object_sizes:
        level_side = min(max(side * target / median, side_range[0]), side_range[1])
        r = level_side / side
        size = (max(16, round(width * r)), max(16, round(height * r)))
        if size not in sizes:
            sizes.append(size)
    return sizes


@torch.no_grad()
def compute_levels(model: Os2dModel, image: Image.Image, boxes_xyxy: Tensor,
                   sizes: Sequence[tuple[int, int]]) -> list[CachedLevel]:
    """Trunk features (float16) of ``image`` resized to each of ``sizes``, with the boxes scaled along."""
    device = next(model.parameters()).device
    levels = []
    for w, h in sizes:
        level = image.resize((w, h), Image.BILINEAR)
        feats = model.extract_features(image_to_tensor(level)[None].to(device), align_to_anchors=False)[0]
        scale = torch.tensor([w / image.width, h / image.height] * 2)
        levels.append(CachedLevel(feats.half().cpu(), boxes_xyxy * scale))
    return levels


def cache_file(cache_dir: Path, image_path: str) -> Path:
    """One file per image, named by a hash of its path (stable across runs, resumable)."""
    return cache_dir / (hashlib.sha1(image_path.encode()).hexdigest()[:16] + ".pt")


def build_cache(model: Os2dModel, images: Sequence[TrainImage], cache_dir: str | Path, *,
                object_sizes: Sequence[float], side_range: tuple[int, int],
                progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Compute the missing cache files (existing ones are kept: an interrupted run resumes) and return all."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for i, item in enumerate(images):
        path = cache_file(cache_dir, item.path)
        if not path.exists():
            image = load_image(item.path)
            sizes = level_sizes(image.width, image.height, item.boxes_xyxy, object_sizes, side_range)
            levels = compute_levels(model, image, item.boxes_xyxy, sizes)
            atomic_torch_save(path, {"image": item.path, "levels": [
                {"features": lv.features, "boxes_xyxy": lv.boxes_xyxy} for lv in levels]})
        files.append(path)
        if progress is not None:
            progress(i + 1, len(images))
    return files


def load_cache(files: Sequence[Path]) -> list[CachedLevel]:
    """All cached levels of the given files (in memory, float16)."""
    levels = []
    for path in files:
        data = torch.load(path, map_location="cpu", weights_only=True)
        levels += [CachedLevel(lv["features"], lv["boxes_xyxy"]) for lv in data["levels"]]
    return levels


__all__ = ["CachedLevel", "TrainImage", "build_cache", "cache_file", "compute_levels", "level_sizes",
           "load_cache", "read_box_csvs"]
