"""Pictures of detections with PIL only: boxes, alignment parallelograms, labels, class galleries.

Example:
    >>> from os2d.visualize import draw_detections
    >>> draw_detections(image, dets, max_detections=20).save("detections.png")
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from os2d.report import ShelfReport
from os2d.results import Detections

# Distinct, readable colours (Tableau-10-like, slightly saturated); classes beyond it get golden-ratio hues.
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (23, 190, 207), (227, 119, 194), (188, 189, 34), (140, 86, 75), (127, 127, 127),
)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def class_color(index: int) -> tuple[int, int, int]:
    """Deterministic colour of class ``index``: a fixed palette, then well-spread hues."""
    if index < len(_PALETTE):
        return _PALETTE[index]
    hue = (0.13 + (index - len(_PALETTE)) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def _text_color(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``bg`` (relative luminance)."""
    lum = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
    return (0, 0, 0) if lum > 150 else (255, 255, 255)


@lru_cache(maxsize=32)
def get_font(size: int) -> Font:
    """PIL's bundled font at ``size`` pixels (Pillow >= 10.1 with FreeType), else the small bitmap font."""
    try:
        return ImageFont.load_default(size=max(6, int(size)))
    except (TypeError, ValueError, OSError, ImportError):  # old Pillow or no FreeType
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: Font) -> tuple[int, int, int]:
    """(width, height, top offset) of ``text`` as drawn at the origin."""
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return x1 - x0, y1 - y0, y0


def default_line_width(size: tuple[int, int]) -> int:
    """Line width in pixels for an image of (w, h): ~3 px at 1 Mpx."""
    return max(1, round(math.sqrt(size[0] * size[1]) / 350))


def default_font_size(size: tuple[int, int]) -> int:
    """Label font size in pixels for an image of (w, h): ~18 px at 1 Mpx, never below 10."""
    return max(10, round(math.sqrt(size[0] * size[1]) / 56))


def _dashed_line(draw: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float],
                 color: tuple[int, int, int], width: int, dash: float, gap: float) -> None:
    """A dashed segment from ``a`` to ``b``."""
    length = math.hypot(b[0] - a[0], b[1] - a[1])
    if length < 1e-6:
        return
    ux, uy = (b[0] - a[0]) / length, (b[1] - a[1]) / length
    t = 0.0
    while t < length:
        e = min(t + dash, length)
        draw.line([(a[0] + ux * t, a[1] + uy * t), (a[0] + ux * e, a[1] + uy * e)], fill=color, width=width)
        t = e + gap


def _label_position(box: Sequence[float], tw: int, th: int, img_w: int, img_h: int) -> tuple[int, int]:
    """Top-left of a (tw, th) label: above the box if it fits, else inside its top; always inside the image."""
    x1, y1, _, y2 = box
    x = int(round(x1))
    y = int(round(y1)) - th
    if y < 0:  # no room above: put it inside the box, at its top
        y = int(round(y1))
    x = min(max(0, x), max(0, img_w - tw))
    y = min(max(0, y), max(0, img_h - th))
    return x, y


def draw_detections(image: Image.Image, dets: Detections, *, max_detections: int | None = None,
                    score_threshold: float | None = None, show_parallelograms: bool = True,
                    line_width: int | None = None, font_size: int | None = None) -> Image.Image:
    """Draw detections on an RGB copy of ``image``.

    Each class gets one colour; each detection its box, the parallelogram of the aligned class image (the
    pose estimate, dashed; it coincides with the box for the identity transform) and a label ``"name 0.87"`` on a filled background kept inside the image.
    The highest-scoring detection is drawn last, on top.

    Args:
        image: the image the detections were computed on (boxes in its pixels).
        dets: detections, any order.
        max_detections: draw only the ``max_detections`` highest-scoring ones.
        score_threshold: draw only detections with score strictly above it.
        show_parallelograms: draw the aligned class grid's parallelogram.
        line_width: box line width in pixels (default: scales with the image size).
        font_size: label font size in pixels (default: scales with the image size).
    """
    out = image.convert("RGB") if image.mode != "RGB" else image.copy()
    n = len(dets)
    if n == 0:
        return out
    w, h = out.size
    lw = int(line_width) if line_width is not None else default_line_width(out.size)
    lw = max(1, lw)
    font = get_font(font_size if font_size is not None else default_font_size(out.size))

    scores = dets.scores.detach().float().cpu().tolist()
    order = sorted(range(n), key=lambda i: -scores[i])
    if score_threshold is not None:
        order = [i for i in order if scores[i] > score_threshold]
    if max_detections is not None:
        order = order[: max(0, int(max_detections))]
    order = order[::-1]  # lowest first, highest on top

    boxes = dets.boxes_xyxy.detach().float().cpu().tolist()
    corners = dets.corners_xy.detach().float().cpu().tolist() if dets.corners_xy.numel() else None
    labels = dets.labels.detach().cpu().tolist()
    names = list(dets.class_names)

    draw = ImageDraw.Draw(out)
    pad = max(1, lw)
    for i in order:
        color = class_color(labels[i])
        x1, y1, x2, y2 = boxes[i]
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            continue
        if show_parallelograms and corners is not None:
            tl, tr, bl, br = corners[i]
            pts = [tuple(tl), tuple(tr), tuple(br), tuple(bl)]
            if all(math.isfinite(c) for p in pts for c in p):
                pw = max(1, lw - 1)
                for a, b in zip(pts, pts[1:] + pts[:1], strict=True):
                    _dashed_line(draw, a, b, color, pw, dash=4 * pw + 2, gap=3 * pw + 1)
        draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=color, width=lw)

        name = names[labels[i]] if 0 <= labels[i] < len(names) else str(labels[i])
        text = f"{name} {scores[i]:.2f}"
        tw, th, top = _text_size(draw, text, font)
        bw, bh = tw + 2 * pad, th + 2 * pad
        lx, ly = _label_position((x1, y1, x2, y2), bw, bh, w, h)
        draw.rectangle([lx, ly, lx + bw - 1, ly + bh - 1], fill=color)
        draw.text((lx + pad, ly + pad - top), text, fill=_text_color(color), font=font)
    return out


def draw_shelf_report(image: Image.Image, report: ShelfReport, class_names: Sequence[str] = (), *,
                      line_width: int | None = None, font_size: int | None = None) -> Image.Image:
    """Draw a shelf report on an RGB copy of ``image``: each row's band tinted, with ``row N · k facings`` at its
    left, and each facing's box in its class colour with ``row.position label``.

    ``class_names`` gives the colours (a class's index in it, as in :func:`draw_detections`); classes not in it
    follow in order of appearance.
    """
    out = image.convert("RGB") if image.mode != "RGB" else image.copy()
    w, h = out.size
    lw = max(1, int(line_width) if line_width is not None else default_line_width(out.size))
    font = get_font(font_size if font_size is not None else default_font_size(out.size))
    names = list(class_names)
    for f in report.facings:
        if f.label not in names:
            names.append(f.label)

    tint = Image.new("RGBA", out.size, (0, 0, 0, 0))
    tdraw = ImageDraw.Draw(tint)
    for r, (top, bottom) in enumerate(report.bands):  # alternate tints so that neighbouring rows stay apart
        tdraw.rectangle([0, top, w - 1, bottom], fill=(255, 255, 0, 40) if r % 2 == 0 else (0, 200, 255, 40))
    out = Image.alpha_composite(out.convert("RGBA"), tint).convert("RGB")
    draw = ImageDraw.Draw(out)
    pad = max(1, lw)
    for f in report.facings:
        color = class_color(names.index(f.label))
        x1, y1, x2, y2 = f.box_xyxy
        draw.rectangle([x1, y1, x2, y2], outline=color, width=lw)
        text = f"{f.row}.{f.position} {f.label}"
        tw, th, top = _text_size(draw, text, font)
        lx, ly = _label_position((x1, y1, x2, y2), tw + 2 * pad, th + 2 * pad, w, h)
        draw.rectangle([lx, ly, lx + tw + 2 * pad - 1, ly + th + 2 * pad - 1], fill=color)
        draw.text((lx + pad, ly + pad - top), text, fill=_text_color(color), font=font)
    counts = [0] * len(report.bands)
    for f in report.facings:
        counts[f.row - 1] += 1
    for r, (top, _bottom) in enumerate(report.bands):
        text = f"row {r + 1} · {counts[r]} facings"
        tw, th, t0 = _text_size(draw, text, font)
        y = int(min(max(0, top), max(0, h - th - 2 * pad)))
        draw.rectangle([0, y, tw + 2 * pad, y + th + 2 * pad], fill=(20, 20, 20))
        draw.text((pad, y + pad - t0), text, fill=(255, 255, 255), font=font)
    return out


def _fit(img: Image.Image, size: int) -> Image.Image:
    """RGB copy resized (keeping aspect) to fit in a size x size square."""
    img = img.convert("RGB")
    s = size / max(img.size)
    return img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.LANCZOS)


def draw_gallery(images: Sequence[tuple[str, Image.Image]], thumb: int = 128, *, pad: int = 8,
                 title: str | None = None, background: tuple[int, int, int] = (245, 245, 245)) -> Image.Image:
    """A horizontal strip of class thumbnails (each fit in ``thumb`` x ``thumb``) with their names below.

    Thumbnails get a thin frame in their class colour (same index order as :func:`draw_detections` when the
    list is in gallery order). ``title``: an optional line of text above the thumbnails.
    """
    thumb = max(8, int(thumb))
    font = get_font(max(10, thumb // 9))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = _text_size(probe, "Hg", font)[1]
    cell_h = thumb + pad + text_h
    title_font = get_font(max(10, thumb // 10))
    title_h = _text_size(probe, "Hg", title_font)[1] + pad if title else 0
    title_w = _text_size(probe, title, title_font)[0] + 2 * pad if title else 0
    n = len(images)
    if n == 0:
        strip = Image.new("RGB", (max(thumb + 2 * pad, title_w), cell_h + 2 * pad + title_h), background)
        if title:
            _, _, top = _text_size(probe, title, title_font)
            ImageDraw.Draw(strip).text((pad, pad - top), title, fill=(60, 60, 60), font=title_font)
        return strip
    # Widen a cell when a name is longer than the thumbnail.
    labels = []
    for name, _ in images:
        text = str(name)
        while len(text) > 1 and _text_size(probe, text, font)[0] > 2 * thumb:
            text = text[:-2] + "…"
        labels.append(text)
    widths = [max(thumb, _text_size(probe, t, font)[0]) for t in labels]
    strip_w = max(sum(widths) + pad * (n + 1), title_w)
    strip = Image.new("RGB", (strip_w, cell_h + 2 * pad + title_h), background)
    draw = ImageDraw.Draw(strip)
    if title:
        _, _, top = _text_size(draw, title, title_font)
        draw.text((pad, pad - top), title, fill=(60, 60, 60), font=title_font)
    x = pad
    y0 = pad + title_h
    for k, ((_, img), text, cw) in enumerate(zip(images, labels, widths, strict=True)):
        t = _fit(img, thumb)
        tx = x + (cw - t.width) // 2
        ty = y0 + (thumb - t.height) // 2
        strip.paste(t, (tx, ty))
        draw.rectangle([tx - 2, ty - 2, tx + t.width + 1, ty + t.height + 1], outline=class_color(k), width=2)
        tw, _, top = _text_size(draw, text, font)
        draw.text((x + (cw - tw) // 2, y0 + thumb + pad // 2 - top), text, fill=(20, 20, 20), font=font)
        x += cw + pad
    return strip


def side_by_side(*images: Image.Image, pad: int = 8, vertical: bool = False,
                 background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Concatenate images left to right (or top to bottom with ``vertical=True``), ``pad`` pixels apart.

    Images keep their sizes; they are top-aligned (left-aligned when vertical). A single list argument works.
    """
    if len(images) == 1 and isinstance(images[0], (list, tuple)):
        images = tuple(images[0])
    if not images:
        raise ValueError("side_by_side needs at least one image")
    ims = [im.convert("RGB") for im in images]
    pad = max(0, int(pad))
    if vertical:
        size = (max(im.width for im in ims), sum(im.height for im in ims) + pad * (len(ims) - 1))
    else:
        size = (sum(im.width for im in ims) + pad * (len(ims) - 1), max(im.height for im in ims))
    out = Image.new("RGB", size, background)
    offset = 0
    for im in ims:
        out.paste(im, (0, offset) if vertical else (offset, 0))
        offset += (im.height if vertical else im.width) + pad
    return out


__all__ = ["class_color", "default_font_size", "default_line_width", "draw_detections", "draw_gallery", "draw_shelf_report",
           "get_font", "side_by_side"]
