"""Random affine warps of real photos and their ground-truth alignments (CNNGeometric-style supervision).

Convention:
    ``img_from_cls`` (2, 3) maps class-image PIXELS (continuous, (0, 0) = top-left corner of the top-left
    pixel, (Wc, Hc) = bottom-right corner) to input-canvas pixels (same convention). A class image's local
    frame is [-1, 1]^2 over its full extent, so ``x_cls = (x_local + 1) * Wc / 2``. A location's local frame
    (head convention, :mod:`os2d.model.grids`) is ``x_img = anchor/2 * x_local + stride * (l + 0.5)``.
    The ground truth for the head at location (k, l) is therefore
    ``theta = local_from_img(k, l) o img_from_cls o cls_from_local``: class-local -> image-local, the
    direction ``params_to_affine`` returns (after its inversion for V2).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from os2d.pretrain.config import WarpConfig


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2x3 affine ``a o b`` (apply ``b`` first)."""
    a3 = np.vstack([a, [0.0, 0.0, 1.0]])
    b3 = np.vstack([b, [0.0, 0.0, 1.0]])
    return (a3 @ b3)[:2]


def invert(a: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine map."""
    return np.linalg.inv(np.vstack([a, [0.0, 0.0, 1.0]]))[:2]


def apply(a: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (..., 2) points."""
    return points @ a[:, :2].T + a[:, 2]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_crop(rng: np.random.Generator, photo_size: tuple[int, int], config: WarpConfig) -> tuple[int, int, int, int]:
    """A random integer box ``(x1, y1, x2, y2)`` inside a photo of ``(W, H)``: the region that plays the class
    image (area fraction and aspect from ``config``, clipped to the photo)."""
    w, h = photo_size
    area = rng.uniform(*config.crop_area_range) * w * h
    aspect = _log_uniform(rng, 1.0 / config.max_crop_aspect, config.max_crop_aspect)  # w / h
    cw = int(round(min(w, max(16.0, math.sqrt(area * aspect)))))
    ch = int(round(min(h, max(16.0, math.sqrt(area / aspect)))))
    x1 = int(rng.integers(0, w - cw + 1))
    y1 = int(rng.integers(0, h - ch + 1))
    return x1, y1, x1 + cw, y1 + ch


def sample_warp(rng: np.random.Generator, class_size: tuple[int, int], centre_xy: tuple[float, float],
                config: WarpConfig) -> np.ndarray:
    """A random ``img_from_cls`` (2, 3): the class image's centre lands at ``centre_xy`` (canvas pixels) and
    its linear part is ``R(rot) [[1, shear], [0, 1]] diag(s a, s / a)``."""
    wc, hc = class_size
    s = _log_uniform(rng, *config.scale_range)
    a = _log_uniform(rng, 1.0 / config.max_aspect, config.max_aspect)
    rot = math.radians(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg))
    shear = rng.uniform(-config.max_shear, config.max_shear)
    c, si = math.cos(rot), math.sin(rot)
    linear = np.array([[c, -si], [si, c]]) @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([s * a, s / a])
    t = np.asarray(centre_xy, dtype=np.float64) - linear @ np.array([wc / 2.0, hc / 2.0])
    return np.hstack([linear, t[:, None]])


def cls_from_local(class_size: tuple[int, int]) -> np.ndarray:
    """Class-local [-1, 1]^2 -> class-image pixels."""
    wc, hc = class_size
    return np.array([[wc / 2.0, 0.0, wc / 2.0], [0.0, hc / 2.0, hc / 2.0]])


def local_thetas(img_from_cls: np.ndarray, class_size: tuple[int, int], centres_xy: np.ndarray,
                 anchor_size: float) -> np.ndarray:
    """Ground-truth head transforms (class-local -> image-local) at locations with pixel centres
    ``centres_xy`` (L, 2). Returns (L, 2, 3) float32."""
    img_from_local = compose(img_from_cls, cls_from_local(class_size))  # class-local -> canvas pixels
    half = anchor_size / 2.0
    out = np.empty((len(centres_xy), 2, 3), dtype=np.float64)
    out[:, :, :2] = img_from_local[:, :2] / half
    out[:, :, 2] = (img_from_local[:, 2][None] - np.asarray(centres_xy, np.float64)) / half
    return out.astype(np.float32)


def object_corners(img_from_cls: np.ndarray, class_size: tuple[int, int]) -> np.ndarray:
    """(4, 2) canvas pixels of the class image's corners: top-left, top-right, bottom-left, bottom-right
    (the order of :attr:`os2d.model.head.HeadOutput.corners_xy`)."""
    wc, hc = class_size
    return apply(img_from_cls, np.array([[0.0, 0.0], [wc, 0.0], [0.0, hc], [wc, hc]]))


def render_canvas(photo: Image.Image, crop_xyxy: tuple[int, int, int, int], class_size: tuple[int, int],
                  img_from_cls: np.ndarray, background: Tensor, canvas_size: int) -> Tensor:
    """The input canvas: the whole photo warped so that its crop lands where ``img_from_cls`` puts the class
    image (so the object keeps its real surroundings); outside the photo, ``background`` (3, S, S).

    Returns:
        (3, S, S) float32 in [0, 1].
    """
    x1, y1, x2, y2 = crop_xyxy
    wc, hc = class_size
    # canvas pixel -> photo pixel: canvas -> class pixels -> photo pixels (crop box scaled to the class image)
    photo_from_cls = np.array([[(x2 - x1) / wc, 0.0, x1], [0.0, (y2 - y1) / hc, y1]])
    photo_from_img = compose(photo_from_cls, invert(img_from_cls))
    # Sampling a photo that is shrunk aliases: pre-shrink it with PIL's antialiasing filter instead.
    shrink = math.sqrt(abs(np.linalg.det(photo_from_img[:, :2])))
    pw, ph = photo.size
    if shrink > 1.25:
        small = (max(1, round(pw / shrink)), max(1, round(ph / shrink)))
        photo = photo.resize(small, Image.Resampling.BILINEAR)
        rescale = np.array([[small[0] / pw, 0.0, 0.0], [0.0, small[1] / ph, 0.0]])
        photo_from_img = compose(rescale, photo_from_img)
        pw, ph = small
    src = torch.from_numpy(np.asarray(photo.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255
    s = canvas_size
    centres = torch.arange(s, dtype=torch.float64) + 0.5
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    m = torch.from_numpy(photo_from_img)
    u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]  # photo pixels (continuous)
    v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    inside = ((u >= 0) & (u <= pw) & (v >= 0) & (v <= ph)).float()
    grid = torch.stack([u * (2.0 / pw) - 1.0, v * (2.0 / ph) - 1.0], dim=-1).float()[None]  # align_corners=False
    warped = F.grid_sample(src[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    return warped * inside + background * (1.0 - inside)


def background_canvas(photo: Image.Image, rng: np.random.Generator, canvas_size: int) -> Tensor:
    """A random square crop of a photo resized to the canvas: (3, S, S) in [0, 1]."""
    pw, ph = photo.size
    side = int(rng.integers(max(1, min(pw, ph) // 2), min(pw, ph) + 1))
    x = int(rng.integers(0, pw - side + 1))
    y = int(rng.integers(0, ph - side + 1))
    crop = photo.convert("RGB").crop((x, y, x + side, y + side)).resize((canvas_size, canvas_size),
                                                                        Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(crop, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255


def photometric_jitter(img: Tensor, rng: np.random.Generator, config: WarpConfig) -> Tensor:
    """Brightness, contrast, saturation and Gaussian noise (so the canvas is not a pixel copy of the class)."""
    b = 1.0 + rng.uniform(-config.brightness, config.brightness)
    c = 1.0 + rng.uniform(-config.contrast, config.contrast)
    sat = 1.0 + rng.uniform(-config.saturation, config.saturation)
    gray = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]  # (1, H, W)
    out = gray + (img - gray) * sat
    out = (out - out.mean()) * c + out.mean()
    out = out * b
    std = rng.uniform(0.0, config.noise_std)
    if std > 0:
        g = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        out = out + torch.randn(out.shape, generator=g) * std
    return out.clamp_(0.0, 1.0)
