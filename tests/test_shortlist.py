"""The class shortlist: fast scores equal a naive loop; K >= classes changes nothing; K < classes runs the heads
only for the shortlisted classes and gives their full-run detections; views map to their class."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_toy_model
from helpers import scene_with, textured_object
from PIL import Image

from os2d.apps.cli.common import inference_config
from os2d.apps.cli.main import build_parser
from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.inference.shortlist import (
    ClassDescriptorCache,
    class_descriptors,
    class_scores,
    shortlist_views,
    top_classes,
    view_scores,
    views_of_classes,
    window_descriptors,
)


def _naive_window_descriptors(features: torch.Tensor, window: int) -> torch.Tensor:
    """Loop over locations: mean of the normalised cells of the window (cut at the border), normalised."""
    f = features[0] / (features[0].norm(dim=0, keepdim=True) + 1e-5)
    c, h, w = f.shape
    lo = window // 2
    out = torch.zeros(c, h, w)
    for y in range(h):
        for x in range(w):
            y0, y1 = max(0, y - lo), min(h, y - lo + window)
            x0, x1 = max(0, x - lo), min(w, x - lo + window)
            m = f[:, y0:y1, x0:x1].mean(dim=(1, 2))
            out[:, y, x] = m / (m.norm() + 1e-5)
    return out.reshape(c, -1)


@pytest.mark.parametrize("window", [1, 3, 4, 7, 15])
def test_window_descriptors_equal_naive_loop(window):
    g = torch.Generator().manual_seed(window)
    feats = torch.rand(1, 8, 6, 9, generator=g)
    fast = window_descriptors(feats, window)
    assert fast.shape == (8, 6 * 9)
    torch.testing.assert_close(fast, _naive_window_descriptors(feats, window), atol=1e-6, rtol=1e-5)


def test_view_scores_equal_naive_max_over_windows_and_levels():
    g = torch.Generator().manual_seed(1)
    levels = [torch.rand(1, 8, 5, 7, generator=g), torch.rand(1, 8, 9, 4, generator=g)]
    kernels = F.normalize(torch.rand(6, 9, 8, generator=g), dim=2)  # (V, S*S, C), S = 3
    desc = class_descriptors(kernels)
    torch.testing.assert_close(desc.norm(dim=1), torch.ones(6), atol=1e-4, rtol=0)
    fast = view_scores(levels, desc, windows=(3, 2))
    naive = torch.full((6,), -float("inf"))
    for feats in levels:
        for window in (3, 2):
            win = _naive_window_descriptors(feats, window)
            for v in range(6):
                naive[v] = max(naive[v], max(float(desc[v] @ win[:, r]) for r in range(win.shape[1])))
    torch.testing.assert_close(fast, naive, atol=1e-5, rtol=0)


def test_class_descriptors_average_the_inner_cells():
    g = torch.Generator().manual_seed(3)
    s, c = 5, 4
    kernels = F.normalize(torch.rand(3, s * s, c, generator=g), dim=2)  # channel n = q*S + p: cell (p, q)
    for border in (0, 1, 2):
        inner = [q * s + p for q in range(border, s - border) for p in range(border, s - border)]
        naive = F.normalize(kernels[:, inner].mean(dim=1), dim=1)
        torch.testing.assert_close(class_descriptors(kernels, border), naive, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="border of 3"):
        class_descriptors(kernels, 3)
    cache = ClassDescriptorCache()
    assert torch.equal(cache.get(kernels, 1), class_descriptors(kernels, 1))
    assert torch.equal(cache.get(kernels, 0), class_descriptors(kernels, 0))  # another border: recomputed


def test_class_scores_take_the_best_view_and_top_classes_are_deterministic():
    view_score = torch.tensor([0.1, 0.9, 0.3, 0.5, 0.5])
    view_class = torch.tensor([0, 0, 1, 2, 3])
    scores = class_scores(view_score, view_class, num_classes=5)
    assert scores[:4].tolist() == pytest.approx([0.9, 0.3, 0.5, 0.5])
    assert scores[4] == -float("inf")  # a class without views
    assert top_classes(scores, 2).tolist() == [0, 2]  # tie 2/3: the lower index wins
    assert top_classes(scores, 9).tolist() == [0, 1, 2, 3, 4]
    assert views_of_classes(view_class, torch.tensor([0, 3])).tolist() == [0, 1, 4]
    with pytest.raises(ValueError, match="k must be"):
        top_classes(scores, 0)


def test_config_and_cli_option():
    with pytest.raises(ValueError, match="shortlist_top_k"):
        InferenceConfig(shortlist_top_k=0)
    args = build_parser().parse_args(["detect", "x.jpg", "-o", "o.json", "--shortlist", "3"])
    assert inference_config(args).shortlist_top_k == 3
    args = build_parser().parse_args(["detect", "x.jpg", "-o", "o.json"])
    assert inference_config(args).shortlist_top_k is None


@pytest.fixture(scope="module")
def toy_detector():
    det = Detector(make_toy_model(), InferenceConfig(image_size=None, max_detections=None, pre_nms_top_k=50,
                                                     rotations=True))
    for i in range(5):
        det.add_class(f"c{i}", textured_object((64 + 16 * i, 80), seed=i))
    det.add_class("c1", textured_object((72, 72), seed=11))  # few-shot: a second image of c1
    return det


@pytest.fixture(scope="module")
def scene():
    return scene_with(textured_object((96, 80), seed=2), [(120, 60), (300, 200)], size=(448, 352))


def _as_tuple(d):
    return d.boxes_xyxy, d.scores, d.labels, d.corners_xy


def test_k_at_least_number_of_classes_changes_nothing(toy_detector, scene):
    full = toy_detector.detect(scene)
    assert len(full) > 0
    for k in (5, 6, 100):
        short = toy_detector.detect(scene, shortlist_top_k=k)
        for a, b in zip(_as_tuple(full), _as_tuple(short), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_k_below_classes_gives_the_full_run_detections_of_the_shortlisted_classes(toy_detector, scene, k):
    det = toy_detector
    g = det.gallery
    from os2d.inference.pyramid import prepare_levels

    feats = [det.model.extract_features(lv[None]) for lv in prepare_levels(scene, det.config)]
    views, scores = shortlist_views(feats, g.kernels, g.view_class, len(g), k,
                                    grid_size=det.model.config.class_grid_size,
                                    pool_border=det.model.config.pool_border)
    chosen = top_classes(scores, k)
    assert len(chosen) == k
    # all views of a chosen class (4 rotations; c1 has 8 views from two class images) and nothing else
    assert views.tolist() == [v for v, c in enumerate(g.view_class.tolist()) if c in chosen.tolist()]
    full = det.detect(scene, reshape_top=0)  # the shape search's best 10 depend on the classes run: boxes without it
    short = det.detect(scene, shortlist_top_k=k, reshape_top=0)
    assert set(short.labels.tolist()) <= set(chosen.tolist())
    keep = torch.isin(full.labels, chosen)
    expected = full.filter(keep)
    assert len(short) == len(expected) > 0
    assert torch.equal(short.labels, expected.labels)
    torch.testing.assert_close(short.scores, expected.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(short.boxes_xyxy, expected.boxes_xyxy, atol=1e-3, rtol=0)


def test_capped_shortlist_run_keeps_the_full_runs_detections_of_its_classes(toy_detector, scene):
    """With max_detections, other classes no longer push the shortlisted ones out: a superset of the capped full
    run's detections of those classes."""
    full = toy_detector.detect(scene, max_detections=10)
    short = toy_detector.detect(scene, max_detections=10, shortlist_top_k=2)
    chosen = sorted(set(short.labels.tolist()))
    kept = full.filter(torch.isin(full.labels, torch.tensor(chosen)))
    assert len(short) == 10 and len(kept) <= 10
    for s in kept.scores.tolist():
        assert min(abs(s - t) for t in short.scores.tolist()) < 1e-5


def test_descriptor_cache_follows_the_gallery():
    det = Detector(make_toy_model(), InferenceConfig(image_size=None))
    det.add_class("a", textured_object(seed=1))
    cache = ClassDescriptorCache()
    first = cache.get(det.gallery.kernels)
    assert cache.get(det.gallery.kernels) is first
    det.add_class("b", textured_object(seed=2))
    second = cache.get(det.gallery.kernels)
    assert second.shape[0] == 2 and torch.equal(second[:1], first)


def _checkerboard(seed: int, size: tuple[int, int] = (128, 128)) -> Image.Image:
    rng = np.random.default_rng(seed)
    c1, c2 = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
    n = int(rng.integers(2, 8))
    yy, xx = np.mgrid[: size[1], : size[0]]
    board = ((yy * n // size[1]) + (xx * n // size[0])) % 2
    return Image.fromarray(np.where(board[..., None] == 1, c1, c2).astype(np.uint8))


@pytest.mark.slow
def test_real_features_keep_the_class_the_full_run_finds():
    """Default (ImageNet) weights, 5 classes: the 1-shortlist is the pasted object where the full run finds it
    clearly, and a 2-shortlist keeps the full run's best detection in each scene."""
    det = Detector.from_weights("default", image_size=None, max_detections=20)
    objs = [textured_object((160, 192), seed=3), _checkerboard(1), _checkerboard(2), _checkerboard(3),
            textured_object((120, 120), seed=5)]
    for i, o in enumerate(objs):
        det.add_class(f"o{i}", o)
    for target in (0, 2, 4):
        img = scene_with(objs[target], [(100, 80)], size=(480, 352), seed=target)
        full = det.detect(img)
        short = det.detect(img, shortlist_top_k=2)
        assert short.label_names[0] == full.label_names[0]
        assert short.scores[0] == pytest.approx(float(full.scores[0]), abs=1e-5)
        if target == 0:
            assert full.label_names[0] == "o0"
            assert set(det.detect(img, shortlist_top_k=1).label_names) == {"o0"}
