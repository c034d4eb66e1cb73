"""Hard patch mining (paper Sec. 4 / Table 1 "mine patches"; reference ``train.mining``).

Every ``every`` iterations the model runs in eval mode over the training images, each at ``num_scales`` random
pyramid scales, against the image's own classes plus ``num_random_classes`` random others. Per-anchor losses
(with target remapping, no RLL weighting) rank patch-sized crops centred on the anchors; after NMS the
``num_hard`` hardest negatives, recognition positives and localisation positives of each image are kept as
:class:`~os2d.train.sampler.MinedPatch` es, which :meth:`PatchSampler.sample` turns into batches.

Convention:
    Crops are built at the pyramid level (``P x P`` level pixels, top-left aligned to the stride, shifted inside
    the level image when it is larger than the crop) and reported in ORIGINAL image pixels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from os2d.data.records import DetectionDataset
from os2d.io import image_to_tensor, load_image, resize_to_area
from os2d.model.os2d import Os2dModel
from os2d.ops import nms
from os2d.train.losses import Os2dObjective
from os2d.train.sampler import MinedPatch, SamplerConfig, TrainBatch

__all__ = ["MiningConfig", "anchor_crops", "mine_hard_patches"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MiningConfig:
    """Hard patch mining options (reference ``train.mining.*``; used for V2-train)."""

    enabled: bool = False
    every: int = 5000  # iterations between two mining passes (the trainer also mines at iteration 0)
    num_random_classes: int = 200  # random other classes scored on each image
    scales: tuple[float, float] = (0.5, 1.6)  # pyramid scales (x s0) drawn uniformly in [min, max]
    num_scales: int = 2  # random scales per image
    num_hard: int = 10  # patches kept per image and kind (neg / pos / loc)
    nms_iou: float = 0.5  # NMS between crops of the same image and kind, ranked by loss
    class_chunk: int = 16  # classes per head call (memory bound)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if len(self.scales) != 2 or not 0.0 < self.scales[0] <= self.scales[1]:
            raise ValueError(f"mining scales must be (min, max) with 0 < min <= max, got {self.scales}")
        if self.every < 1 or self.num_scales < 1 or self.num_hard < 0 or self.num_random_classes < 0:
            raise ValueError("every and num_scales must be positive; num_hard, num_random_classes non-negative")
        if not 0.0 <= self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in [0, 1], got {self.nms_iou}")


def anchor_crops(anchors: Tensor, patch_size: int, stride: float, level_width: int, level_height: int) -> Tensor:
    """Patch-sized crops roughly centred on anchors (level pixels).

    The top-left corner ``centre - P/2`` is rounded down to a multiple of the stride (so the crop's anchor grid
    meets the level's), then shifted inside the level image; a level smaller than ``P`` starts the crop at 0
    (the sampler pads past the image with zeros).

    Args:
        anchors: (A, 4) xyxy level pixels.
    Returns:
        (A, 4) crops xyxy of size ``P x P``.
    """
    p = float(patch_size)
    centre = (anchors[:, :2] + anchors[:, 2:]) / 2  # (A, 2)
    top_left = torch.floor((centre - p / 2) / stride) * stride
    limit = torch.tensor([level_width - p, level_height - p], dtype=top_left.dtype, device=top_left.device)
    top_left = torch.minimum(top_left, limit).clamp(min=0)
    return torch.cat([top_left, top_left + p], dim=1)


class _KernelCache:
    """Class kernels computed once per mining pass (eval-mode class images: bilinear, first image)."""

    def __init__(self, model: Os2dModel, dataset: DetectionDataset, class_image_size: int,
                 device: torch.device) -> None:
        self.model, self.dataset, self.size, self.device = model, dataset, class_image_size, device
        self.kernels: dict[int, Tensor] = {}
        self.aspect: dict[int, float] = {}

    def get(self, classes: Sequence[int]) -> tuple[Tensor, Tensor]:
        """(K, S*S, C) kernels and (K,) aspect ratios of ``classes``."""
        todo = [c for c in classes if c not in self.kernels]
        for c in todo:
            img = resize_to_area(load_image(self.dataset.classes[c].image_paths[0]), self.size)
            self.kernels[c] = self.model.class_kernels([image_to_tensor(img).to(self.device)])[0]
            self.aspect[c] = img.width / img.height
        return (torch.stack([self.kernels[c] for c in classes]),
                torch.tensor([self.aspect[c] for c in classes]))


@dataclass
class _Candidates:
    crops: list[Tensor]  # (N_i, 4) original pixels
    losses: list[Tensor]
    classes: list[Tensor]  # dataset class indices
    scales: list[Tensor]


def _image_classes(labels: np.ndarray, num_classes: int, num_random: int, rng: np.random.Generator) -> list[int]:
    own = sorted({int(c) for c in labels})
    others = np.setdiff1d(np.arange(num_classes), np.asarray(own, dtype=np.int64))
    n = min(num_random, len(others))
    extra = rng.choice(others, size=n, replace=False).tolist() if n else []
    return own + [int(c) for c in extra]


def _select(cands: _Candidates, kind: str, image_index: int, config: MiningConfig) -> list[MinedPatch]:
    if not cands.crops:
        return []
    crops, losses = torch.cat(cands.crops), torch.cat(cands.losses)
    classes, scales = torch.cat(cands.classes), torch.cat(cands.scales)
    if crops.shape[0] == 0 or config.num_hard == 0:
        return []
    keep = nms(crops, losses, config.nms_iou, max_keep=config.num_hard)
    return [
        MinedPatch(image_index=image_index, crop_xyxy=tuple(float(v) for v in crops[i].tolist()),
                   scale=float(scales[i]), class_id=int(classes[i]), kind=kind, loss=float(losses[i]))
        for i in keep.tolist()
    ]


@torch.no_grad()
def _mine_image(model: Os2dModel, objective: Os2dObjective, dataset: DetectionDataset, index: int,
                kernels: _KernelCache, sampler_config: SamplerConfig, config: MiningConfig, image_size: float,
                rng: np.random.Generator, device: torch.device) -> list[MinedPatch]:
    rec = dataset.images[index]
    img = load_image(rec.path)
    width, height = img.size
    s0 = image_size / math.sqrt(width * height)
    classes = _image_classes(rec.labels, len(dataset.classes), config.num_random_classes, rng)
    scales = rng.uniform(config.scales[0], config.scales[1], size=config.num_scales) * s0
    if not classes:
        return []
    class_kernels, class_aspect = kernels.get(classes)
    to_batch = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([to_batch[int(c)] for c in rec.labels], dtype=torch.int64, device=device)
    cands = {kind: _Candidates([], [], [], []) for kind in ("neg", "pos", "loc")}
    class_tensor = torch.tensor(classes, dtype=torch.int64, device=device)
    for scale in scales.tolist():
        lw, lh = max(1, int(width * scale)), max(1, int(height * scale))
        sx, sy = lw / width, lh / height
        level = image_to_tensor(img.resize((lw, lh), Image.Resampling.BILINEAR)).to(device)[None]
        out = model(level, class_kernels, class_chunk=config.class_chunk, aspect=class_aspect)
        boxes = torch.as_tensor(rec.boxes_xyxy, device=device).reshape(-1, 4)
        boxes = boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype, device=device)
        batch = TrainBatch(images=level, boxes=[boxes], labels=[labels],
                           difficult=[torch.as_tensor(rec.difficult, device=device)], class_images=[],
                           class_ids=classes, image_ids=[rec.image_id], image_indices=[index])
        per_kind = dict(zip(("pos", "neg", "loc"), objective.per_anchor_losses(out, batch), strict=True))
        crops = anchor_crops(out.anchors(), sampler_config.patch_size, out.stride, lw, lh)
        crops = crops / torch.tensor([sx, sy, sx, sy], dtype=crops.dtype, device=device)  # original pixels
        for kind, losses in per_kind.items():
            # crops do not depend on the class: the hardest class of an anchor wins its crop (exact under NMS)
            best, cls = losses[0].max(dim=0)  # (A,)
            hard = best > 0
            c = cands[kind]
            c.crops.append(crops[hard])
            c.losses.append(best[hard].float())
            c.classes.append(class_tensor[cls[hard]])
            c.scales.append(torch.full((int(hard.sum()),), scale, device=device))
    return [p for kind in ("neg", "pos", "loc") for p in _select(cands[kind], kind, index, config)]


def mine_hard_patches(model: Os2dModel, objective: Os2dObjective, dataset: DetectionDataset,
                      sampler_config: SamplerConfig, config: MiningConfig, *, image_size: float,
                      rng: np.random.Generator, device: torch.device | str,
                      image_indices: Sequence[int] | None = None, progress: bool = True) -> list[MinedPatch]:
    """Mine hard patches of the training images.

    Args:
        model: the detector (run in eval mode here; its train/eval mode is restored afterwards).
        objective: gives the per-anchor losses (:meth:`Os2dObjective.per_anchor_losses`, with remapping).
        dataset: training data; sampler_config: patch size P and class image size.
        config: mining options.
        image_size: ``sqrt(w*h)`` of the dataset scale (as for :class:`PatchSampler`).
        rng: draws the scales and the random classes.
        device: where the model lives.
        image_indices: images to mine (default: all).
        progress: show a tqdm progress bar.

    Returns:
        Up to ``num_hard`` patches per image and kind ("neg", "pos", "loc"), each kind ranked by loss.
    """
    device = torch.device(device)
    indices = range(len(dataset.images)) if image_indices is None else [int(i) for i in image_indices]
    kernels = _KernelCache(model, dataset, sampler_config.class_image_size, device)
    was_training = model.training
    model.eval()
    mined: list[MinedPatch] = []
    try:
        iterator = indices
        if progress:
            from tqdm import tqdm

            iterator = tqdm(indices, desc="mining hard patches", unit="img")
        for index in iterator:
            mined.extend(_mine_image(model, objective, dataset, index, kernels, sampler_config, config,
                                     float(image_size), rng, device))
    finally:
        model.train(was_training)
    counts = {k: sum(p.kind == k for p in mined) for k in ("neg", "pos", "loc")}
    logger.info("mined %d patches from %d images: %s", len(mined), len(indices), counts)
    return mined
