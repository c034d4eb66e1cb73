"""A tiny generated detection dataset and model config for the training tests (no files from outside)."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

SCENE = 224  # scene side (px); objects ~100x112 px (anchors 112 px); patches 160 px
NUM_CLASSES = 4
NUM_DISTRACTORS = 6


def product(seed: int, size: tuple[int, int] = (100, 112)) -> Image.Image:
    """A product-like picture: a coarse colour checker, a band and a dark disc (distinct per seed)."""
    rng = np.random.default_rng(1000 + seed)
    w, h = size
    img = Image.fromarray(rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)).resize((w, h), Image.NEAREST)
    d = ImageDraw.Draw(img)
    c = tuple(int(v) for v in rng.integers(0, 256, 3))
    y = int(rng.integers(h // 5, h // 2))
    d.rectangle([0, y, w - 1, y + h // 6], fill=c)
    cx, cy = int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 2, 3 * h // 4))
    d.ellipse([cx - w // 6, cy - w // 6, cx + w // 6, cy + w // 6], fill=(20, 20, 20))
    d.rectangle([0, 0, w - 1, h - 1], outline=(255, 255, 255), width=2)
    return img


def _instance(obj: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A photographed-looking copy: size, contrast/brightness, colour cast and blur jitter."""
    f = rng.uniform(0.85, 1.0)
    img = obj.resize((int(obj.width * f), int(obj.height * f * rng.uniform(0.95, 1.0))), Image.BILINEAR)
    a = np.asarray(img, dtype=np.float64)
    a = (a - 128) * rng.uniform(0.6, 1.3) + 128 + rng.uniform(-40, 40) + rng.uniform(-25, 25, 3)
    img = Image.fromarray(a.clip(0, 255).astype(np.uint8))
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.5))))


def make_dataset(root: Path, num_images: int = 8, seed: int = 0) -> dict[str, object]:
    """Write scenes + CSVs under ``root``; returns a ``train_data`` spec dict (simple_csv).

    Each 224 x 224 scene has four 112 x 112 slots: two hold instances of two classes, two hold distractor
    products (same generator, other seeds) that are in no class.
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    objects = [product(c) for c in range(NUM_CLASSES)]
    distractors = [product(100 + d) for d in range(NUM_DISTRACTORS)]
    with (root / "classes.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "path"])
        for c, obj in enumerate(objects):
            obj.save(root / f"class_{c}.png")
            w.writerow([f"c{c}", f"class_{c}.png"])
    rows = []
    half = SCENE // 2
    for i in range(num_images):
        bg = rng.normal(120, 25, (SCENE // 8, SCENE // 8, 3)).clip(0, 255).astype(np.uint8)
        scene = Image.fromarray(bg).resize((SCENE, SCENE), Image.BILINEAR)
        noise = rng.normal(0, 8, (SCENE, SCENE, 3))
        scene = Image.fromarray((np.asarray(scene, dtype=np.float64) + noise).clip(0, 255).astype(np.uint8))
        classes = [int(c) for c in rng.choice(NUM_CLASSES, size=2, replace=False)]
        others = [int(d) for d in rng.choice(NUM_DISTRACTORS, size=2, replace=False)]
        items = [(c, objects[c]) for c in classes] + [(-1, distractors[d]) for d in others]
        for slot, k in enumerate(rng.permutation(4)):
            c, obj = items[int(k)]
            inst = _instance(obj, rng)
            x0, y0 = (slot % 2) * half, (slot // 2) * half
            x = x0 + int(rng.integers(0, max(half - inst.width, 0) + 1))
            y = y0 + int(rng.integers(0, max(half - inst.height, 0) + 1))
            scene.paste(inst, (x, y))
            if c >= 0:
                rows.append([f"scene_{i}.png", f"c{c}", x, y, x + inst.width, y + inst.height])
        scene.save(root / f"scene_{i}.png")
    with (root / "boxes.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "class", "x1", "y1", "x2", "y2"])
        w.writerows(rows)
    return {"format": "simple_csv", "annotations": str(root / "boxes.csv"), "classes": str(root / "classes.csv"),
            "image_size": SCENE}


def tiny_config_dict(data: dict[str, str], output_dir: Path, **top: object) -> dict[str, object]:
    """A TrainConfig dict for CPU tests: EfficientNet-Lite0 (ImageNet), 7x7 class grid (112 px anchors)."""
    cfg: dict[str, object] = {
        "model": {"backbone": "efficientnet_lite0", "class_image_size": 96, "class_grid_size": 7,
                  "pool_border": 1, "anchor_size": 112.0},
        "init": {"pretrained_backbone": True},
        "train_data": data,
        "sampler": {"patch_size": 160, "batch_size": 2, "class_batch_size": 4, "class_image_size": 96,
                    "random_interpolation": False, "scale_jitter": 0.85},
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
        "eval": {"inference": {"image_size": None, "scales": [1.0], "max_detections": 20}, "at_start": False},
        "max_iter": 4,
        "eval_every": 0,
        "checkpoint_every": 2,
        "log_every": 1,
        "seed": 0,
        "output_dir": str(output_dir),
        "device": "cpu",
    }
    cfg.update(top)
    return cfg


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run with ``n`` torch threads (the test machine's 2 cores are shared; oversubscription is 10x slower)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
