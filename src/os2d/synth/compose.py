"""Compositing: objects warped by homographies onto a background, with exact boxes and occlusion bookkeeping.

Every paste is a layer with an id; an ``owner`` map keeps, per pixel, the id of the top layer that is at least
half opaque there. An instance's visible share is its owned pixels over its full area (the area of its quad
times its opaque fraction), so both occlusion by later layers and truncation by the image border count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from os2d.synth.appearance import add_noise, blur, light_ramp
from os2d.synth.geometry import clip_box, homography, quad_area, quad_box, rect_corners

_PREMULTIPLIED = "RGBa"


@dataclass
class Instance:
    """A pasted object. ``label`` indexes the classes; -1 = not annotated (look-alike or occluder)."""

    layer: int
    label: int
    quad: np.ndarray  # (4, 2) image pixels
    full_area: float  # pixels the object would cover if nothing hid it and the image were unbounded


@dataclass
class Annotation:
    """A ground-truth box of the generated image (pixels, clipped to the image)."""

    label: int
    box_xyxy: tuple[float, float, float, float]
    difficult: bool
    occluded: float  # share of the object hidden by other layers or cut by the image border


class Scene:
    """A canvas being composed (float32 RGB 0-255) and the bookkeeping of what is where."""

    def __init__(self, background: Image.Image) -> None:
        self.canvas = np.asarray(background.convert("RGB"), dtype=np.float32).copy()  # (H, W, 3)
        self.height, self.width = self.canvas.shape[:2]
        self.owner = np.full((self.height, self.width), -1, dtype=np.int32)
        self.instances: list[Instance] = []

    def paste(self, source: Image.Image, quad: np.ndarray, *, label: int = -1, opaque_fraction: float = 1.0,
              blur_px: float = 0.0, feather_px: float = 1.0) -> Instance | None:
        """Warp ``source`` (RGBA, its full extent) onto ``quad`` (4, 2) image pixels (TL, TR, BR, BL of the
        source) and composite it over the canvas. Returns the new instance, or None when it misses the image."""
        quad = np.asarray(quad, dtype=np.float64)
        box = quad_box(quad)
        x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
        x1, y1 = min(self.width, math.ceil(box[2])), min(self.height, math.ceil(box[3]))
        inst = Instance(len(self.instances), label, quad, quad_area(quad) * opaque_fraction)
        self.instances.append(inst)
        if x1 - x0 < 1 or y1 - y0 < 1 or inst.full_area <= 0:
            return None
        src = source.convert("RGBA")
        shrink = math.sqrt(quad_area(quad) / (src.width * src.height))
        if shrink < 0.75:  # antialiased shrink first: the perspective warp itself does not filter
            size = (max(2, round(src.width * shrink * 1.3)), max(2, round(src.height * shrink * 1.3)))
            src = src.resize(size, Image.Resampling.LANCZOS)
        # PIL maps output -> input; both in continuous pixel coordinates (identity = no shift)
        h = homography(quad - np.array([x0, y0]), rect_corners(src.width, src.height))
        h = h / h[2, 2]
        coeffs = tuple(float(v) for v in h.reshape(-1)[:8])
        patch = src.convert(_PREMULTIPLIED).transform((x1 - x0, y1 - y0), Image.Transform.PERSPECTIVE, coeffs,
                                                      Image.Resampling.BILINEAR)
        if blur_px > 0:
            patch = blur(patch, blur_px)
        rgba = patch.convert("RGBA")  # unpremultiplied colour + alpha
        arr = np.asarray(rgba, dtype=np.float32)
        alpha = arr[..., 3] / 255.0
        if feather_px > 0:  # soften the edge inwards only: colour stays defined where alpha > 0
            soft = rgba.getchannel("A").filter(ImageFilter.GaussianBlur(feather_px))
            alpha = np.minimum(alpha, np.asarray(soft, np.float32) / 255.0)
        region = self.canvas[y0:y1, x0:x1]
        region += (arr[..., :3] - region) * alpha[..., None]
        self.owner[y0:y1, x0:x1][alpha >= 0.5] = inst.layer
        return inst

    def fill(self, quad: np.ndarray, colour: tuple[int, int, int]) -> None:
        """Paint an opaque solid quad (shelf boards, price tags) as an unannotated layer."""
        w = max(2, int(np.ptp(quad[:, 0])) + 2)
        h = max(2, int(np.ptp(quad[:, 1])) + 2)
        self.paste(Image.new("RGBA", (w, h), (*colour, 255)), quad, feather_px=0.5)

    def annotations(self, *, difficult_occlusion: float, min_box_px: float) -> list[Annotation]:
        """Boxes of the annotated instances that are at least partly visible, in pasting order.

        The box is the instance's quad box clipped to the image (the extent of the whole object, including
        parts hidden by occluders), rounded to 1/100 px so that the CSV holds it exactly.
        """
        visible = np.bincount(self.owner.reshape(-1) + 1, minlength=len(self.instances) + 1)[1:]
        out = []
        for inst in self.instances:
            if inst.label < 0 or visible[inst.layer] == 0:
                continue
            box = np.round(clip_box(quad_box(inst.quad), self.width, self.height), 2)
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue
            occluded = float(np.clip(1.0 - visible[inst.layer] / inst.full_area, 0.0, 1.0))
            small = bool(min(box[2] - box[0], box[3] - box[1]) < min_box_px)
            out.append(Annotation(inst.label, tuple(float(v) for v in box), occluded > difficult_occlusion or small,
                                  occluded))
        return out

    def render(self, rng: np.random.Generator, *, lighting: float, noise_std: float) -> Image.Image:
        """Global lighting ramp and sensor noise, then 8-bit RGB."""
        canvas = light_ramp(self.canvas, rng, lighting) if lighting > 0 else self.canvas
        canvas = add_noise(canvas, rng, rng.uniform(0.0, noise_std)) if noise_std > 0 else canvas
        return Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))
