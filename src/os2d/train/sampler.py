"""Training batches: random crop/scale patches of the scene images and the class images of the batch.

Paper Sec. 4 "Training batches and data augmentation": each image of a batch is processed at a random scale
and location and resampled to a fixed-size patch; the class batch holds the annotated classes of the
patches plus random classes as negatives (the reference code adds no random negatives:
``random_negatives=False`` reproduces it). Hard patches found by :mod:`os2d.train.mining` replace the random
crops when given.

Convention:
    Boxes are ``x1, y1, x2, y2`` float32. ``crop_xyxy`` is in pixels of the ORIGINAL image (the frame of
    :func:`os2d.io.load_image` and of the dataset's boxes); batch boxes are in pixels of the ``P x P`` patch.
    ``scale`` = patch pixels per original pixel. Every random choice is drawn from the
    ``numpy.random.Generator`` given to :meth:`PatchSampler.sample`, so a saved generator state replays the
    same batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from os2d.data.records import DetectionDataset
from os2d.io import image_to_tensor, load_image, resize_to_area

__all__ = ["INTERPOLATIONS", "MinedPatch", "PatchSampler", "SamplerConfig", "TrainBatch", "box_coverage"]

INTERPOLATIONS = (
    Image.Resampling.BOX,
    Image.Resampling.NEAREST,
    Image.Resampling.HAMMING,
    Image.Resampling.BICUBIC,
    Image.Resampling.LANCZOS,
    Image.Resampling.BILINEAR,
)
"""PIL filters drawn at random for training resizes (reference: patches and class images)."""

MINED_KINDS = ("neg", "pos", "loc")

CropXYXY = tuple[float, float, float, float]


@dataclass(frozen=True)
class SamplerConfig:
    """How training patches and class batches are built (reference ``train.augment.*`` defaults)."""

    patch_size: int = 600  # P: every patch is resized to P x P
    batch_size: int = 4  # patches per batch
    class_batch_size: int = 15  # K: at most this many class images per batch
    scale_jitter: float = 0.7  # scale ~ U[s0 * j, s0 / j]
    aspect_jitter: float = 0.9  # crop aspect ~ U[j, 1 / j] (patches are square)
    min_box_coverage: float = 0.7  # a crop is accepted if a box has this fraction inside; less -> difficult
    drop_box_coverage: float = 0.3  # boxes with less of their area inside are dropped (background)
    max_trials: int = 100  # random crops tried before the top-left fallback
    random_negatives: bool = True  # paper: fill the class batch with random classes; False = reference code
    random_interpolation: bool = True  # random PIL filter for patches and class images (else bilinear)
    class_image_size: int = 240  # class images resized to area class_image_size^2
    horizontal_flip: bool = False  # flip a whole batch (patches and class images) with probability 0.5

    def __post_init__(self) -> None:
        if self.patch_size < 16:
            raise ValueError(f"patch_size must be at least 16, got {self.patch_size}")
        if self.batch_size < 1 or self.class_batch_size < 1:
            raise ValueError("batch_size and class_batch_size must be positive")
        if not 0.0 < self.scale_jitter <= 1.0 or not 0.0 < self.aspect_jitter <= 1.0:
            raise ValueError("scale_jitter and aspect_jitter must be in (0, 1]")
        if not 0.0 <= self.drop_box_coverage <= self.min_box_coverage <= 1.0:
            raise ValueError("need 0 <= drop_box_coverage <= min_box_coverage <= 1")
        if self.max_trials < 1:
            raise ValueError("max_trials must be at least 1")
        if self.class_image_size < 16:
            raise ValueError("class_image_size must be at least 16")


@dataclass(frozen=True)
class MinedPatch:
    """A hard training patch found by :func:`os2d.train.mining.mine_hard_patches`.

    Attributes:
        image_index: index into ``dataset.images``.
        crop_xyxy: the crop in original-image pixels (may extend past the image: padded with zeros).
        scale: pyramid scale of the crop (patch pixels per original pixel).
        class_id: index into ``dataset.classes`` of the class whose loss made the patch hard.
        kind: "neg" (hard negative), "pos" (hard recognition positive) or "loc" (hard localisation positive).
        loss: the per-anchor loss that ranked it.
    """

    image_index: int
    crop_xyxy: CropXYXY
    scale: float
    class_id: int
    kind: str
    loss: float

    def __post_init__(self) -> None:
        if self.kind not in MINED_KINDS:
            raise ValueError(f"mined patch kind must be one of {MINED_KINDS}, got {self.kind!r}")


@dataclass
class TrainBatch:
    """One training batch (B patches, K class images).

    Attributes:
        images: (B, 3, P, P) float32 in [0, 1].
        boxes: B tensors (M_i, 4) float32, xyxy in patch pixels.
        labels: B tensors (M_i,) int64: index into this batch's classes, -1 if the class has no class image
            in the batch (background for every head).
        difficult: B tensors (M_i,) bool: partly outside the patch or difficult in the dataset (ignored).
        class_images: K tensors (3, h, w) in [0, 1], area ~ class_image_size^2.
        class_ids: K dataset class indices.
        image_ids: B dataset image ids.
        image_indices: B dataset image indices.
        crops_xyxy: B crops in original-image pixels.
    """

    images: Tensor
    boxes: list[Tensor]
    labels: list[Tensor]
    difficult: list[Tensor]
    class_images: list[Tensor]
    class_ids: list[int]
    image_ids: list[str]
    image_indices: list[int] = field(default_factory=list)
    crops_xyxy: list[CropXYXY] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    def to(self, device: torch.device | str) -> TrainBatch:
        """A copy with every tensor on ``device``."""
        return TrainBatch(
            images=self.images.to(device),
            boxes=[b.to(device) for b in self.boxes],
            labels=[t.to(device) for t in self.labels],
            difficult=[t.to(device) for t in self.difficult],
            class_images=[c.to(device) for c in self.class_images],
            class_ids=list(self.class_ids),
            image_ids=list(self.image_ids),
            image_indices=list(self.image_indices),
            crops_xyxy=list(self.crops_xyxy),
        )


def box_coverage(boxes_xyxy: np.ndarray, crop_xyxy: Sequence[float]) -> np.ndarray:
    """Fraction of each box's area inside the crop: (M, 4) boxes -> (M,) in [0, 1] (0 for empty boxes)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = (float(v) for v in crop_xyxy)
    iw = np.clip(np.minimum(boxes[:, 2], x1) - np.maximum(boxes[:, 0], x0), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], y1) - np.maximum(boxes[:, 1], y0), 0, None)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    return np.where(area > 0, iw * ih / np.where(area > 0, area, 1.0), 0.0)


@dataclass
class _Patch:
    image: Image.Image  # P x P
    boxes: np.ndarray  # (M, 4) patch pixels
    labels: np.ndarray  # (M,) dataset class indices
    difficult: np.ndarray  # (M,) bool
    crop: CropXYXY


class PatchSampler:
    """Builds :class:`TrainBatch` es from a :class:`DetectionDataset`.

    Args:
        dataset: training images with boxes and classes with class images.
        config: patch and class-batch options.
        image_size: ``sqrt(w * h)`` at which the dataset's objects are ~240 px; each image's base scale is
            ``s0 = image_size / sqrt(w * h)`` (reference ``train.dataset_scale``).
        cache_images: keep decoded scene and class images in memory (fast, but RAM grows with the dataset).
    """

    def __init__(self, dataset: DetectionDataset, config: SamplerConfig, *, image_size: int,
                 cache_images: bool = False) -> None:
        if not image_size or image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size!r}")
        if not dataset.images:
            raise ValueError(f"dataset {dataset.name!r} has no images to train on")
        if not dataset.classes:
            raise ValueError(f"dataset {dataset.name!r} has no classes")
        missing = [c.class_id for c in dataset.classes if not c.image_paths]
        if missing:
            raise ValueError(f"dataset {dataset.name!r}: classes without class images: {missing[:10]}")
        num_classes = len(dataset.classes)
        for im in dataset.images:
            if im.num_boxes and (im.labels.min() < 0 or im.labels.max() >= num_classes):
                raise ValueError(f"dataset {dataset.name!r}, image {im.image_id}: label outside "
                                 f"0..{num_classes - 1}")
        self.dataset = dataset
        self.config = config
        self.image_size = float(image_size)
        self.cache_images = cache_images
        self._scene_cache: dict[int, Image.Image] = {}
        self._class_cache: dict[str, Image.Image] = {}

    @property
    def num_images(self) -> int:
        return len(self.dataset.images)

    @property
    def num_classes(self) -> int:
        return len(self.dataset.classes)

    # ------------------------------------------------------------------------------------------ images

    def load_scene(self, index: int) -> Image.Image:
        """Decoded RGB scene image ``index`` (cached if ``cache_images``)."""
        img = self._scene_cache.get(index)
        if img is None:
            img = load_image(self.dataset.images[index].path)
            if self.cache_images:
                self._scene_cache[index] = img
        return img

    def _load_class_image(self, path: object) -> Image.Image:
        key = str(path)
        img = self._class_cache.get(key)
        if img is None:
            img = load_image(key)
            if self.cache_images:
                self._class_cache[key] = img
        return img

    def _interpolation(self, rng: np.random.Generator) -> Image.Resampling:
        if not self.config.random_interpolation:
            return Image.Resampling.BILINEAR
        return INTERPOLATIONS[int(rng.integers(len(INTERPOLATIONS)))]

    # ------------------------------------------------------------------------------------------- crops

    def base_scale(self, width: int, height: int) -> float:
        """``s0``: patch pixels per original pixel that brings the image to ``sqrt(w*h) = image_size``."""
        return self.image_size / math.sqrt(width * height)

    def random_crop(self, width: int, height: int, boxes_xyxy: np.ndarray,
                    rng: np.random.Generator) -> CropXYXY:
        """Reference random crop/scale: up to ``max_trials`` crops, the first one that keeps a box.

        A trial draws an aspect ratio ``U[a, 1/a]`` and a scale ``U[s0 j, s0 / j]``; the crop is
        ``w = min(P / scale, W)``, ``h = min(w / aspect, H)`` with a uniform top-left corner. It is accepted
        when some box has at least ``min_box_coverage`` of its area inside (or the image has no boxes).
        Fallback: the top-left ``P / s0`` square (clipped to the image).
        """
        cfg = self.config
        p = float(cfg.patch_size)
        s0 = self.base_scale(width, height)
        for _ in range(cfg.max_trials):
            aspect = rng.uniform(cfg.aspect_jitter, 1.0 / cfg.aspect_jitter)
            scale = rng.uniform(s0 * cfg.scale_jitter, s0 / cfg.scale_jitter)
            cw = min(p / scale, float(width))
            ch = min(cw / aspect, float(height))
            x0 = rng.uniform(0.0, width - cw)
            y0 = rng.uniform(0.0, height - ch)
            crop = (x0, y0, x0 + cw, y0 + ch)
            if len(boxes_xyxy) == 0 or box_coverage(boxes_xyxy, crop).max() >= cfg.min_box_coverage:
                return crop
        return (0.0, 0.0, min(p / s0, float(width)), min(p / s0, float(height)))

    def _cut(self, img: Image.Image, crop: CropXYXY, resample: Image.Resampling) -> tuple[Image.Image, CropXYXY]:
        """Crop and resize to P x P. A crop inside the image is resampled exactly (float box); one that
        sticks out is rounded to whole pixels and padded with zeros (black) past the image."""
        p = self.config.patch_size
        w, h = img.size
        x0, y0, x1, y1 = crop
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            raise ValueError(f"empty crop {crop}")
        if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
            return img.resize((p, p), resample=resample, box=(x0, y0, x1, y1)), crop
        r = tuple(int(round(v)) for v in crop)
        if r[2] <= r[0] or r[3] <= r[1]:
            r = (r[0], r[1], max(r[2], r[0] + 1), max(r[3], r[1] + 1))
        return img.crop(r).resize((p, p), resample=resample), (float(r[0]), float(r[1]), float(r[2]), float(r[3]))

    def make_patch(self, index: int, crop: CropXYXY | None, rng: np.random.Generator) -> _Patch:
        """Patch of image ``index``: the given crop (mined) or a random one, boxes mapped and filtered."""
        cfg = self.config
        rec = self.dataset.images[index]
        img = self.load_scene(index)
        width, height = img.size
        if crop is None:
            crop = self.random_crop(width, height, rec.boxes_xyxy, rng)
        patch_img, crop = self._cut(img, crop, self._interpolation(rng))
        cov = box_coverage(rec.boxes_xyxy, crop)
        keep = cov >= cfg.drop_box_coverage
        if cfg.drop_box_coverage <= 0.0:
            keep &= cov > 0  # a box entirely outside the patch never survives
        x0, y0, x1, y1 = crop
        sx = cfg.patch_size / (x1 - x0)
        sy = cfg.patch_size / (y1 - y0)
        b = rec.boxes_xyxy[keep].astype(np.float64)
        b[:, 0::2] = (np.clip(b[:, 0::2], x0, x1) - x0) * sx
        b[:, 1::2] = (np.clip(b[:, 1::2], y0, y1) - y0) * sy
        difficult = rec.difficult[keep] | (cov[keep] < cfg.min_box_coverage)
        return _Patch(patch_img, b.astype(np.float32), rec.labels[keep].copy(), difficult, crop)

    # ------------------------------------------------------------------------------------------ batch

    def select_mined(self, pool: Sequence[MinedPatch], n: int, rng: np.random.Generator) -> list[MinedPatch]:
        """``n`` patches from a mined pool: half hard negatives, half hard (recognition or localisation)
        positives (all of one group when the other is empty); without replacement when the group allows."""
        negs = [m for m in pool if m.kind == "neg"]
        poss = [m for m in pool if m.kind != "neg"]
        if not negs and not poss:
            return []
        n_neg = n // 2 if (negs and poss) else (n if negs else 0)
        picked: list[MinedPatch] = []
        for group, count in ((negs, n_neg), (poss, n - n_neg)):
            if count:
                idx = rng.choice(len(group), size=count, replace=count > len(group))
                picked.extend(group[int(i)] for i in idx)
        return picked

    def _class_batch(self, patches: Sequence[_Patch], mined_classes: Sequence[int],
                     rng: np.random.Generator) -> list[int]:
        """Reference: classes present, shuffled, truncated to K - #mined, plus the mined classes; paper: plus
        random negative classes up to K."""
        k = self.config.class_batch_size
        forced = list(dict.fromkeys(int(c) for c in mined_classes))[:k]
        present = sorted({int(c) for p in patches for c in p.labels} - set(forced))
        present = [present[int(i)] for i in rng.permutation(len(present))][: k - len(forced)]
        classes = present + forced
        if self.config.random_negatives and len(classes) < k:
            taken = set(classes)
            others = [c for c in range(self.num_classes) if c not in taken]
            n = min(k - len(classes), len(others))
            if n:
                classes += [others[int(i)] for i in rng.choice(len(others), size=n, replace=False)]
        return classes

    def _class_image(self, class_index: int, rng: np.random.Generator) -> Image.Image:
        paths = self.dataset.classes[class_index].image_paths
        path = paths[int(rng.integers(len(paths)))] if len(paths) > 1 else paths[0]
        return resize_to_area(self._load_class_image(path), self.config.class_image_size,
                              resample=self._interpolation(rng))

    def sample(self, image_indices: Sequence[int], rng: np.random.Generator,
               mined: Sequence[MinedPatch] | None = None) -> TrainBatch:
        """Build one batch.

        Args:
            image_indices: dataset images of the batch (B = their number), each cut at a random crop/scale.
            rng: the only source of randomness.
            mined: a pool of hard patches (:func:`os2d.train.mining.mine_hard_patches`). When non-empty, the B
                patches are drawn from it instead (half negatives, half positives, as the reference), their
                classes are forced into the class batch and ``image_indices`` only sets B.

        Returns:
            The batch; boxes of classes outside the class batch get label -1.
        """
        indices = [int(i) for i in image_indices]
        if not indices:
            raise ValueError("a batch needs at least one image index")
        for i in indices:
            if not 0 <= i < self.num_images:
                raise IndexError(f"image index {i} out of range 0..{self.num_images - 1}")
        picks = self.select_mined(mined, len(indices), rng) if mined else []
        if picks:
            patches = [self.make_patch(m.image_index, m.crop_xyxy, rng) for m in picks]
            indices = [m.image_index for m in picks]
        else:
            patches = [self.make_patch(i, None, rng) for i in indices]
        class_ids = self._class_batch(patches, [m.class_id for m in picks], rng)
        class_imgs = [self._class_image(c, rng) for c in class_ids]
        flip = self.config.horizontal_flip and bool(rng.random() < 0.5)

        to_batch = np.full(self.num_classes, -1, dtype=np.int64)
        to_batch[np.asarray(class_ids, dtype=np.int64)] = np.arange(len(class_ids))
        p = float(self.config.patch_size)
        images, boxes, labels, difficult = [], [], [], []
        for patch in patches:
            img, b = patch.image, patch.boxes.copy()
            if flip:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                b[:, [0, 2]] = p - b[:, [2, 0]]
            images.append(image_to_tensor(img))
            boxes.append(torch.from_numpy(b).reshape(-1, 4))
            labels.append(torch.from_numpy(to_batch[patch.labels]) if len(patch.labels) else
                          torch.zeros(0, dtype=torch.int64))
            difficult.append(torch.from_numpy(patch.difficult.astype(bool)))
        if flip:
            class_imgs = [c.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for c in class_imgs]
        return TrainBatch(
            images=torch.stack(images),
            boxes=boxes,
            labels=labels,
            difficult=difficult,
            class_images=[image_to_tensor(c) for c in class_imgs],
            class_ids=class_ids,
            image_ids=[self.dataset.images[i].image_id for i in indices],
            image_indices=indices,
            crops_xyxy=[patch.crop for patch in patches],
        )
