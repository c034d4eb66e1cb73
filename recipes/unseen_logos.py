"""Class images of made-up logos (rendered words and marks) that no os2d model was trained on: the unseen-class
tuning set's classes.

The two tuning sets of the model card's rules measure *seen* classes: the FL27 training-brand tuning set is training
images of training brands, and the synthetic val shelves are new scenes of the 81 Grocery Store products the model
trained on. Neither tells whether a change helps on classes the model has never seen, which is what the held-out
brands and the demo shelf measure. These logos are new classes by construction (a made-up word in one of the
system's fonts, colours, an optional plate and mark), and many are wide, like the demo shelf's cups and most
brand names; ``os2d synth`` composes them onto the Grocery Store *val* photos (never a training background), so the
set is real photos with new classes (``recipes/unseen_tuning_set.sh``). Deterministic for a seed.

    python recipes/unseen_logos.py OUT_DIR [--num 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import colorsys
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"),)
CONSONANTS = "bcdfgklmnprstvxz"
VOWELS = "aeiou"


def fonts() -> list[Path]:
    """TrueType fonts of the system, and matplotlib's (installed with os2d) when present."""
    found = [p for d in FONT_DIRS if d.is_dir() for p in sorted(d.glob("*.ttf"))]
    try:
        import matplotlib

        mpl = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
        text_fonts = ("DejaVu", "cmr10", "cmss10", "cmb10", "cmtt10", "cmti10")  # not the math symbol fonts
        found += [p for p in sorted(mpl.glob("*.ttf")) if p.stem.startswith(text_fonts)]
    except ImportError:
        pass
    if not found:
        raise SystemExit("no TrueType fonts found (looked in /usr/share/fonts/truetype/dejavu and matplotlib)")
    return found


def word(rng: random.Random) -> str:
    """A pronounceable made-up brand name of 2-3 syllables."""
    syl = [rng.choice(CONSONANTS) + rng.choice(VOWELS) + (rng.choice(CONSONANTS) if rng.random() < 0.3 else "")
           for _ in range(rng.randint(2, 3))]
    w = "".join(syl)
    return rng.choice([w.upper(), w.capitalize(), w.lower()])


def colour(rng: random.Random, light: bool | None = None) -> tuple[int, int, int]:
    """A random colour; ``light`` picks a light (True) or dark (False) one."""
    v = rng.uniform(0.75, 1.0) if light else rng.uniform(0.1, 0.45) if light is False else rng.uniform(0.2, 1.0)
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.3, 1.0), v)
    return int(r * 255), int(g * 255), int(b * 255)


def mark(draw: ImageDraw.ImageDraw, rng: random.Random, box: tuple[float, float, float, float], fill) -> None:
    """A simple emblem (disc, ring, square, triangle or diamond) in ``box``."""
    x0, y0, x1, y1 = box
    kind = rng.choice(["disc", "ring", "square", "triangle", "diamond"])
    if kind == "disc":
        draw.ellipse(box, fill=fill)
    elif kind == "ring":
        draw.ellipse(box, outline=fill, width=max(3, int((x1 - x0) / 6)))
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    elif kind == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, (y0 + y1) / 2), ((x0 + x1) / 2, y1), (x0, (y0 + y1) / 2)], fill=fill)


def logo(rng: random.Random, font_files: list[Path]) -> Image.Image:
    """One made-up logo as an RGBA image cropped to its content (transparent outside the plate)."""
    tw = th = 0
    while tw < 40 or th < 30:  # a font without these glyphs renders (almost) nothing: draw again
        text = word(rng)
        font = ImageFont.truetype(str(rng.choice(font_files)), 96)
        x0, y0, x1, y1 = font.getbbox(text)
        tw, th = x1 - x0, y1 - y0
    layout = rng.choice(["text", "mark-left", "mark-above"])  # mark-above: squarer logos, like many brands
    plate = rng.choice(["none", "rect", "round", "ellipse"])
    dark_text = rng.random() < 0.5
    ink = colour(rng, light=not dark_text)
    pad = int(0.35 * th) if plate != "none" else 6
    if plate == "ellipse":
        pad = int(0.6 * th)
    side = int(1.2 * th) if layout == "mark-left" else int(min(2.0 * th, 0.8 * tw))  # the mark's size
    gap = int(0.3 * th)
    if layout == "mark-left":
        w, h = side + gap + tw + 2 * pad, th + 2 * pad
        mark_box, text_at = (pad, h / 2 - side / 2, pad + side, h / 2 + side / 2), (pad + side + gap, pad)
    elif layout == "mark-above":
        w, h = tw + 2 * pad, side + gap + th + 2 * pad
        mark_box, text_at = (w / 2 - side / 2, pad, w / 2 + side / 2, pad + side), (pad, pad + side + gap)
    else:
        w, h = tw + 2 * pad, th + 2 * pad
        mark_box, text_at = None, (pad, pad)
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    if plate != "none":
        bg = colour(rng, light=dark_text)
        if plate == "rect":
            draw.rectangle((0, 0, w - 1, h - 1), fill=bg)
        elif plate == "round":
            draw.rounded_rectangle((0, 0, w - 1, h - 1), radius=int(min(w, h) / 3), fill=bg)
        else:
            draw.ellipse((0, 0, w - 1, h - 1), fill=bg)
    if mark_box is not None:
        mark(draw, rng, mark_box, colour(rng))
    draw.text((text_at[0] - x0, text_at[1] - y0), text, font=font, fill=ink)
    if plate == "none" and layout == "text" and rng.random() < 0.5:  # an underline bar
        draw.rectangle((pad, h - pad // 2 - 4, w - pad, h - pad // 2 + 4), fill=ink)
    return img.crop(img.getbbox())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--num", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    font_files = fonts()
    args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.num):
        logo(rng, font_files).save(args.out / f"logo{i:03d}.png")
    print(f"{args.num} logos in {args.out} ({len(font_files)} fonts)")


if __name__ == "__main__":
    main()
