"""The demo's input, drawn procedurally: a shop shelf with planted products and distractors, and the class images.

Nothing is downloaded or read from disk: the products are drawn with PIL (coloured packages with bold shapes,
stripes and large text), planted on shelf boards at slightly different scales and brightness, with distractor
products that are not in the gallery.

Example:
    >>> scene = make_demo_scene(seed=0)
    >>> scene.image.size, [name for name, _ in scene.boxes]
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

Box = tuple[float, float, float, float]

SCENE_SIZE = (1280, 800)
# Planted instances have sqrt(w*h) ~ BASE_OBJECT_SIZE px in the scene (times a 0.8-1.2 jitter).
BASE_OBJECT_SIZE = 190.0
INSTANCES_PER_CLASS = (3, 4, 3)  # per class, in CLASS_NAMES order


@dataclass
class DemoScene:
    """A synthetic shelf image, the class images to look for and the ground truth of the planted instances.

    Attributes:
        image: RGB scene (~1280 x 800).
        class_images: name -> RGB class image (the "one shot" of each class).
        boxes: (class name, (x1, y1, x2, y2)) of every planted class instance, scene pixels.
        distractor_boxes: boxes of the products that are not in ``class_images``.
        seed: the seed that produced the scene.
    """

    image: Image.Image
    class_images: dict[str, Image.Image]
    boxes: list[tuple[str, Box]]
    distractor_boxes: list[Box] = field(default_factory=list)
    seed: int = 0


# ---------------------------------------------------------------------------------------------------------
# Drawing primitives


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError, ImportError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def _centered_text(draw: ImageDraw.ImageDraw, cx: float, cy: float, text: str, size: int, fill, *,
                   stroke: int = 0, stroke_fill=None, max_width: float | None = None) -> None:
    """Text centred at (cx, cy); shrunk to ``max_width`` if needed; ``stroke`` thickens it ("bold")."""
    while True:
        font = _font(size)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
        if max_width is None or x1 - x0 <= max_width or size <= 8:
            break
        size = int(size * 0.9)
    draw.text((cx - (x0 + x1) / 2, cy - (y0 + y1) / 2), text, font=font, fill=fill,
              stroke_width=stroke, stroke_fill=stroke_fill if stroke_fill is not None else fill)


def _star(cx: float, cy: float, r_out: float, r_in: float, n: int = 5, rot: float = -90.0) -> list[tuple]:
    pts = []
    for k in range(2 * n):
        r = r_out if k % 2 == 0 else r_in
        a = math.radians(rot + 180.0 * k / n)
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def _vertical_gradient(w: int, h: int, top, bottom) -> Image.Image:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    arr = (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32)
    return Image.fromarray(np.broadcast_to(arr, (h, w, 3)).round().astype(np.uint8), "RGB")


def _shade(c, f: float) -> tuple[int, int, int]:
    """Darken (f < 1) or lighten (f > 1) a colour."""
    if f <= 1:
        return tuple(int(v * f) for v in c)
    return tuple(int(v + (255 - v) * (f - 1)) for v in c)


def _small_print(draw: ImageDraw.ImageDraw, x0: float, y0: float, x1: float, lines: list[str], size: int,
                 fill) -> None:
    font = _font(size)
    y = y0
    for line in lines:
        draw.text((x0, y), line, font=font, fill=fill)
        y += size * 1.25
        if x1 < x0:
            break


def _barcode(draw: ImageDraw.ImageDraw, x: float, y: float, w: float, h: float, rng: random.Random) -> None:
    draw.rectangle([x, y, x + w, y + h], fill=(250, 250, 250))
    cx = x + 3
    while cx < x + w - 4:
        bw = rng.choice((1, 1, 2, 3))
        draw.rectangle([cx, y + 3, cx + bw - 1, y + h - 3], fill=(15, 15, 15))
        cx += bw + rng.choice((1, 2, 2, 3))


# ---------------------------------------------------------------------------------------------------------
# Products (drawn at 2x their class-image size, then downsampled: smooth edges)


def _cereal_box(rng: random.Random) -> Image.Image:
    w, h = 360, 480
    img = _vertical_gradient(w, h, (222, 40, 40), (160, 18, 30))
    d = ImageDraw.Draw(img)
    # sun burst behind a bowl
    for k in range(16):
        a0 = k * 22.5
        d.pieslice([w / 2 - 260, 150 - 260, w / 2 + 260, 150 + 260], a0, a0 + 11.25, fill=(235, 80, 50))
    d.ellipse([w / 2 - 120, 40, w / 2 + 120, 280], fill=(255, 204, 0), outline=(255, 140, 0), width=14)
    d.ellipse([w / 2 - 70, 90, w / 2 + 70, 230], fill=(255, 240, 150))
    # bowl with flakes
    d.chord([60, 190, 300, 330], 0, 180, fill=(30, 90, 200), outline=(10, 40, 120), width=6)
    for _ in range(14):
        fx, fy = rng.uniform(90, 270), rng.uniform(225, 262)
        d.ellipse([fx - 14, fy - 9, fx + 14, fy + 9], fill=(230, 160, 40), outline=(160, 90, 10), width=3)
    # name band
    d.rectangle([0, 318, w, 412], fill=(255, 255, 255))
    d.rectangle([0, 318, w, 326], fill=(20, 130, 60))
    d.rectangle([0, 404, w, 412], fill=(20, 130, 60))
    _centered_text(d, w / 2, 366, "CRUNCH", 78, (200, 20, 30), stroke=3, max_width=w - 30)
    # green diagonal stripes at the bottom
    for x in range(-h, w, 40):
        d.polygon([(x, h), (x + 20, h), (x + 20 + 68, 412), (x + 68, 412)], fill=(20, 130, 60))
    d.rectangle([0, 0, w - 1, h - 1], outline=(90, 0, 10), width=6)
    _centered_text(d, w / 2, 30, "WHOLE GRAIN", 26, (255, 255, 255), stroke=1)
    return img


def _tea_box(rng: random.Random) -> Image.Image:
    w, h = 500, 360
    img = Image.new("RGB", (w, h), (18, 92, 60))
    d = ImageDraw.Draw(img)
    # cream vertical stripes on the left third
    for k, x in enumerate(range(0, 170, 28)):
        d.rectangle([x, 0, x + 13, h], fill=(240, 230, 190) if k % 2 == 0 else (205, 170, 70))
    d.rectangle([170, 0, 180, h], fill=(205, 170, 70))
    # gold leaf triangles
    for k in range(3):
        cx = 255 + 95 * k
        d.polygon([(cx, 40), (cx - 36, 120), (cx + 36, 120)], fill=(225, 185, 60), outline=(120, 90, 10))
        d.line([(cx, 50), (cx, 118)], fill=(120, 90, 10), width=4)
    _centered_text(d, 345, 200, "TEA", 120, (245, 215, 90), stroke=4, stroke_fill=(90, 60, 0))
    d.rectangle([190, 272, 490, 300], fill=(240, 230, 190))
    _centered_text(d, 340, 286, "GREEN  LEAF  No. 7", 22, (18, 92, 60))
    # teacup circle
    d.ellipse([40, 230, 140, 330], fill=(250, 250, 245), outline=(120, 90, 10), width=6)
    d.ellipse([70, 260, 110, 300], fill=(140, 170, 60))
    _small_print(d, 200, 312, 480, ["20 bags  -  40 g"], 20, (240, 230, 190))
    d.rectangle([0, 0, w - 1, h - 1], outline=(5, 40, 25), width=6)
    return img


def _cookie_box(rng: random.Random) -> Image.Image:
    w, h = 420, 420
    img = Image.new("RGB", (w, h), (30, 70, 170))
    d = ImageDraw.Draw(img)
    # white polka dots
    for yy in range(20, h, 52):
        for xx in range(20 + (26 if (yy // 52) % 2 else 0), w, 52):
            d.ellipse([xx - 8, yy - 8, xx + 8, yy + 8], fill=(190, 210, 250))
    # three cookies with chips
    for cx, cy, r in ((120, 150, 82), (290, 120, 66), (300, 245, 58)):
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(205, 140, 60), outline=(120, 70, 20), width=7)
        for _ in range(9):
            a, rr = rng.uniform(0, 2 * math.pi), rng.uniform(0, r * 0.7)
            px, py = cx + rr * math.cos(a), cy + rr * math.sin(a)
            d.ellipse([px - 8, py - 6, px + 8, py + 6], fill=(70, 35, 10))
    d.rounded_rectangle([20, 300, w - 20, 390], radius=24, fill=(255, 210, 0), outline=(160, 20, 20), width=6)
    _centered_text(d, w / 2, 345, "COOKIES", 70, (160, 20, 20), stroke=3, max_width=w - 70)
    _star_pts = _star(60, 50, 40, 18)
    d.polygon(_star_pts, fill=(255, 210, 0), outline=(160, 20, 20))
    d.rectangle([0, 0, w - 1, h - 1], outline=(10, 30, 90), width=6)
    return img


CLASS_DRAWERS: dict[str, Callable[[random.Random], Image.Image]] = {
    "cereal": _cereal_box,
    "tea": _tea_box,
    "cookies": _cookie_box,
}
CLASS_NAMES = tuple(CLASS_DRAWERS)

_DISTRACTOR_WORDS = ("MILK", "RICE", "SOAP", "PASTA", "OATS", "JUICE", "SALT", "BEANS", "FLOUR", "COCOA")
_DISTRACTOR_COLORS = ((240, 240, 235), (250, 200, 40), (120, 40, 140), (0, 150, 170), (240, 120, 20),
                      (80, 80, 90), (170, 210, 90), (230, 120, 160), (110, 70, 40), (200, 225, 245))


def _distractor(rng: random.Random) -> Image.Image:
    """A random package: background, one motif (stripes, rings, checks, wave, triangles), a word, small print."""
    aspect = rng.choice((0.55, 0.7, 0.75, 1.0, 1.35))  # width / height
    area = 400.0 * 400.0
    w, h = int(math.sqrt(area * aspect)), int(math.sqrt(area / aspect))
    bg, fg = rng.sample(_DISTRACTOR_COLORS, 2)
    accent = tuple(rng.randrange(30, 230) for _ in range(3))
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    motif = rng.choice(("hstripes", "rings", "checks", "wave", "triangles"))
    if motif == "hstripes":
        step = rng.randrange(30, 60)
        for y in range(0, h, step):
            d.rectangle([0, y, w, y + step // 2], fill=fg)
    elif motif == "rings":
        cx, cy = w / 2, h * 0.38
        for k, r in enumerate(range(int(min(w, h) * 0.45), 10, -22)):
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg if k % 2 == 0 else accent)
    elif motif == "checks":
        s = rng.randrange(28, 48)
        for yy in range(0, int(h * 0.55), s):
            for xx in range(0, w, s):
                if (xx // s + yy // s) % 2 == 0:
                    d.rectangle([xx, yy, xx + s - 1, yy + s - 1], fill=fg)
    elif motif == "wave":
        pts = [(x, h * 0.45 + 40 * math.sin(x / 35.0)) for x in range(0, w + 10, 10)]
        d.polygon(pts + [(w, h), (0, h)], fill=fg)
    else:
        for k in range(4):
            x = w * (0.15 + 0.23 * k)
            d.polygon([(x, h * 0.1), (x - 40, h * 0.4), (x + 40, h * 0.4)], fill=fg if k % 2 else accent)
    word = rng.choice(_DISTRACTOR_WORDS)
    band_y = h * rng.uniform(0.55, 0.7)
    d.rectangle([0, band_y - 45, w, band_y + 45], fill=accent)
    text_fill = (255, 255, 255) if sum(accent) < 380 else (20, 20, 20)
    _centered_text(d, w / 2, band_y, word, 80, text_fill, stroke=2, max_width=w - 30)
    _small_print(d, 16, band_y + 60, w - 16, ["NET WT 500 g", "best before: see top"], 20,
                 (20, 20, 20) if sum(bg) > 380 else (240, 240, 240))
    if rng.random() < 0.6:
        _barcode(d, w - 130, h - 70, 110, 55, rng)
    d.rectangle([0, 0, w - 1, h - 1], outline=_shade(bg, 0.5), width=6)
    return img


def _half(img: Image.Image) -> Image.Image:
    return img.resize((img.width // 2, img.height // 2), Image.LANCZOS)


# ---------------------------------------------------------------------------------------------------------
# Scene


def _wall(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """Light grey back wall with a soft vertical gradient and fine noise."""
    img = np.asarray(_vertical_gradient(w, h, (206, 204, 198), (176, 174, 170)), np.float32)
    img = img + rng.normal(0.0, 3.0, (h, w, 1)).astype(np.float32)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8), "RGB")


def _board(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A wooden shelf board: grain along x, a light front edge and a dark lower lip."""
    x = np.arange(w, dtype=np.float32)[None, :]
    y = np.arange(h, dtype=np.float32)[:, None]
    phase = rng.uniform(0, 2 * np.pi, 3)
    grain = (np.sin(x / 23.0 + 3.0 * np.sin(y / 5.0 + phase[0]) + phase[1]) * 9
             + np.sin(x / 7.0 + phase[2]) * 4)
    base = np.array([150, 104, 62], np.float32)
    arr = base[None, None, :] + grain[..., None] + rng.normal(0, 3, (h, w, 1))
    arr[: max(2, h // 6)] += 35  # lit top edge
    arr[-max(2, h // 6):] -= 40  # shadowed lip
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def _vary(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Per-instance photometric change: brightness/contrast, a soft light gradient, mild noise."""
    arr = np.asarray(img, np.float32)
    h, w = arr.shape[:2]
    gain = rng.uniform(0.85, 1.12)
    offset = rng.uniform(-10, 10)
    grad = np.linspace(1.0 + rng.uniform(-0.08, 0.08), 1.0 + rng.uniform(-0.08, 0.08), w, dtype=np.float32)
    arr = (arr * gain + offset) * grad[None, :, None]
    arr += rng.normal(0.0, 4.0, arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def make_class_images() -> dict[str, Image.Image]:
    """The class images of the demo (the same for every seed): name -> RGB image of ~180-250 px."""
    return {name: _half(draw(random.Random(1000 + k))) for k, (name, draw) in enumerate(CLASS_DRAWERS.items())}


def make_demo_scene(seed: int = 0) -> DemoScene:
    """A shelf with 3 rows of products: 3-4 instances of each demo class at 0.8-1.2x scale, plus distractors.

    Deterministic for a seed. Class images are the same for every seed; the layout, instance scales,
    lighting, noise and distractor products change with it.
    """
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    W, H = SCENE_SIZE
    class_images = make_class_images()

    # Hi-res masters (2x) for sharper downscaling into the scene.
    masters = {name: draw(random.Random(1000 + k)) for k, (name, draw) in enumerate(CLASS_DRAWERS.items())}
    items: list[tuple[str | None, Image.Image]] = []
    for name, n in zip(CLASS_NAMES, INSTANCES_PER_CLASS, strict=True):
        items += [(name, masters[name])] * n
    n_distractors = 8
    items += [(None, _distractor(rng)) for _ in range(n_distractors)]
    rng.shuffle(items)

    scene = _wall(W, H, nrng)
    rows = 3
    board_h = 22
    margin_top = 12
    row_h = (H - margin_top) // rows
    # Assign items to rows greedily by width so that every row fits.
    sized = []
    for name, master in items:
        s = rng.uniform(0.8, 1.2) * BASE_OBJECT_SIZE / math.sqrt(master.width * master.height)
        w, h = round(master.width * s), round(master.height * s)
        max_h = row_h - board_h - 8
        if h > max_h:  # keep it on its shelf
            w, h = round(w * max_h / h), max_h
        sized.append((name, master, w, h))

    boxes: list[tuple[str, Box]] = []
    distractor_boxes: list[Box] = []
    row_items: list[list] = [[] for _ in range(rows)]
    widths = [0] * rows
    for it in sized:
        r = min(range(rows), key=lambda k: widths[k])
        row_items[r].append(it)
        widths[r] += it[2]
    for r in range(rows):
        floor = margin_top + (r + 1) * row_h - board_h  # top of this row's board
        free = W - widths[r]
        n = len(row_items[r])
        gap = max(4.0, free / (n + 1))
        if widths[r] + gap * (n + 1) > W:  # too crowded: squeeze gaps (never overlap)
            gap = max(0.0, (W - widths[r]) / (n + 1))
        x = gap + rng.uniform(-0.3, 0.3) * gap
        for name, master, w, h in row_items[r]:
            x = min(max(0.0, x), W - w)
            x0, y0 = int(round(x)), floor - h
            inst = _vary(master.resize((w, h), Image.LANCZOS), nrng)
            # soft contact shadow on the wall behind the package
            shadow = Image.new("L", (w + 16, h + 8), 0)
            ImageDraw.Draw(shadow).rectangle([8, 4, w + 8, h + 8], fill=90)
            shadow = shadow.filter(ImageFilter.GaussianBlur(6))
            scene.paste((40, 40, 40), (x0 + 2, y0 - 2), shadow)
            scene.paste(inst, (x0, y0))
            box = (float(x0), float(y0), float(x0 + w), float(y0 + h))
            if name is None:
                distractor_boxes.append(box)
            else:
                boxes.append((name, box))
            x += w + gap * rng.uniform(0.7, 1.3)
        scene.paste(_board(W, board_h, nrng), (0, floor))
    # A floor strip below the bottom board (if any space is left) and a very light global blur (camera).
    scene = scene.filter(ImageFilter.GaussianBlur(0.6))
    boxes.sort(key=lambda b: (CLASS_NAMES.index(b[0]), b[1][1], b[1][0]))
    return DemoScene(image=scene, class_images=class_images, boxes=boxes, distractor_boxes=distractor_boxes,
                     seed=seed)


__all__ = ["BASE_OBJECT_SIZE", "CLASS_NAMES", "INSTANCES_PER_CLASS", "SCENE_SIZE", "Box", "DemoScene",
           "make_class_images", "make_demo_scene"]
