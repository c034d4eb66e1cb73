"""Drawing of detections, class galleries and side-by-side pictures (PIL only, no model needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from os2d.results import Detections
from os2d.visualize import class_color, draw_detections, draw_gallery, side_by_side


def _dets(boxes, scores, labels, names=("a", "b"), size=(320, 240)) -> Detections:
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    corners = torch.stack([boxes_t[:, [0, 1]], boxes_t[:, [2, 1]], boxes_t[:, [0, 3]], boxes_t[:, [2, 3]]], dim=1)
    return Detections(boxes_t, torch.tensor(scores, dtype=torch.float32), torch.tensor(labels, dtype=torch.long),
                      corners, list(names), size)


def _gray(size=(320, 240), mode="RGB") -> Image.Image:
    return Image.new(mode, size, 128 if mode == "L" else (128, 128, 128))


def test_draw_detections_returns_rgb_copy_of_same_size():
    img = _gray(mode="L")
    dets = _dets([[40, 50, 140, 150]], [0.87], [0])
    out = draw_detections(img, dets)
    assert out.mode == "RGB" and out.size == img.size
    assert out is not img
    assert np.all(np.asarray(img) == 128)  # input untouched


def test_pixels_change_on_box_edges_only():
    img = _gray()
    dets = _dets([[60, 80, 200, 200]], [0.5], [0])
    arr = np.asarray(draw_detections(img, dets, show_parallelograms=False, line_width=3)).astype(int)
    base = np.asarray(img).astype(int)
    changed = np.abs(arr - base).sum(axis=2) > 0
    assert changed[140, 60:63].any()  # left edge
    assert changed[140, 198:201].any()  # right edge
    assert changed[198:201, 130].any()  # bottom edge
    assert not changed[140, 130]  # box interior
    assert not changed[230, 10] and not changed[10, 300]  # far away
    assert tuple(arr[140, 61]) == class_color(0)


def test_classes_get_distinct_colors_and_highest_score_on_top():
    img = _gray()
    # Same box, two classes: the higher score must be drawn last.
    dets = _dets([[50, 60, 250, 200], [50, 60, 250, 200]], [0.9, 0.2], [1, 0])
    arr = np.asarray(draw_detections(img, dets, show_parallelograms=False, line_width=3))
    assert tuple(arr[130, 51]) == class_color(1)
    dets = _dets([[50, 60, 250, 200], [50, 60, 250, 200]], [0.2, 0.9], [1, 0])
    arr = np.asarray(draw_detections(img, dets, show_parallelograms=False, line_width=3))
    assert tuple(arr[130, 51]) == class_color(0)
    assert len({class_color(i) for i in range(30)}) == 30


def test_filters_max_detections_and_score_threshold():
    img = _gray()
    dets = _dets([[10, 100, 60, 150], [200, 100, 260, 150]], [0.9, 0.1], [0, 1])
    base = np.asarray(img).astype(int)

    def changed_at(out, x, y):
        return np.abs(np.asarray(out).astype(int)[y, x] - base[y, x]).sum() > 0

    out = draw_detections(img, dets, max_detections=1, line_width=2)
    assert changed_at(out, 11, 140) and not changed_at(out, 201, 140)
    out = draw_detections(img, dets, score_threshold=0.5, line_width=2)
    assert changed_at(out, 11, 140) and not changed_at(out, 201, 140)
    out = draw_detections(img, dets, max_detections=0)
    assert np.array_equal(np.asarray(out), base)


def test_empty_detections():
    img = _gray()
    out = draw_detections(img, Detections.empty(["a"], img.size))
    assert out.size == img.size and out.mode == "RGB"
    assert np.array_equal(np.asarray(out), np.asarray(img))


@pytest.mark.parametrize("box", [[0, 0, 50, 40], [270, 200, 320, 240], [-30, -20, 400, 300], [310, 0, 320, 5],
                                 [0, 235, 5, 240]])
def test_labels_at_image_border(box):
    img = _gray()
    dets = _dets([box], [0.99], [0], names=("a_very_long_class_name_for_a_label",))
    out = draw_detections(img, dets)
    assert out.size == img.size


def test_parallelogram_drawn_when_enabled():
    img = _gray()
    boxes = torch.tensor([[40.0, 40.0, 280.0, 200.0]])
    # A rotated-looking grid strictly inside the box.
    corners = torch.tensor([[[160.0, 60.0], [260.0, 120.0], [60.0, 120.0], [160.0, 180.0]]])
    dets = Detections(boxes, torch.tensor([0.5]), torch.tensor([0]), corners, ["a"], img.size)
    on = np.asarray(draw_detections(img, dets, show_parallelograms=True)).astype(int)
    off = np.asarray(draw_detections(img, dets, show_parallelograms=False)).astype(int)
    # The TR-BR edge (260,120)-(160,180) is drawn (dashed) only with parallelograms.
    diff = np.abs(on - off).sum(axis=2) > 0
    ts = np.linspace(0.1, 0.9, 33)
    hits = [diff[int(round(120 + 60 * t)) - 1:int(round(120 + 60 * t)) + 2,
                 int(round(260 - 100 * t)) - 1:int(round(260 - 100 * t)) + 2].any() for t in ts]
    assert np.mean(hits) > 0.4
    # TL-BL would be the diagonal (160,60)-(60,120), TR-BR the edge above: the polygon must not cross the
    # middle of the TL-BR diagonal (160,120).
    assert np.abs(on[120, 160] - off[120, 160]).sum() == 0


def test_line_width_and_font_scale_with_image_size():
    small, big = _gray((200, 150)), _gray((2000, 1500))
    d_small = _dets([[20, 20, 120, 100]], [0.5], [0], size=small.size)
    d_big = _dets([[200, 200, 1200, 1000]], [0.5], [0], size=big.size)
    base_s, base_b = np.asarray(small).astype(int), np.asarray(big).astype(int)
    cs = (np.abs(np.asarray(draw_detections(small, d_small, show_parallelograms=False)) - base_s).sum(2) > 0)
    cb = (np.abs(np.asarray(draw_detections(big, d_big, show_parallelograms=False)) - base_b).sum(2) > 0)
    width_small = cs[60, 10:60].sum()  # crossing the left edge
    width_big = cb[600, 100:600].sum()
    assert width_big > width_small


def test_gallery_strip():
    rng = np.random.default_rng(0)
    ims = [("cereal", Image.fromarray(rng.integers(0, 255, (240, 180, 3), dtype=np.uint8))),
           ("tea", Image.new("L", (300, 100), 30)),
           ("a_name_longer_than_the_thumbnail_itself", Image.new("RGBA", (50, 80), (255, 0, 0, 255)))]
    strip = draw_gallery(ims, thumb=96)
    assert strip.mode == "RGB"
    assert strip.height >= 96 and strip.width >= 3 * 96
    assert draw_gallery([], thumb=64).mode == "RGB"


def test_side_by_side_sizes():
    a, b = Image.new("RGB", (100, 50), "red"), Image.new("L", (30, 80), 0)
    out = side_by_side(a, b, pad=8)
    assert out.size == (138, 80) and out.mode == "RGB"
    assert out.getpixel((10, 10)) == (255, 0, 0) and out.getpixel((120, 70)) == (0, 0, 0)
    assert out.getpixel((104, 10)) == (255, 255, 255)  # padding
    assert side_by_side(a, b, pad=0, vertical=True).size == (100, 130)
    assert side_by_side([a, b]).size == out.size
    with pytest.raises(ValueError):
        side_by_side()
