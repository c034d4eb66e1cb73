"""Training data of the CoAE head: class-labelled boxes, trunk features cached once per image level (float16, on
disk), query features of the class images, and the sampling of (level, query, RoIs) training samples.

Convention: a cached level is the image resized to ``(w, h)``; its features are (C, ceil(h/16), ceil(w/16)) without
anchor padding; boxes are xyxy pixels of that level image. Labels index :attr:`LabelledData.class_names`; -1 marks
a box whose class has no class image (never a query, still a negative for other queries).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from os2d.agnostic.cache import TrainImage, build_cache, load_cache
from os2d.data.simple_csv import CLASS_NAME_COLUMNS, CLASS_PATH_COLUMNS
from os2d.files import atomic_torch_save
from os2d.io import image_to_tensor, load_image
from os2d.model.os2d import Os2dModel
from os2d.ops import box_iou

logger = logging.getLogger(__name__)


@dataclass
class LabelledImage:
    """One training image: boxes (original pixels) and their class indices."""

    path: str
    boxes_xyxy: Tensor  # (N, 4) float32
    labels: Tensor  # (N,) int64, -1 = class without a class image
    group: int  # index of the CSV pair it came from


@dataclass
class LabelledData:
    """Images, class names, one class image per class and the CSV pair (group) of each class."""

    images: list[LabelledImage]
    class_names: list[str]
    class_images: list[str]  # paths
    class_groups: list[int]


def _resolve(root: Path, name: str) -> str:
    p = Path(name)
    return str(p if p.is_absolute() else root / p)


def read_labelled_csvs(box_csvs: Sequence[str | Path], class_csvs: Sequence[str | Path],
                       exclude_classes: Sequence[str] = ()) -> LabelledData:
    """Read pairs of box CSVs (``image,class,x1,y1,x2,y2``) and class CSVs (``name,path`` or ``class,class_image``;
    the first image of a class is its query). Every image with a box of ``exclude_classes`` is dropped; excluded classes are not
    queries. Images come sorted by path within each pair (a fixed order for seeds and the cache)."""
    excluded = set(exclude_classes)
    names: list[str] = []
    paths: list[str] = []
    groups: list[int] = []
    index: dict[tuple[int, str], int] = {}
    images: list[LabelledImage] = []
    for g, (box_csv, class_csv) in enumerate(zip(box_csvs, class_csvs, strict=True)):
        root = Path(class_csv).resolve().parent
        with open(class_csv, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            name_col = next((c for c in CLASS_NAME_COLUMNS if c in header), None)
            path_col = next((c for c in CLASS_PATH_COLUMNS if c in header), None)
            if name_col is None or path_col is None:
                raise ValueError(f"{class_csv}: the class CSV needs columns name,path; header is {header}")
            for row in reader:
                name = row[name_col].strip()
                if name in excluded or (g, name) in index:
                    continue
                index[(g, name)] = len(names)
                names.append(name)
                paths.append(_resolve(root, row[path_col].strip()))
                groups.append(g)
        root = Path(box_csv).resolve().parent
        rows: dict[str, list[tuple[list[float], int]]] = {}
        banned: set[str] = set()
        with open(box_csv, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                image = _resolve(root, row["image"])
                if row["class"] in excluded:
                    banned.add(image)
                    continue
                box = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
                rows.setdefault(image, []).append((box, index.get((g, row["class"]), -1)))
        for path in sorted(rows):
            if path in banned:
                continue
            boxes = torch.tensor([b for b, _ in rows[path]], dtype=torch.float32).view(-1, 4)
            labels = torch.tensor([c for _, c in rows[path]], dtype=torch.long)
            images.append(LabelledImage(path, boxes, labels, g))
    logger.info("%d labelled training images, %d query classes", len(images), len(names))
    return LabelledData(images, names, paths, groups)


@dataclass
class CachedLabelledLevel:
    """Trunk features of one image level, its boxes in level pixels, labels and group."""

    features: Tensor  # (C, H, W) float16
    boxes_xyxy: Tensor  # (N, 4) level pixels
    labels: Tensor  # (N,)
    group: int


def build_labelled_cache(model: Os2dModel, data: LabelledData, cache_dir: str | Path, *,
                         object_sizes: Sequence[float], side_range: tuple[int, int],
                         progress: Callable[[int, int], None] | None = None) -> list[CachedLabelledLevel]:
    """The detector's per-image feature cache (:func:`os2d.agnostic.cache.build_cache`: missing files computed,
    existing ones kept), its levels with each image's labels and group attached (in memory, float16)."""
    files = build_cache(model, [TrainImage(im.path, im.boxes_xyxy) for im in data.images], cache_dir,
                        object_sizes=object_sizes, side_range=side_range, progress=progress)
    levels: list[CachedLabelledLevel] = []
    for item, path in zip(data.images, files, strict=True):
        levels += [CachedLabelledLevel(lv.features, lv.boxes_xyxy, item.labels, item.group) for lv in load_cache([path])]
    return levels


@torch.no_grad()
def query_features(model: Os2dModel, paths: Sequence[str], size: int, cache_file: str | Path | None = None) -> Tensor:
    """(K, C, size/16, size/16) float16 trunk features of the class images resized to ``size`` x ``size``;
    stored in ``cache_file`` (reused when it holds the same paths and size)."""
    if cache_file is not None and Path(cache_file).exists():
        data = torch.load(cache_file, map_location="cpu", weights_only=True)
        if data["paths"] == list(paths) and data["size"] == size:
            return data["features"]
    device = next(model.parameters()).device
    feats = []
    for start in range(0, len(paths), 32):
        batch = [load_image(p).resize((size, size)) for p in paths[start:start + 32]]
        x = torch.stack([image_to_tensor(im) for im in batch]).to(device)
        feats.append(model.extract_features(x, align_to_anchors=False).half().cpu())
    out = torch.cat(feats) if feats else torch.zeros(0)
    if cache_file is not None:
        atomic_torch_save(cache_file, {"paths": list(paths), "size": size, "features": out})
    return out


@dataclass
class RoiSample:
    """The RoIs of one (level, query class) training sample."""

    rois_xyxy: Tensor  # (R, 4) level pixels
    is_positive: Tensor  # (R,) bool
    matched_xyxy: Tensor  # (R, 4) the query-class box each positive refines to (rows of negatives unused)


def jitter_boxes(boxes_xyxy: Tensor, copies: int, amount: float, generator: torch.Generator) -> Tensor:
    """``copies`` random shifts/scalings (by up to ``amount`` of the size) of each box: (N * copies, 4)."""
    if boxes_xyxy.numel() == 0 or copies == 0:
        return boxes_xyxy.new_zeros(0, 4)
    b = boxes_xyxy.repeat(copies, 1)
    wh = (b[:, 2:] - b[:, :2]).repeat(1, 2)
    noise = (torch.rand(b.shape, generator=generator) * 2 - 1) * amount
    return b + noise * wh


def sample_rois(proposals_xyxy: Tensor, boxes_xyxy: Tensor, labels: Tensor, query: int, *, count: int,
                positive_fraction: float, positive_iou: float, negative_iou: float,
                generator: torch.Generator) -> RoiSample:
    """Candidates = proposals + the query class's boxes + jittered copies of them; label them by IoU with the
    query class's boxes (boxes of other classes are plain negatives: the look-alikes the head must reject); draw at
    most ``positive_fraction * count`` positives and fill up with negatives (fewer RoIs when candidates run out)."""
    own = boxes_xyxy[labels == query]
    cands = torch.cat([proposals_xyxy, own, jitter_boxes(own, 3, 0.15, generator)])
    cands = cands[(cands[:, 2] - cands[:, 0] >= 2) & (cands[:, 3] - cands[:, 1] >= 2)]
    if own.numel():
        iou = box_iou(cands, own)  # (M, n)
        best, arg = iou.max(dim=1)
        matched = own[arg]
    else:
        best = torch.zeros(cands.shape[0])
        matched = torch.zeros_like(cands)
    pos = torch.nonzero(best >= positive_iou)[:, 0]
    neg = torch.nonzero(best < negative_iou)[:, 0]
    pos = pos[torch.randperm(pos.numel(), generator=generator)[:int(round(count * positive_fraction))]]
    neg = neg[torch.randperm(neg.numel(), generator=generator)[:count - pos.numel()]]
    keep = torch.cat([pos, neg])
    is_pos = torch.zeros(keep.numel(), dtype=torch.bool)
    is_pos[:pos.numel()] = True
    return RoiSample(cands[keep], is_pos, matched[keep])


__all__ = ["CachedLabelledLevel", "LabelledData", "LabelledImage", "RoiSample", "build_labelled_cache",
           "jitter_boxes", "query_features", "read_labelled_csvs", "sample_rois"]
