"""Scene layouts: dense shelf rows of product facings, or scattered objects; plus occluders.

Every random choice comes from the ``rng`` passed in, so a scene is a function of (inputs, config, rng seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from os2d.synth.appearance import jitter_colour, lookalike
from os2d.synth.compose import Scene
from os2d.synth.config import SynthConfig
from os2d.synth.geometry import fit_quad, perspective_quad, quad_box
from os2d.synth.sources import ClassImage

_BOARD_COLOURS = ((200, 200, 200), (235, 235, 230), (120, 120, 125), (150, 110, 70), (90, 60, 40), (40, 40, 45))
_TAG_COLOURS = ((250, 250, 250), (255, 230, 60), (255, 200, 200), (220, 240, 255))


@dataclass
class Product:
    """An object to paste: RGBA image, class label (-1 = unannotated look-alike) and its opaque share."""

    image: Image.Image
    label: int
    opaque_fraction: float


class ProductPicker:
    """Draws products: a class image of one of the scene's active classes, or an unannotated look-alike
    (a colour-shifted class image or a patch of a background photo); colour jitter and mirror flips."""

    def __init__(self, classes: Sequence[Sequence[ClassImage]], config: SynthConfig,
                 patch_sources: Sequence[Image.Image] = (), siblings: dict[int, int] | None = None) -> None:
        if not classes or any(len(c) == 0 for c in classes):
            raise ValueError("every class needs at least one class image")
        self.classes = classes
        self.config = config
        self.patch_sources = list(patch_sources)
        self.siblings = siblings or {}  # class -> its variant class and back (SynthConfig.variant_prob)

    def active_classes(self, rng: np.random.Generator) -> list[int]:
        lo, hi = self.config.classes_per_image
        k = min(len(self.classes), int(rng.integers(lo, hi + 1)))
        active = {int(i) for i in rng.choice(len(self.classes), size=k, replace=False)}
        if self.siblings:  # a class and its variant share most scenes (no draw without variants: same seeds)
            active |= {self.siblings[c] for c in sorted(active) if c in self.siblings and rng.random() < 0.8}
        return sorted(active)

    def pick(self, rng: np.random.Generator, active: Sequence[int], *, allow_lookalike: bool = True) -> Product:
        cfg = self.config
        if allow_lookalike and rng.random() < cfg.lookalike_prob:
            if self.patch_sources and rng.random() < 0.4:
                product = self._photo_patch(rng)
            else:
                # a sibling of an active class is the hardest look-alike; any class otherwise
                pool = active if rng.random() < 0.7 else range(len(self.classes))
                c = self._class_image(rng, int(rng.choice(list(pool))))
                product = Product(lookalike(c.image, rng), -1, c.opaque_fraction)
        else:
            label = int(rng.choice(list(active)))
            c = self._class_image(rng, label)
            product = Product(c.image, label, c.opaque_fraction)
        image = jitter_colour(product.image, rng, cfg.colour_jitter) if cfg.colour_jitter > 0 else product.image
        if rng.random() < cfg.flip_prob:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return Product(image, product.label, product.opaque_fraction)

    def _class_image(self, rng: np.random.Generator, label: int) -> ClassImage:
        images = self.classes[label]
        return images[int(rng.integers(len(images)))]

    def _photo_patch(self, rng: np.random.Generator) -> Product:
        src = self.patch_sources[int(rng.integers(len(self.patch_sources)))]
        aspect = math.exp(rng.uniform(math.log(0.35), math.log(1.6)))  # w / h, product-like
        h = rng.uniform(0.3, 0.8) * src.height
        w = min(src.width * 0.9, h * aspect)
        x, y = rng.uniform(0, src.width - w), rng.uniform(0, src.height - h)
        patch = src.crop((int(x), int(y), int(x + w), int(y + h))).convert("RGBA")
        return Product(patch, -1, 1.0)


def _blur_px(rng: np.random.Generator, config: SynthConfig) -> float:
    return float(rng.uniform(0.3, config.max_blur_px)) if config.max_blur_px > 0 and rng.random() < config.blur_prob else 0.0


def _paste(scene: Scene, product: Product, quad: np.ndarray, rng: np.random.Generator, config: SynthConfig) -> None:
    scene.paste(product.image, quad, label=product.label, opaque_fraction=product.opaque_fraction,
                blur_px=_blur_px(rng, config), feather_px=config.feather_px)


def shelf_scene(scene: Scene, picker: ProductPicker, active: Sequence[int], rng: np.random.Generator,
                config: SynthConfig) -> None:
    """Shelf rows: boards with price tags; products stand on them in runs of facings, side by side."""
    w, h = scene.width, scene.height
    n_rows = int(rng.integers(config.shelf_rows[0], config.shelf_rows[1] + 1))
    row_h = h / n_rows * rng.uniform(0.9, 1.1)
    y = -rng.uniform(0.0, 0.25) * row_h  # a partial row may show at the top
    yaw_shelf = rng.uniform(-1, 1) * config.max_yaw_deg * 0.7
    roll_shelf = rng.uniform(-1, 1) * config.max_roll_deg / 5
    board_colour = _BOARD_COLOURS[int(rng.integers(len(_BOARD_COLOURS)))]
    while y < h:
        bottom = y + row_h
        board = row_h * rng.uniform(0.05, 0.09)
        base = bottom - board
        scene.fill(np.array([[-2, base], [w + 2, base], [w + 2, bottom], [-2, bottom]]), board_colour)
        # viewing the row from below/above: pitch follows the row's height in the picture
        pitch = (((y + bottom) / 2) / h - 0.5) * 2 * config.max_pitch_deg * rng.uniform(0.3, 1.0)
        x = -rng.uniform(0.0, 0.5) * row_h * 0.5
        while x < w:
            product = picker.pick(rng, active)
            ph = row_h * rng.uniform(*config.product_height)
            aspect = product.image.width / product.image.height
            yaw = yaw_shelf + rng.uniform(-5, 5)
            for _ in range(int(rng.integers(config.facings[0], config.facings[1] + 1))):
                quad = perspective_quad(aspect, yaw + rng.uniform(-3, 3), pitch, roll_shelf + rng.uniform(-1.5, 1.5))
                quad = fit_quad(quad, height=ph)
                qw = float(np.ptp(quad[:, 0]))
                lift = rng.uniform(0.0, 0.02) * ph
                _paste(scene, product, quad + np.array([x, base - ph - lift]), rng, config)
                x += qw * (1.0 + rng.uniform(0.0, 0.08))
                if x >= w:
                    break
            x += rng.uniform(0.0, 0.1) * ph
        # price tags on the board edge
        tx = rng.uniform(0, row_h)
        while tx < w:
            tw, th = row_h * rng.uniform(0.12, 0.25), board * rng.uniform(0.5, 0.9)
            ty = base + (board - th) / 2
            colour = _TAG_COLOURS[int(rng.integers(len(_TAG_COLOURS)))]
            scene.fill(np.array([[tx, ty], [tx + tw, ty], [tx + tw, ty + th], [tx, ty + th]]), colour)
            tx += tw + rng.uniform(0.5, 2.0) * row_h
        y = bottom


def scatter_scene(scene: Scene, picker: ProductPicker, active: Sequence[int], rng: np.random.Generator,
                  config: SynthConfig) -> None:
    """Objects at random places, sizes and 3-D orientations; later ones may hide earlier ones."""
    w, h = scene.width, scene.height
    for i in range(int(rng.integers(config.scatter_objects[0], config.scatter_objects[1] + 1))):
        product = picker.pick(rng, active, allow_lookalike=i > 0)  # at least one annotated object
        size = rng.uniform(*config.object_size) * math.sqrt(w * h)
        quad = perspective_quad(product.image.width / product.image.height,
                                rng.uniform(-1, 1) * config.max_yaw_deg, rng.uniform(-1, 1) * config.max_pitch_deg,
                                rng.uniform(-1, 1) * config.max_roll_deg)
        quad = fit_quad(quad, area=size * size)
        box = quad_box(quad)
        cx, cy = rng.uniform(-0.05, 1.05) * w, rng.uniform(-0.05, 1.05) * h
        _paste(scene, product, quad + np.array([cx, cy]) - (box[2:] - box[:2]) / 2, rng, config)


def add_occluders(scene: Scene, rng: np.random.Generator, config: SynthConfig,
                  patch_sources: Sequence[Image.Image]) -> None:
    """Up to three occluders, each over one annotated instance, covering a random share from a random side:
    a patch of another photo or a plain card."""
    targets = [inst for inst in scene.instances if inst.label >= 0]
    for _ in range(3):
        if not targets or rng.random() >= config.occluder_prob:
            continue
        inst = targets[int(rng.integers(len(targets)))]
        x1, y1, x2, y2 = quad_box(inst.quad)
        bw, bh = x2 - x1, y2 - y1
        cover = rng.uniform(*config.occluder_cover)
        pad_w, pad_h = bw * rng.uniform(0.0, 0.3), bh * rng.uniform(0.0, 0.3)
        side = int(rng.integers(4))
        if side == 0:  # from the left
            box = (x1 - pad_w, y1 - pad_h, x1 + cover * bw, y2 + pad_h)
        elif side == 1:  # from the right
            box = (x2 - cover * bw, y1 - pad_h, x2 + pad_w, y2 + pad_h)
        elif side == 2:  # from the top
            box = (x1 - pad_w, y1 - pad_h, x2 + pad_w, y1 + cover * bh)
        else:  # from the bottom
            box = (x1 - pad_w, y2 - cover * bh, x2 + pad_w, y2 + pad_h)
        ow, oh = max(2, int(box[2] - box[0])), max(2, int(box[3] - box[1]))
        if patch_sources and rng.random() < 0.6:
            src = patch_sources[int(rng.integers(len(patch_sources)))]
            s = min(1.0, src.width / ow, src.height / oh) * rng.uniform(0.5, 1.0)  # a region of the occluder's shape
            sx, sy = rng.uniform(0, src.width - ow * s), rng.uniform(0, src.height - oh * s)
            occ = src.resize((ow, oh), Image.Resampling.BILINEAR, box=(sx, sy, sx + ow * s, sy + oh * s)).convert("RGBA")
        else:
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            occ = Image.new("RGBA", (ow, oh), (*colour, 255))
        quad = np.array([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]])
        scene.paste(occ, quad, feather_px=config.feather_px)
