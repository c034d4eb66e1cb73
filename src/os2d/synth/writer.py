"""Generate a synthetic one-shot detection dataset and write it in os2d's simple CSV format.

Output folder::

    images/000000.jpg ...
    annotations.csv     image,class,x1,y1,x2,y2,difficult   (pixels; read by os2d.data.read_simple_csv)
    class_images/*.png  the class images exactly as pasted (cropped to their opaque part)
    class_images.csv    name,path
    synth_config.json   config, seed, sources, counts
    preview.jpg         a grid of the first samples with their boxes

Image ``i`` depends only on the inputs, the config, ``seed`` and ``i`` (``numpy.random.default_rng([seed, i])``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from os2d.files import atomic_json_dump, atomic_write
from os2d.synth.appearance import variant
from os2d.synth.compose import Annotation, Scene
from os2d.synth.config import SynthConfig
from os2d.synth.layout import ProductPicker, add_occluders, scatter_scene, shelf_scene
from os2d.synth.preview import preview_grid
from os2d.synth.sources import ClassImage, class_image_list, list_images, load_background, load_class_image

logger = logging.getLogger(__name__)

MAX_TRIES = 20
PATCH_SOURCES = 8  # background photos kept in memory for look-alike patches and occluders


@dataclass
class Sample:
    """One generated image and its annotations."""

    image: Image.Image
    annotations: list[Annotation]


def image_size(config: SynthConfig, rng: np.random.Generator) -> tuple[int, int]:
    """(width, height): the longer side is ``config.image_size``, the aspect drawn from ``aspect_range``."""
    a = rng.uniform(*config.aspect_range)
    s = config.image_size
    return (s, max(16, round(s / a))) if a >= 1 else (max(16, round(s * a)), s)


def generate_sample(classes: Sequence[Sequence[ClassImage]], backgrounds: Sequence[Path], config: SynthConfig,
                    rng: np.random.Generator, patch_sources: Sequence[Image.Image] = (),
                    siblings: dict[int, int] | None = None) -> Sample:
    """Compose one scene; retried (with further draws of ``rng``) until it has a non-difficult box.
    ``siblings``: class <-> variant class pairs (:func:`add_variant_classes`), placed in the same scenes."""
    picker = ProductPicker(classes, config, patch_sources, siblings)
    for _ in range(MAX_TRIES):
        w, h = image_size(config, rng)
        background = load_background(backgrounds[int(rng.integers(len(backgrounds)))], w, h, rng)
        if rng.random() < 0.5:
            background = background.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        scene = Scene(background)
        active = picker.active_classes(rng)
        if rng.random() < config.shelf_prob:
            shelf_scene(scene, picker, active, rng, config)
        else:
            scatter_scene(scene, picker, active, rng, config)
        add_occluders(scene, rng, config, patch_sources)
        annotations = scene.annotations(difficult_occlusion=config.difficult_occlusion, min_box_px=config.min_box_px)
        image = scene.render(rng, lighting=config.lighting, noise_std=config.max_noise_std)
        if config.max_blur_px > 0 and rng.random() < config.blur_prob / 2:  # camera defocus of the whole picture
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.7 * config.max_blur_px)))
        if any(not a.difficult for a in annotations):
            return Sample(image, annotations)
    raise RuntimeError(f"no scene with a visible object in {MAX_TRIES} tries; check object_size/product_height")


def add_variant_classes(classes: list[list[ClassImage]], names: list[str], config: SynthConfig,
                        rng: np.random.Generator) -> dict[int, int]:
    """Append a variant class (:func:`os2d.synth.appearance.variant` of its first class image, named
    ``<name>-variant``) for each class with probability ``config.variant_prob``; the donor band comes from another
    class. Returns the class <-> variant pairs (both directions). Changes ``classes`` and ``names`` in place."""
    siblings: dict[int, int] = {}
    n = len(classes)
    if config.variant_prob <= 0 or n < 2:
        return siblings
    for c in range(n):
        if rng.random() >= config.variant_prob:
            continue
        donor = int(rng.choice([d for d in range(n) if d != c]))
        base = classes[c][0]
        name = f"{base.name}-variant"
        while name in names:
            name += "_"
        image = variant(base.image, classes[donor][0].image, rng)
        classes.append([ClassImage(name, image, base.source, base.opaque_fraction)])
        names.append(name)
        siblings[c], siblings[len(classes) - 1] = len(classes) - 1, c
    return siblings


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "class"


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def _jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def generate_dataset(class_source: str | os.PathLike[str], background_dir: str | os.PathLike[str],
                     out_dir: str | os.PathLike[str], *, num_images: int, config: SynthConfig | None = None,
                     seed: int = 0, max_classes: int | None = None, preview: int = 6,
                     progress: bool = True) -> dict[str, Any]:
    """Generate ``num_images`` scenes and write the dataset (see the module docstring).

    Args:
        class_source: folder of class images (name = file stem) or a ``name,path`` CSV.
        background_dir: folder of real photos used as backgrounds (and for look-alike patches and occluders).
        max_classes: use only the first N classes (in name order of the source).
        preview: number of samples in ``preview.jpg`` (0 = no preview).
    Returns:
        A summary: counts of images, boxes, difficult boxes, classes, boxes per class.
    """
    from tqdm import tqdm

    config = config or SynthConfig()
    if num_images < 1:
        raise ValueError("num_images must be >= 1")
    out = Path(out_dir)
    entries = class_image_list(class_source)
    names = list(dict.fromkeys(name for name, _ in entries))
    if max_classes is not None:
        if max_classes < 1:
            raise ValueError("max_classes must be >= 1")
        names = names[:max_classes]
        entries = [(n, p) for n, p in entries if n in set(names)]
    loaded = [load_class_image(n, p) for n, p in entries]
    classes = [[c for c in loaded if c.name == n] for n in names]
    num_base = len(classes)
    siblings = add_variant_classes(classes, names, config, np.random.default_rng([seed, 2**31 + 1]))
    loaded += [cl[0] for cl in classes[num_base:]]  # the variants' class images (written below with the others)
    backgrounds = list_images(background_dir, "background photo")

    # class images exactly as pasted, and their CSV
    class_rows = []
    used: set[str] = set()
    for c in loaded:
        stem = base = _safe_name(c.name)
        k = 1
        while stem.lower() in used:
            stem, k = f"{base}_{k}", k + 1
        used.add(stem.lower())
        rel = f"class_images/{stem}.png"
        buf = io.BytesIO()
        c.image.save(buf, format="PNG")
        _write_bytes(out / rel, buf.getvalue())
        class_rows.append((c.name, rel))

    patch_rng = np.random.default_rng([seed, 2**31])
    patch_sources = [load_background(backgrounds[int(i)], 640, 480, patch_rng)
                     for i in patch_rng.choice(len(backgrounds), size=min(PATCH_SOURCES, len(backgrounds)),
                                               replace=False)]
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, float, float, float, float, int]] = []
    previews: list[tuple[Image.Image, list[Annotation]]] = []
    num_difficult = 0
    per_class = dict.fromkeys(names, 0)
    for i in tqdm(range(num_images), desc="synth", unit="img", disable=not progress):
        rng = np.random.default_rng([seed, i])
        sample = generate_sample(classes, backgrounds, config, rng, patch_sources, siblings)
        rel = f"images/{i:06d}.jpg"
        data = _jpeg_bytes(sample.image, int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1)))
        _write_bytes(out / rel, data)
        for a in sample.annotations:
            rows.append((rel, names[a.label], *a.box_xyxy, int(a.difficult)))
            num_difficult += int(a.difficult)
            per_class[names[a.label]] += 1
        if len(previews) < preview:
            previews.append((sample.image, sample.annotations))

    def write_csv(path: Path, header: Sequence[str], body: Sequence[Sequence[Any]]) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        _write_bytes(path, buf.getvalue().encode("utf-8"))

    write_csv(out / "annotations.csv", ["image", "class", "x1", "y1", "x2", "y2", "difficult"],
              [(r[0], r[1], *(f"{v:.2f}" for v in r[2:6]), r[6]) for r in rows])
    write_csv(out / "class_images.csv", ["name", "path"], class_rows)
    summary = {"images": num_images, "boxes": len(rows), "difficult": num_difficult, "classes": len(names),
               "boxes_per_class": per_class}
    atomic_json_dump(out / "synth_config.json", {
        "config": config.to_dict(), "seed": seed, "num_images": num_images,
        "class_source": str(class_source), "background_dir": str(background_dir),
        "backgrounds": len(backgrounds), **{k: v for k, v in summary.items() if k != "boxes_per_class"}})
    if previews:
        grid = preview_grid(previews, names)
        _write_bytes(out / "preview.jpg", _jpeg_bytes(grid, 90))
    logger.info("synth: %s", json.dumps({k: v for k, v in summary.items() if k != "boxes_per_class"}))
    return summary
