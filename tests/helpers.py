"""Generated test images (no files from outside the project)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from os2d.model.transform_net import TransformNet


def textured_object(size: tuple[int, int] = (96, 128), seed: int = 0) -> Image.Image:
    """A product-like picture: coloured blocks, stripes and a disc on a random background."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = Image.fromarray(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)).resize((w, h), Image.NEAREST)
    d = ImageDraw.Draw(img)
    for i in range(4):
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        d.rectangle([i * w // 9, i * h // 6, w - 1 - i * w // 9, i * h // 6 + h // 10], fill=c)
    d.ellipse([w // 4, h // 2, 3 * w // 4, h // 2 + w // 2], fill=(250, 240, 20), outline=(10, 10, 10), width=3)
    return img


def ring_object(size: tuple[int, int] = (96, 128)) -> Image.Image:
    """A picture unlike :func:`textured_object` in layout and colours (white rings on blue): a distinct class.
    Two textured objects differ only in their colours, so the model and the shortlist take them for look-alikes."""
    w, h = size
    img = Image.new("RGB", size, (30, 60, 200))
    d = ImageDraw.Draw(img)
    for r in range(min(w, h) * 5 // 8, 0, -max(2, min(w, h) // 8)):
        d.ellipse([w // 2 - r, h // 2 - r, w // 2 + r, h // 2 + r], outline=(255, 255, 255), width=max(1, w // 24))
    return img


def scene_with(obj: Image.Image, positions: list[tuple[int, int]], size: tuple[int, int] = (480, 352),
               seed: int = 1) -> Image.Image:
    """A grey noisy background with ``obj`` pasted at the given top-left positions."""
    rng = np.random.default_rng(seed)
    bg = (rng.normal(128, 20, (size[1], size[0], 3)).clip(0, 255)).astype(np.uint8)
    img = Image.fromarray(bg)
    for x, y in positions:
        img.paste(obj, (x, y))
    return img


def png(img: Image.Image) -> bytes:
    """The image as PNG bytes (an upload)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def trained_like_transform_net(seed: int = 0, linear_std: float = 0.01) -> TransformNet:
    """A TransformNet in eval mode with non-trivial weights and BatchNorm statistics (the identity init has a zero
    last layer, so every location would get the same alignment)."""
    torch.manual_seed(seed)
    net = TransformNet(6)
    with torch.no_grad():
        net.linear.weight.normal_(0, linear_std)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.05, 0.05)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()
