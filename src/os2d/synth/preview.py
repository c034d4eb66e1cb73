"""A preview picture of generated samples: a grid of thumbnails with their ground-truth boxes."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

from os2d.synth.compose import Annotation
from os2d.visualize import class_color, get_font

DIFFICULT_COLOUR = (215, 215, 215)  # light grey, thin: ignored in evaluation


def draw_annotations(image: Image.Image, annotations: Sequence[Annotation], names: Sequence[str], *,
                     scale: float = 1.0, line_width: int = 2, font_size: int = 11) -> Image.Image:
    """Boxes on an RGB copy of ``image`` (resized by ``scale``): class colours, difficult ones thin light grey."""
    out = image.convert("RGB")
    if scale != 1.0:
        out = out.resize((max(1, round(out.width * scale)), max(1, round(out.height * scale))),
                         Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(out)
    font = get_font(font_size)
    for a in sorted(annotations, key=lambda a: not a.difficult):  # clean boxes on top
        x1, y1, x2, y2 = (v * scale for v in a.box_xyxy)
        colour = DIFFICULT_COLOUR if a.difficult else class_color(a.label)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=1 if a.difficult else line_width)
        if not a.difficult:
            text = names[a.label][:18]
            tx, ty = x1 + 2, max(0.0, y1 - font_size - 2)
            box = draw.textbbox((tx, ty), text, font=font)
            draw.rectangle(box, fill=colour)
            draw.text((tx, ty), text, fill=(255, 255, 255), font=font)
    return out


def preview_grid(samples: Sequence[tuple[Image.Image, Sequence[Annotation]]], names: Sequence[str], *,
                 thumb: int = 480, columns: int = 3, pad: int = 6) -> Image.Image:
    """Thumbnails (longer side ``thumb``) of the samples with boxes, ``columns`` per row."""
    if not samples:
        raise ValueError("no samples to preview")
    tiles = [draw_annotations(img, ann, names, scale=thumb / max(img.size)) for img, ann in samples]
    cols = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    grid = Image.new("RGB", (cols * (thumb + pad) + pad, rows * (thumb + pad) + pad), (30, 30, 30))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        x = pad + c * (thumb + pad) + (thumb - tile.width) // 2
        y = pad + r * (thumb + pad) + (thumb - tile.height) // 2
        grid.paste(tile, (x, y))
    return grid
