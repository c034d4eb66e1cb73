"""Colour re-scoring (os2d.inference.colour): histograms, region sampling, factors, the gallery's colours, the
detector's use of them, config and CLI."""

from __future__ import annotations

import argparse
import colorsys

import pytest
import torch
from PIL import Image

from os2d.apps.cli.common import CliError, add_inference_args, inference_config
from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.gallery import ClassGallery
from os2d.inference.colour import (
    NUM_BINS,
    colour_histogram,
    colour_similarity,
    region_colours,
    rescore_factors,
)
from os2d.io import image_to_tensor


def solid(rgb: tuple[float, float, float], h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1).expand(3, h, w).clone()


def test_histogram_bins_of_known_colours():
    red, grey, black = (colour_histogram(solid(c)) for c in ((1, 0, 0), (0.5, 0.5, 0.5), (0, 0, 0)))
    assert red.shape == (NUM_BINS,)
    assert red[1] == 1  # hue bin 0, high saturation
    assert grey[32 + 2] == 1  # grey bin of value 0.5
    assert black[32] == 1
    pale_blue = colour_histogram(solid((0.6, 0.6, 1.0)))  # hue 2/3, saturation 0.4
    assert pale_blue[int(2 / 3 * 16) * 2] == 1


def test_histogram_hue_matches_colorsys():
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(3, 1, 300, generator=g)
    hist = colour_histogram(pixels)
    expected = torch.zeros(NUM_BINS)
    for r, gg, b in pixels.view(3, -1).T.tolist():
        h, s, v = colorsys.rgb_to_hsv(r, gg, b)
        if s >= 0.25 and v >= 0.2:
            expected[min(int(h * 16), 15) * 2 + (s >= 0.6)] += 1
        else:
            expected[32 + min(int(v * 4), 3)] += 1
    torch.testing.assert_close(hist, expected / 300)
    torch.testing.assert_close(hist.sum(), torch.tensor(1.0))


def test_regions_sample_inside_the_box_and_tolerate_boxes_outside():
    image = torch.cat([solid((1, 0, 0), 40, 40), solid((0, 0, 1), 40, 40)], dim=-1)  # red | blue, (3, 40, 80)
    boxes = torch.tensor([[0, 0, 40, 40], [40, 0, 80, 40], [100, 100, 120, 120], [-20, 0, 44, 40]], dtype=torch.float)
    h = region_colours(image, boxes)
    assert h.shape == (4, NUM_BINS)
    red, blue = colour_histogram(solid((1, 0, 0))), colour_histogram(solid((0, 0, 1)))
    torch.testing.assert_close(h[0], red)
    torch.testing.assert_close(h[1], blue)
    assert h[2].sum() == 0  # nothing inside the image
    assert h[3, 1] == 1  # clipped to the image, the inset drops the 4 px of blue
    sim = colour_similarity(h[:2], torch.stack([red, blue]))
    torch.testing.assert_close(sim, torch.eye(2))


def test_factors_use_the_best_view_of_the_label_and_leave_unknown_colours_alone():
    image = torch.cat([solid((1, 0, 0), 40, 40), solid((0, 0, 1), 40, 40)], dim=-1)
    red, blue = colour_histogram(solid((1, 0, 0))), colour_histogram(solid((0, 0, 1)))
    unknown = torch.full((NUM_BINS,), float("nan"))
    # class 0: a red view; class 1: a blue and a red view; class 2: colour unknown
    views = torch.stack([red, blue, red, unknown])
    view_class = torch.tensor([0, 1, 1, 2])
    boxes = torch.tensor([[0, 0, 80, 80], [80, 0, 160, 80], [80, 0, 160, 80], [80, 0, 160, 80]], dtype=torch.float)
    labels = torch.tensor([0, 0, 1, 2])
    f = rescore_factors(image, (0.5, 0.5), boxes, labels, views, view_class, gamma=0.5)  # boxes in 2x pixels
    torch.testing.assert_close(f, torch.tensor([1.0, 1e-3, 1.0, 1.0]))
    assert rescore_factors(image, (0.5, 0.5), boxes, labels, views, view_class, gamma=0).tolist() == [1.0] * 4


def test_gallery_keeps_colours_through_edits_and_files(tmp_path):
    k = torch.randn(3, 225, 8)
    colours = torch.softmax(torch.randn(3, NUM_BINS), dim=-1)
    g = ClassGallery(model_id="m")
    g.add("a", k[:2], ["original", "rot90"], None, colours[:2])
    g.add("b", k[2:], ["original"])  # colour unknown
    assert torch.isnan(g.view_colour[2]).all()
    g.save(tmp_path / "g.pt")
    back = ClassGallery.load(tmp_path / "g.pt")
    torch.testing.assert_close(back.view_colour[:2], colours[:2])
    assert torch.isnan(back.view_colour[2]).all()
    sub = back.subset(["b", "a"])
    assert torch.isnan(sub.view_colour[0]).all()
    torch.testing.assert_close(sub.view_colour[1:], colours[:2])
    back.remove("a")
    assert back.view_colour.shape == (1, NUM_BINS)
    payload = g.to_payload()
    del payload["view_colour"]  # a gallery saved before colours were kept
    assert torch.isnan(ClassGallery.from_payload(payload).view_colour).all()
    with pytest.raises(ValueError, match="colour histograms"):
        g.add("c", k[:1], ["original"], None, torch.ones(2, NUM_BINS))
    with pytest.raises(ValueError, match="non-negative"):
        g.add("c", k[:1], ["original"], None, -torch.ones(1, NUM_BINS))


def _object(colour: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", (96, 96), (235, 235, 235))
    for y in range(12, 84, 12):  # a striped package: its shape is the same in both colours
        img.paste(Image.new("RGB", (72, 6), colour), (12, y))
    return img


def test_detector_demotes_the_box_of_another_colour(toy_model):
    """Two same-shaped packages, red and green, on one shelf; class image: the red one. The toy trunk scores both
    almost alike; re-scoring keeps every box, multiplies each score by a factor in (0, 1], keeps the red one's
    score nearly whole and cuts the green one's."""
    scene = Image.new("RGB", (320, 160), (235, 235, 235))
    scene.paste(_object((200, 30, 30)), (24, 32))
    scene.paste(_object((30, 160, 30)), (200, 32))
    det = Detector(toy_model, InferenceConfig(image_size=None, colour_rescore=0.0, max_detections=None))
    det.add_class("red", _object((200, 30, 30)))
    raw = det.detect(scene)
    colour = det.detect(scene, colour_rescore=1.0)
    assert torch.isfinite(det.gallery.view_colour).all()
    assert len(colour) == len(raw) >= 2
    assert bool((colour.scores[:-1] >= colour.scores[1:]).all())  # re-sorted
    ratio = {}
    for box, s_raw in zip(raw.boxes_xyxy, raw.scores, strict=True):
        same = (colour.boxes_xyxy - box).abs().amax(dim=1) < 1e-3
        assert int(same.sum()) == 1  # the same box, re-scored
        r = float(colour.scores[same][0] / s_raw)
        assert 0 < r <= 1 + 1e-6
        ratio.setdefault("red" if float(box[0::2].mean()) < 160 else "green", []).append(r)
    assert max(ratio["red"]) > 0.9 and max(ratio["green"]) < 0.8, ratio


def test_score_threshold_applies_to_the_rescored_score(toy_model):
    scene = Image.new("RGB", (192, 160), (235, 235, 235))
    scene.paste(_object((30, 160, 30)), (48, 32))
    det = Detector(toy_model, InferenceConfig(image_size=None, max_detections=None, colour_rescore=1.0))
    det.add_class("red", _object((200, 30, 30)))
    dets = det.detect(scene)
    assert len(dets)
    cut = float(dets.scores[len(dets) // 2])
    kept = det.detect(scene, score_threshold=cut)
    assert len(kept) and bool((kept.scores >= cut).all())
    assert len(kept) == int((dets.scores >= cut).sum())


def test_config_and_cli_option():
    assert InferenceConfig().colour_rescore == 0  # off by default: it did not hold on held-out photos (README)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="colour_rescore"):
            InferenceConfig(colour_rescore=bad)
    p = argparse.ArgumentParser()
    add_inference_args(p, image_size_help="")
    assert inference_config(p.parse_args(["--colour-rescore", "0.5"])).colour_rescore == 0.5
    assert inference_config(p.parse_args([])).colour_rescore == 0
    with pytest.raises(CliError, match="colour_rescore"):
        inference_config(p.parse_args(["--colour-rescore", "-1"]))


def test_class_image_colours_are_stored_per_view(toy_model):
    det = Detector(toy_model, InferenceConfig(image_size=None, rotations=True))
    det.add_class("red", _object((200, 30, 30)))
    det.add_negative("red", _object((30, 160, 30)))
    g = det.gallery
    assert g.view_colour.shape == (4, NUM_BINS)
    expected = colour_histogram(image_to_tensor(_object((200, 30, 30))))
    for row in g.view_colour:  # rotations do not change a histogram; resizing barely does
        assert float(colour_similarity(row[None], expected[None])) > 0.99


def test_rescored_detections_are_sorted_thresholded_and_capped_on_the_new_score():
    """A red and a blue box, the blue one scoring higher raw; class colour red: the red one comes first, and a
    cap of 1 keeps exactly the first detection of the uncapped result."""
    from os2d.inference.colour import rescore_detections
    from os2d.results import Detections

    image = torch.cat([solid((1, 0, 0), 40, 40), solid((0, 0, 1), 40, 40)], dim=-1)  # original (3, 40, 80)
    dets = Detections(torch.tensor([[40.0, 0, 80, 40], [0, 0, 40, 40]]), torch.tensor([0.9, 0.5]),
                      torch.tensor([0, 0]), torch.zeros(2, 4, 2), ["red"], (80, 40))
    views, view_class = colour_histogram(solid((1, 0, 0)))[None], torch.tensor([0])
    small = image[:, ::2, ::2]  # a half-size copy: boxes are scaled to it
    full = rescore_detections(dets, small, views, view_class, 0.5)
    assert full.boxes_xyxy[0].tolist() == [0, 0, 40, 40]
    torch.testing.assert_close(full.scores, torch.tensor([0.5, 0.9e-3]))
    negative = Detections(dets.boxes_xyxy, torch.tensor([-0.1, -0.2]), dets.labels, dets.corners_xy, ["red"], (80, 40))
    torch.testing.assert_close(rescore_detections(negative, small, views, view_class, 0.5).scores,
                               torch.tensor([-0.2, -100.0]))  # the blue box's -0.1 / 1e-3: demoted, not raised
    one = rescore_detections(dets, small, views, view_class, 0.5, max_detections=1)
    assert len(one) == 1 and one.boxes_xyxy[0].tolist() == full.boxes_xyxy[0].tolist()
    kept = rescore_detections(dets, small, views, view_class, 0.5, score_threshold=0.1)
    assert len(kept) == 1 and float(kept.scores[0]) == 0.5


def test_chromatic_similarity_compares_the_coloured_pixels_only():
    from os2d.inference.colour import CHROMA_MIN_MASS, chromatic_similarity

    def mix(*parts):  # (colour, share) -> histogram of an image with those shares of pixels
        return sum(share * colour_histogram(solid(c)) for c, share in parts)

    white, red, blue = (1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)
    cup_red = mix((white, 0.6), (red, 0.4))  # mostly white, red decoration
    cup_blue = mix((white, 0.6), (blue, 0.4))
    crops = torch.stack([mix((white, 0.1), (red, 0.9)), cup_blue, mix((white, 0.9), (red, 0.1))])  # (3, 36)
    sims = chromatic_similarity(crops, torch.stack([cup_red, cup_blue]))  # (3, 2)
    # the greys are dropped: a red crop agrees fully with the red cup however much white either has
    torch.testing.assert_close(sims[0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(sims[1], torch.tensor([0.0, 1.0]))
    assert colour_similarity(crops[:1], cup_blue[None]).item() > 0.2  # the full histogram shares the white
    assert CHROMA_MIN_MASS > 0.1 and sims[2].isnan().all()  # 10% coloured: nothing to compare
    assert chromatic_similarity(crops[:1], cup_red[None], min_mass=0.05).item() == pytest.approx(1.0)


def test_chroma_factors_bound_and_skip():
    from os2d.inference.verify import CHROMA_FLOOR, chroma_factors

    red, blue, grey = (colour_histogram(solid(c)) for c in ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.5, 0.5, 0.5)))
    half = 0.5 * red + 0.5 * blue  # chromatic agreement with red: sqrt(0.5) = 0.707
    views = torch.stack([red, blue, torch.full((NUM_BINS,), float("nan"))])  # class 0: red, class 1: blue, 2: unknown
    view_class = torch.tensor([0, 1, 2])
    crops = torch.stack([red, blue, half, grey, red])
    labels = torch.tensor([0, 0, 0, 0, 2])
    f = chroma_factors(crops, labels, views, view_class, 0.5)
    # own colour: 1; another hue: the floor; 0.707 / 0.5 > 1: 1; a grey crop or an unknown view: 1 (not compared)
    torch.testing.assert_close(f, torch.tensor([1.0, CHROMA_FLOOR, 1.0, 1.0, 1.0]))
    f = chroma_factors(crops, labels, views, view_class, 0.9)
    assert f[2].item() == pytest.approx(0.5 ** 0.5 / 0.9, rel=1e-5)
    assert chroma_factors(crops, labels, views[:0], view_class[:0], 0.5).tolist() == [1.0] * 5  # no views
