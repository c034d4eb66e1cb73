"""Training/evaluation pairs: a real photo crop as the class image, a warped copy of the photo as the input.

Features come from the model's frozen backbone exactly as in detection (``Os2dModel.class_kernels`` for the
class image, ``Os2dModel.extract_features`` for the canvas), so they are computed once and cached; only the
TransformNet trains. Every pair is generated from ``numpy.random.default_rng([seed, shard])`` so a shard is
reproducible on its own (resumable extraction).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from os2d.files import atomic_torch_save
from os2d.io import image_to_tensor, load_image, resize_to_area
from os2d.model.os2d import Os2dModel
from os2d.pretrain.alignment import receptive_radius
from os2d.pretrain.config import PretrainConfig
from os2d.pretrain.warps import (
    background_canvas,
    local_thetas,
    object_corners,
    photometric_jitter,
    render_canvas,
    sample_crop,
    sample_warp,
)

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_FEATURE_BATCH = 16


def list_photos(root: str | os.PathLike[str]) -> list[Path]:
    """All images under ``root`` (recursive, sorted); a ``ValueError`` names the folder when there are none."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"photo folder not found: {root}")
    photos = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not photos:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    return photos


@dataclass
class PairSet:
    """Cached pairs.

    Attributes:
        features: (N, C, h, w) canvas features: a window of ``h = 2 (R + r) + 1`` locations around the object
            (training, float16) or the full map (evaluation, float32).
        kernels: (N, S*S, C) class kernels.
        thetas: (N, 2R+1, 2R+1, 2, 3) true class-local -> image-local maps at the supervised locations.
        corners: (N, 4, 2) object corners on the canvas (pixels; TL, TR, BL, BR).
        centre: (k0, l0) of the centre location in ``features``' frame.
        radius: R, supervised locations are centre +- R.
    """

    features: Tensor
    kernels: Tensor
    thetas: Tensor
    corners: Tensor
    centre: tuple[int, int]
    radius: int

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def to_dict(self) -> dict:
        return {"features": self.features, "kernels": self.kernels, "thetas": self.thetas,
                "corners": self.corners, "centre": list(self.centre), "radius": self.radius}

    @classmethod
    def from_dict(cls, d: dict) -> PairSet:
        return cls(d["features"], d["kernels"], d["thetas"], d["corners"], tuple(d["centre"]), int(d["radius"]))

    @staticmethod
    def cat(parts: Sequence[PairSet]) -> PairSet:
        if not parts:
            raise ValueError("no pair sets to concatenate")
        first = parts[0]
        if any((p.centre, p.radius, p.features.shape[1:]) != (first.centre, first.radius, first.features.shape[1:])
               for p in parts):
            raise ValueError("pair sets with different layouts cannot be concatenated")
        return PairSet(torch.cat([p.features for p in parts]), torch.cat([p.kernels for p in parts]),
                       torch.cat([p.thetas for p in parts]), torch.cat([p.corners for p in parts]),
                       first.centre, first.radius)


@dataclass(frozen=True)
class CanvasLayout:
    """Where objects go on the canvas: the centre location (k0, l0) of the (h, w) feature map."""

    feature_size: tuple[int, int]
    centre: tuple[int, int]
    stride: float
    margin: int  # R + r: locations needed on each side of the centre to compute the supervised outputs

    def location_centres(self, radius: int) -> np.ndarray:
        """(2R+1, 2R+1, 2) pixel centres of the supervised locations, row-major (k, l)."""
        k0, l0 = self.centre
        d = np.arange(-radius, radius + 1)
        ks, ls = np.meshgrid(k0 + d, l0 + d, indexing="ij")
        return np.stack([(ls + 0.5) * self.stride, (ks + 0.5) * self.stride], axis=-1)


def canvas_layout(model: Os2dModel, config: PretrainConfig) -> CanvasLayout:
    """The feature-map size of the canvas (measured by running the backbone, never computed) and its centre."""
    with torch.no_grad():
        h, w = model.extract_features(torch.zeros(1, 3, config.canvas_size, config.canvas_size)).shape[-2:]
    margin = config.supervise_radius + receptive_radius(model.transform_net)
    k0, l0 = h // 2, w // 2
    if k0 - margin < 0 or k0 + margin > h - 1 or l0 - margin < 0 or l0 + margin > w - 1:
        raise ValueError(f"canvas_size {config.canvas_size} gives a {h}x{w} feature map, too small for "
                         f"{margin} locations on each side of the centre (supervise_radius "
                         f"{config.supervise_radius} + TransformNet radius); use a larger canvas")
    return CanvasLayout((int(h), int(w)), (k0, l0), float(model.stride), margin)


def make_pairs(model: Os2dModel, photos: Sequence[Path], config: PretrainConfig, *, num_pairs: int, seed: int,
               shard: int, full_maps: bool) -> PairSet:
    """Generate ``num_pairs`` pairs from ``photos`` and compute their features with the (frozen) backbone.

    Args:
        full_maps: keep the whole canvas feature map in float32 (evaluation through the full head) instead
            of the float16 window around the object (training).
    """
    if len(photos) < 2:
        raise ValueError("need at least 2 photos (one is the object, another the background)")
    rng = np.random.default_rng([seed, shard])
    layout = canvas_layout(model, config)
    centres = layout.location_centres(config.supervise_radius).reshape(-1, 2)
    r = config.supervise_radius
    s_cls = model.config.class_image_size
    class_images: list[Tensor] = []
    crop_of_pair: list[int] = []
    canvases: list[Tensor] = []
    thetas: list[np.ndarray] = []
    corners: list[np.ndarray] = []
    while len(canvases) < num_pairs:
        photo = load_image(photos[int(rng.integers(len(photos)))])
        crop = sample_crop(rng, photo.size, config.warp)
        class_img = resize_to_area(photo.crop(crop), s_cls)
        class_size = class_img.size
        class_images.append(image_to_tensor(class_img))
        for _ in range(min(config.warps_per_crop, num_pairs - len(canvases))):
            jitter = rng.uniform(-config.warp.centre_jitter_px, config.warp.centre_jitter_px, size=2)
            k0, l0 = layout.centre
            centre_xy = ((l0 + 0.5) * layout.stride + jitter[0], (k0 + 0.5) * layout.stride + jitter[1])
            img_from_cls = sample_warp(rng, class_size, centre_xy, config.warp)
            bg = background_canvas(load_image(photos[int(rng.integers(len(photos)))]), rng, config.canvas_size)
            canvas = render_canvas(photo, crop, class_size, img_from_cls, bg, config.canvas_size)
            canvases.append(photometric_jitter(canvas, rng, config.warp))
            thetas.append(local_thetas(img_from_cls, class_size, centres, model.config.anchor_size)
                          .reshape(2 * r + 1, 2 * r + 1, 2, 3))
            corners.append(object_corners(img_from_cls, class_size).astype(np.float32))
            crop_of_pair.append(len(class_images) - 1)

    k0, l0 = layout.centre
    m = layout.margin
    feats = []
    with torch.no_grad():
        kernels = model.class_kernels(class_images)[torch.tensor(crop_of_pair)]  # (N, S*S, C)
        for i in range(0, num_pairs, _FEATURE_BATCH):
            f = model.extract_features(torch.stack(canvases[i : i + _FEATURE_BATCH]))
            feats.append(f if full_maps else f[:, :, k0 - m : k0 + m + 1, l0 - m : l0 + m + 1].half())
    features = torch.cat(feats)
    if not full_maps:
        kernels = kernels.half()
    centre = (k0, l0) if full_maps else (m, m)
    return PairSet(features, kernels, torch.from_numpy(np.stack(thetas)), torch.from_numpy(np.stack(corners)),
                   centre, r)


def cached_pairs(model: Os2dModel, photos: Sequence[Path], config: PretrainConfig, cache_dir: Path, *,
                 num_pairs: int, seed: int, full_maps: bool, name: str, key: str = "",
                 progress: bool = True, echo: Callable[[str], None] | None = None) -> PairSet:
    """:func:`make_pairs` in shards of ``config.shard_size``, each saved to ``cache_dir/{name}-{i}.pt`` and
    reused when present with the same ``key`` (a fingerprint of everything that shaped the pairs: model,
    photos, config), so extraction resumes after an interruption and never mixes runs."""
    from tqdm import tqdm

    cache_dir.mkdir(parents=True, exist_ok=True)
    num_shards = (num_pairs + config.shard_size - 1) // config.shard_size
    parts = []
    with tqdm(total=num_pairs, desc=f"{name} pairs", unit="pair", disable=not progress) as bar:
        for i in range(num_shards):
            n = min(config.shard_size, num_pairs - i * config.shard_size)
            path = cache_dir / f"{name}-{i:04d}.pt"
            part = None
            if path.is_file():
                saved = torch.load(path, map_location="cpu", weights_only=True)
                part = PairSet.from_dict(saved)
                if len(part) != n or saved.get("key", "") != key:
                    logger.warning("%s was made by another configuration: regenerating", path)
                    part = None
            if part is None:
                part = make_pairs(model, photos, config, num_pairs=n, seed=seed, shard=i, full_maps=full_maps)
                atomic_torch_save(path, {**part.to_dict(), "key": key})
            parts.append(part)
            bar.update(n)
            if echo is not None and not progress:
                echo(f"{name} pairs: {min(num_pairs, (i + 1) * config.shard_size)}/{num_pairs}")
    return PairSet.cat(parts)
