"""Automatic scale (image_size="auto"): the level ladder, the per-view plan, and the default model choosing a
larger level for a small object."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from helpers import scene_with, textured_object

from os2d.config import AUTO, AutoScaleConfig, InferenceConfig
from os2d.detector import Detector
from os2d.inference.autoscale import (
    below_level,
    fills_floor,
    kernel_grids,
    ladder,
    plan_levels,
    probe_scores,
    resize_to_side,
    template_shapes,
)
from os2d.inference.pyramid import pyramid_sizes
from os2d.model.correlation import class_kernels
from os2d.results import image_record


def test_ladder_is_probe_times_powers_of_the_step_within_bounds():
    assert ladder(AutoScaleConfig()) == [272, 384, 543, 768, 1086, 1536]
    assert ladder(AutoScaleConfig(probe_size=512, level_step=2.0, min_size=256, max_size=4096)) == [256, 512, 1024,
                                                                                                  2048, 4096]


def test_plan_puts_each_view_where_its_template_says_and_weak_views_on_the_main_level():
    cfg = AutoScaleConfig(template_cells=(4, 5, 7, 10, 14, 20), max_levels=2, weak_margin=0.1, floor_level=None)
    scores = torch.tensor([
        [0.1, 0.9, 0.2, 0.1, 0.0, 0.0],  # object ~5 cells on the probe: fills 15 cells at 768*15/5 = 2304 -> 1536
        [0.0, 0.1, 0.2, 0.3, 0.85, 0.3],  # ~14 cells -> 823 -> 768
        [0.0, 0.1, 0.2, 0.3, 0.82, 0.3],  # the same size
        [0.5, 0.2, 0.1, 0.0, 0.0, 0.0],  # weak (0.4 below the best): no size information -> the main level
    ])
    plan = plan_levels(scores, cfg, grid_size=15)
    assert plan.view_levels == (1536, 768, 768, 768)  # main level = the one most strong views chose
    assert plan.levels() == [768, 1536] and plan.views_at(768) == [1, 2, 3]
    one = plan_levels(scores, replace(cfg, max_levels=1), grid_size=15)
    assert one.levels() == [1536]  # the level of the best-scoring view is kept; the others move to it


def test_size_prior_picks_the_large_template_of_a_close_up():
    """On a close-up every template's peak falls with its size (the product is everywhere), so the plain argmax takes
    the smallest template and the photo would run at the largest level. score + size_prior * ln(cells) picks the size;
    the view's strength (weak_margin, level ranking) stays its plain score at that template."""
    cells = (4, 5, 7, 10, 14, 20, 28, 40)
    scores = torch.tensor([[0.31, 0.27, 0.23, 0.22, 0.20, 0.19, 0.20, 0.17]])  # like a Grocery Store close-up's
    plain = plan_levels(scores, AutoScaleConfig(template_cells=cells, min_size=256, size_prior=0.0), grid_size=15)
    assert plain.view_levels == (1536,) and plain.view_scores == pytest.approx((0.31,))
    cfg = AutoScaleConfig(template_cells=cells, min_size=256, size_prior=0.06)
    prior = plan_levels(scores, cfg, grid_size=15)
    # 0.20 + 0.06 ln 28 = 0.400 is the best; 768 * 15 / 28 = 411 -> ladder level 384
    assert prior.view_levels == (384,) and prior.view_scores == pytest.approx((0.20,))
    assert ladder(cfg)[:2] == [272, 384]


def test_prior_strength_keeps_a_close_up_view_strong():
    """A close-up's product picks a large template by the prior, but its plain score there (0.20) is far below another
    class's 4-cell patch match (0.33): by plain strength it is weak and joins that class's level (1536). With
    ``prior_strength`` its strength is 0.20 + 0.06 ln 28 = 0.400, against 0.33 + 0.06 ln 4 = 0.413: strong, its own
    level (384) is kept, and it ranks first among the levels (max_levels 1 keeps 384)."""
    cells = (4, 5, 7, 10, 14, 20, 28, 40)
    scores = torch.tensor([
        [0.31, 0.27, 0.23, 0.22, 0.20, 0.19, 0.20, 0.17],  # the product: prior picks 28 cells -> 384
        [0.33, 0.24, 0.20, 0.17, 0.14, 0.12, 0.10, 0.08],  # another class, a patch: 4 cells -> 1536
    ])
    plain = plan_levels(scores, AutoScaleConfig(template_cells=cells, min_size=256), grid_size=15)
    assert plain.view_levels == (1536, 1536)  # 0.20 < 0.33 - 0.1: weak, joins the main level
    cfg = AutoScaleConfig(template_cells=cells, min_size=256, prior_strength=True)
    strong = plan_levels(scores, cfg, grid_size=15)
    assert strong.view_levels == (384, 1536) and strong.view_scores == pytest.approx((0.20, 0.33))
    scores[0, 6] = 0.22  # 0.22 + 0.06 ln 28 = 0.420 beats 0.413: the close-up's level ranks first
    assert plan_levels(scores, replace(cfg, max_levels=1), grid_size=15).view_levels == (384, 384)


def test_hedge_runs_a_view_strong_only_with_the_prior_at_its_own_level_too():
    """``hedge``: the close-up view above is weak by its plain score (joins 1536) but strong with the prior (0.400
    against 0.413): it keeps 1536 and runs at its own level, 384, as well. A plainly strong view gets no extra level;
    with ``prior_strength`` the hedge has nothing to do (the view is strong and runs at 384 only)."""
    cells = (4, 5, 7, 10, 14, 20, 28, 40)
    scores = torch.tensor([
        [0.31, 0.27, 0.23, 0.22, 0.20, 0.19, 0.20, 0.17],  # strong only with the prior: 28 cells -> 384
        [0.33, 0.24, 0.20, 0.17, 0.14, 0.12, 0.10, 0.08],  # strong: 4 cells -> 1536
        [0.10, 0.09, 0.08, 0.07, 0.06, 0.05, 0.04, 0.03],  # weak either way: the main level only
    ])
    cfg = AutoScaleConfig(template_cells=cells, min_size=256, floor_level=None)
    assert cfg.hedge  # the default since recipes/autoscale_hedge
    plan = plan_levels(scores, cfg, grid_size=15)
    assert plan.view_levels == (1536, 1536, 1536) and plan.extra == ((0, 384),)
    assert plan.levels() == [384, 1536] and plan.views_at(384) == [0] and plan.views_at(1536) == [0, 1, 2]
    assert plan_levels(scores, replace(cfg, hedge=False), grid_size=15).extra == ()
    both = plan_levels(scores, replace(cfg, prior_strength=True), grid_size=15)
    assert both.extra == () and both.view_levels[0] == 384


def test_hedge_peak_runs_a_strong_views_plain_peak_level_too():
    """``hedge_peak``: on a shelf of small near-identical facings (the demo's cups: plain peak at 7 cells, 0.304 and
    0.315) the prior picks a group of them (28 cells -> 384; 40 -> 272); the plain 7-cell peak's level (768 * 15 / 7
    -> 1536) runs too. A view whose plain best is the smallest template (the small-template bias) or a weak view gets
    no extra level."""
    scores = torch.tensor([
        [0.28, 0.29, 0.304, 0.29, 0.28, 0.27, 0.262, 0.24],  # plain peak 7 cells, prior 28 cells
        [0.27, 0.30, 0.315, 0.30, 0.28, 0.26, 0.237, 0.22],  # plain peak 7 cells, prior 40 cells
        [0.33, 0.30, 0.27, 0.25, 0.24, 0.23, 0.22, 0.21],  # plain best: the smallest template
        [0.12, 0.15, 0.11, 0.10, 0.09, 0.08, 0.07, 0.06],  # weak: no extra level
    ])
    cfg = AutoScaleConfig(hedge_peak=True)
    assert not AutoScaleConfig().hedge_peak
    plan = plan_levels(scores, cfg, grid_size=15)
    assert plan_levels(scores, replace(cfg, hedge_peak=False), grid_size=15).view_levels == plan.view_levels
    assert plan.view_levels == (384, 272, 272, 272)
    assert plan.extra == ((0, 1536), (1, 1536))
    assert plan.levels() == [272, 384, 1536] and plan.views_at(1536) == [0, 1] and plan.views_at(272) == [1, 2, 3]
    # no clear peak: the extra level goes
    assert plan_levels(scores, replace(cfg, peak_margin=0.05), grid_size=15).extra == ()


def test_up_steps_run_strong_views_above_their_highest_level_too():
    """``up_steps``: every strong view also runs that many ladder steps above its highest level (the plan's and the
    hedge's), never above the ladder's top; weak views and the default (0) get nothing."""
    cfg = AutoScaleConfig(template_cells=(4, 5, 7, 10, 14, 20), max_levels=3, weak_margin=0.1, floor_level=None,
                          hedge=False)
    scores = torch.tensor([
        [0.1, 0.2, 0.3, 0.4, 0.85, 0.3],  # ~14 cells -> 768
        [0.0, 0.1, 0.2, 0.3, 0.3, 0.82],  # ~20 cells -> 543
        [0.9, 0.2, 0.1, 0.1, 0.0, 0.0],  # ~4 cells -> 1536, the ladder's top
        [0.1, 0.1, 0.1, 0.2, 0.3, 0.3],  # weak: the main level (ties: the best view's, 1536)
    ])
    assert AutoScaleConfig().up_steps == 0
    base = plan_levels(scores, cfg, grid_size=15)
    assert base.view_levels == (768, 543, 1536, 1536) and base.extra == ()
    one = plan_levels(scores, replace(cfg, up_steps=1), grid_size=15)
    assert one.view_levels == base.view_levels
    assert one.extra == ((0, 1086), (1, 768)) and one.up == one.extra
    two = plan_levels(scores, replace(cfg, up_steps=2), grid_size=15)
    assert two.extra == ((0, 1086), (0, 1536), (1, 768), (1, 1086))
    with pytest.raises(ValueError, match="up_steps"):
        AutoScaleConfig(up_steps=-1)


def test_detector_runs_the_hedged_view_at_both_levels(small_object_scene, monkeypatch):
    """The detection loop runs a view at every level the plan gives it, extra ones included, and reports them."""
    import os2d.inference.detect as detect_module
    from os2d.inference.autoscale import ScalePlan

    obj, scene = small_object_scene
    d = Detector.from_weights("default", max_detections=10)
    d.add_class("thing", obj)
    views = d.gallery.kernels.shape[0]
    plan = ScalePlan(768, (1536,) * views, (0.3,) * views, tuple((v, 543) for v in range(views)))
    monkeypatch.setattr(detect_module, "plan_levels", lambda *a, **k: plan)
    dets = d.detect(scene)
    assert dets.levels == {"thing": [543, 1536]}
    box = dets.boxes_xyxy[0].tolist()
    ix = max(0.0, min(box[2], 620) - max(box[0], 500))
    iy = max(0.0, min(box[3], 420) - max(box[1], 300))
    assert ix * iy / ((box[2] - box[0]) * (box[3] - box[1]) + 120 * 120 - ix * iy) > 0.6


def test_large_templates_slide_over_pooled_features_at_half_their_side():
    g = torch.Generator().manual_seed(4)
    kernels = class_kernels(torch.nn.functional.normalize(torch.randn(2, 24, 15, 15, generator=g), dim=1))
    feats = torch.rand(1, 24, 21, 30, generator=g)
    cells = (5, 20, 28, 40)
    fn = feats / (feats.norm(dim=1, keepdim=True) + 1e-5)
    pooled = torch.nn.functional.avg_pool2d(fn, 2, ceil_mode=True)  # (1, 24, 11, 15)
    pooled = pooled / (pooled.norm(dim=1, keepdim=True) + 1e-5)
    expected = torch.empty(2, len(cells))
    for j, s in enumerate(cells):
        f, side = (pooled, round(s / 2)) if s > 20 else (fn, s)
        t = torch.nn.functional.interpolate(kernel_grids(kernels), size=(side, side), mode="bilinear",
                                            align_corners=True)
        t = t / (t.norm(dim=1, keepdim=True) + 1e-5)
        expected[:, j] = torch.nn.functional.conv2d(f, t, padding=side // 2).flatten(2).amax(2)[0] / side**2
    torch.testing.assert_close(probe_scores(feats, kernels, cells, pool_above=20), expected, rtol=1e-5, atol=1e-6)
    # nothing above the bound: the full-resolution scores, bit for bit
    assert torch.equal(probe_scores(feats, kernels, cells, pool_above=40), probe_scores(feats, kernels, cells))


def test_kernel_grids_undo_the_column_major_cell_order():
    grid = torch.randn(2, 8, 3, 3)  # (V, C, S, S)
    kernels = class_kernels(grid)  # (V, S*S, C)
    torch.testing.assert_close(kernel_grids(kernels), grid)


def test_probe_scores_equal_the_textbook_convolution():
    """probe_scores runs its convolutions channels-last (faster); the values are those of the plain formula: the
    mean cosine of the template's normalised cells with the normalised features under them, best over positions."""
    g = torch.Generator().manual_seed(3)
    kernels = class_kernels(torch.nn.functional.normalize(torch.randn(3, 24, 15, 15, generator=g), dim=1))
    feats = torch.rand(1, 24, 13, 29, generator=g)
    cells = (4, 7, 20)
    fn = feats / (feats.norm(dim=1, keepdim=True) + 1e-5)
    expected = torch.empty(3, len(cells))
    for j, s in enumerate(cells):
        t = torch.nn.functional.interpolate(kernel_grids(kernels), size=(s, s), mode="bilinear", align_corners=True)
        t = t / (t.norm(dim=1, keepdim=True) + 1e-5)
        expected[:, j] = torch.nn.functional.conv2d(fn, t, padding=s // 2).flatten(2).amax(2)[0] / (s * s)
    torch.testing.assert_close(probe_scores(feats, kernels, cells), expected, rtol=1e-5, atol=1e-6)


def test_probe_scores_peak_at_the_template_of_the_object_size():
    torch.manual_seed(0)
    grid = torch.nn.functional.normalize(torch.randn(1, 16, 15, 15), dim=1)
    feats = torch.nn.functional.normalize(torch.randn(1, 16, 40, 40), dim=1) * 0.2
    obj = torch.nn.functional.interpolate(grid, size=(10, 10), mode="bilinear", align_corners=True)
    feats[:, :, 12:22, 15:25] = obj  # the class grid seen at 10 x 10 cells
    scores = probe_scores(feats, class_kernels(grid), (5, 7, 10, 14, 20))
    assert int(scores[0].argmax()) == 2


def test_template_shapes_keep_the_area_and_take_the_aspect_ratio_to_the_power():
    aspect = torch.tensor([1.0, 4.0, 0.25, 9.0])
    assert template_shapes(10, aspect, 0.0) == [(10, 10)] * 4
    assert template_shapes(10, aspect, 1.0) == [(10, 10), (5, 20), (20, 5), (5, 20)]  # 9:1 clamped to 4:1
    assert template_shapes(10, aspect, 0.5) == [(10, 10), (7, 14), (14, 7), (7, 14)]
    assert template_shapes(2, torch.tensor([4.0]), 2.0) == [(1, 8)]  # at least one cell


def test_aspect_templates_find_the_size_of_a_wide_object_that_square_ones_misjudge():
    torch.manual_seed(0)
    grid = torch.nn.functional.normalize(torch.randn(1, 16, 15, 15), dim=1)
    feats = torch.nn.functional.normalize(torch.randn(1, 16, 40, 60), dim=1) * 0.2
    obj = torch.nn.functional.interpolate(grid, size=(5, 20), mode="bilinear", align_corners=True)
    feats[:, :, 15:20, 20:40] = obj  # a 4:1 object of sqrt-area 10 cells
    kernels, aspect, cells = class_kernels(grid), torch.tensor([4.0]), (5, 7, 10, 14, 20)
    shaped = probe_scores(feats, kernels, cells, aspect=aspect, aspect_power=1.0)
    assert cells[int(shaped[0].argmax())] == 10
    assert shaped[0].max() > 0.9
    square = probe_scores(feats, kernels, cells)
    assert square[0].max() < shaped[0].max() - 0.2
    # power 0 (the default) is the square templates, bit for bit
    assert torch.equal(probe_scores(feats, kernels, cells, aspect=aspect, aspect_power=0.0), square)


def test_resize_to_side_keeps_aspect():
    out = resize_to_side(torch.rand(3, 300, 400), 692.8)
    assert out.shape == (3, int(300 * 692.8 / math.sqrt(120000)), int(400 * 692.8 / math.sqrt(120000)))


def test_auto_source_level_is_never_an_upscale_and_is_capped():
    cfg = InferenceConfig()
    assert cfg.image_size == AUTO
    assert pyramid_sizes(640, 480, cfg) == [(640, 480)]
    w, h = pyramid_sizes(6000, 4000, cfg)[0]
    assert abs(math.sqrt(w * h) - cfg.auto_scale.max_size) < 2


def test_config_checks():
    with pytest.raises(ValueError, match="image_size must be 'auto'"):
        InferenceConfig(image_size="big")
    with pytest.raises(ValueError, match="auto_scale"):
        AutoScaleConfig(level_step=1.0)
    with pytest.raises(ValueError, match="template_aspect_power"):
        AutoScaleConfig(template_aspect_power=-1.0)
    with pytest.raises(ValueError, match="size_prior"):
        AutoScaleConfig(size_prior=-0.1)
    with pytest.raises(ValueError, match="pool_above"):
        AutoScaleConfig(pool_above=0)
    assert InferenceConfig(auto_scale={"probe_size": 512}).auto_scale.probe_size == 512  # from JSON / YAML


@pytest.fixture(scope="module")
def small_object_scene():
    obj = textured_object((120, 120), seed=5)
    return obj, scene_with(obj, [(500, 300)], size=(960, 720), seed=2)


def test_default_detector_runs_small_objects_at_a_larger_level(small_object_scene):
    obj, scene = small_object_scene
    d = Detector.from_weights("default", max_detections=10)
    assert d.config.image_size == AUTO
    d.add_class("thing", obj)
    dets = d.detect(scene)
    # sqrt(w*h) = 831: the object (120 px) fills the 240 px class grid at ~1660. The probe's estimate is coarse
    # (templates 4..20 cells on a 768 probe), so assert the direction: a ladder level above the image's own size; the
    # floor level 384 runs too (it keeps only frame-filling boxes there)
    floor, level = dets.levels["thing"]
    assert floor == 384 and level in ladder(d.config.auto_scale) and level > 831
    box = dets.boxes_xyxy[0].tolist()
    ix = max(0.0, min(box[2], 620) - max(box[0], 500))
    iy = max(0.0, min(box[3], 420) - max(box[1], 300))
    iou = ix * iy / ((box[2] - box[0]) * (box[3] - box[1]) + 120 * 120 - ix * iy)
    assert dets.label_names[0] == "thing" and iou > 0.6
    record = image_record("scene.jpg", scene.size, dets)
    assert record["levels"] == {"thing": [384, level]}
    fixed = d.detect(scene, image_size=1024)
    assert fixed.levels is None and "levels" not in image_record("scene.jpg", scene.size, fixed)


def test_cli_size_prior_sets_only_the_probe_prior():
    import argparse

    from os2d.apps.cli.common import CliError, add_inference_args, inference_config

    p = argparse.ArgumentParser()
    add_inference_args(p, image_size_help="")
    plain = inference_config(p.parse_args(["--size-prior", "0"])).auto_scale
    assert plain.size_prior == 0.0
    assert plain == AutoScaleConfig(size_prior=0.0)  # every other probe setting stays the default
    assert inference_config(p.parse_args([])).auto_scale == AutoScaleConfig()
    with pytest.raises(CliError, match="--size-prior"):
        inference_config(p.parse_args(["--size-prior", "-1"]))
    both = inference_config(p.parse_args(["--size-prior", "0", "--rescue-confidence", "0.05"])).auto_scale
    assert both == AutoScaleConfig(size_prior=0.0, rescue_confidence=0.05)
    assert inference_config(p.parse_args(["--rescue-confidence", "0"])).auto_scale.rescue_confidence is None
    with pytest.raises(CliError, match="rescue"):
        inference_config(p.parse_args(["--rescue-confidence", "1.5"]))


def test_cli_all_levels_is_the_fixed_six_level_pyramid_unless_size_or_scales_are_given():
    import argparse

    from os2d.apps.cli.common import add_inference_args, inference_config
    from os2d.config import ALL_LEVELS_SCALES, ALL_LEVELS_SIZE, AUTO

    p = argparse.ArgumentParser()
    add_inference_args(p, image_size_help="")
    every = inference_config(p.parse_args(["--all-levels"]))
    assert (every.image_size, every.scales) == (ALL_LEVELS_SIZE, ALL_LEVELS_SCALES)
    assert [round(ALL_LEVELS_SIZE * s) for s in every.scales] == [384, 543, 768, 1086, 1536, 2048]
    # eval passes the dataset's size (auto): the option still wins over it, an explicit --image-size does not
    assert inference_config(p.parse_args(["--all-levels"]), image_size=AUTO).image_size == ALL_LEVELS_SIZE
    given = inference_config(p.parse_args(["--all-levels", "--image-size", "1024"]), image_size=1024)
    assert (given.image_size, given.scales) == (1024, ALL_LEVELS_SCALES)
    assert inference_config(p.parse_args(["--all-levels", "--scales", "1", "2"])).scales == (1.0, 2.0)
    assert inference_config(p.parse_args([])).image_size == AUTO


def test_floor_level_adds_the_small_level_to_views_that_run_far_above_it():
    scores = torch.tensor([[0.40, 0.35, 0.30, 0.25, 0.20, 0.18, 0.15, 0.10],    # small objects: 1536
                           [0.10, 0.10, 0.10, 0.10, 0.12, 0.15, 0.30, 0.35]])   # a close-up: 272
    plain = plan_levels(scores, AutoScaleConfig(floor_level=None), 15)
    assert plain.view_levels == (1536, 272) and plain.extra == ()
    floored = plan_levels(scores, AutoScaleConfig(floor_level=384), 15)
    assert floored.view_levels == (1536, 272) and floored.extra == ((0, 384),)  # 272 is below it: nothing added
    assert floored.levels() == [272, 384, 1536] and floored.views_at(384) == [0]
    near = plan_levels(scores, AutoScaleConfig(floor_level=1086), 15)  # 1536 is one step above 1086: near enough
    assert near.extra == ()
    with pytest.raises(ValueError):
        AutoScaleConfig(floor_level=10)


def test_floor_fill_keeps_only_boxes_of_the_floor_levels_size():
    scores = torch.tensor([[0.40, 0.35, 0.30, 0.25, 0.20, 0.18, 0.15, 0.10],
                           [0.10, 0.10, 0.10, 0.10, 0.12, 0.15, 0.30, 0.35]])
    assert plan_levels(scores, AutoScaleConfig(floor_level=384), 15).floor == (0,)
    assert plan_levels(scores, AutoScaleConfig(), 15).floor == (0,)  # the default: 384, with floor_fill
    assert AutoScaleConfig().floor_fill
    assert plan_levels(scores, AutoScaleConfig(floor_level=None), 15).floor == ()
    # 240 px grid at level 384 on a ladder of sqrt(2) steps: at least 240 / (384 * 2**0.25) = 0.526 of the photo's side
    photo = (400, 400)
    boxes = torch.tensor([[0.0, 0.0, 211.0, 211.0], [0.0, 0.0, 209.0, 209.0], [0.0, 0.0, 400.0, 100.0]])
    assert fills_floor(boxes, photo, 384, 2**0.5, 240).tolist() == [True, False, False]  # 210.2 px is the least


def test_below_level_keeps_boxes_too_small_for_the_level_below():
    # 240 px grid at level 1086 on a ladder of sqrt(2) steps: at most 240 * 2**0.25 / 1086 = 0.263 of the photo's side
    photo = (400, 400)
    boxes = torch.tensor([[0.0, 0.0, 104.0, 104.0], [0.0, 0.0, 106.0, 106.0], [0.0, 0.0, 10.0, 10.0]])
    assert below_level(boxes, photo, 1086, 2**0.5, 240).tolist() == [True, False, True]  # 105.1 px is the most


def test_floor_fill_runs_end_to_end(small_object_scene, monkeypatch):
    """The default runs the small object's class at its own level and at the floor level 384; at 384 only boxes of at
    least 0.526 of the photo's side reach the NMS (without ``floor_fill`` smaller ones do too)."""
    import os2d.inference.detect as detect_module

    obj, scene = small_object_scene
    det = Detector.from_weights("default", max_detections=10)
    det.add_class("thing", obj)
    off = det.detect(scene, auto_scale={"floor_level": None})
    merged, seen = detect_module._merged, []
    monkeypatch.setattr(detect_module, "_merged", lambda model, cands, *a, **k: seen.append(cands) or merged(
        model, cands, *a, **k))
    on = det.detect(scene)  # the default: floor 384 with floor_fill
    unfilled = det.detect(scene, auto_scale={"floor_fill": False})
    assert on.levels["thing"] == [384, *off.levels["thing"]] == unfilled.levels["thing"]
    assert torch.allclose(on.boxes_xyxy[0], off.boxes_xyxy[0])  # the small object is still found at its own level
    floor_on, floor_unfilled = ([c for c in cands if round(math.sqrt(c.level_size[0] * c.level_size[1])) == 384][0]
                                for cands in seen)
    fills = [fills_floor(c.boxes_xyxy, scene.size, 384, 2**0.5, 240) for c in (floor_on, floor_unfilled)]
    assert len(floor_on.scores) > 0 and bool(fills[0].all())
    assert not bool(fills[1].all()) and int(fills[1].sum()) == len(floor_on.scores)  # the filter removed just those


def test_up_fill_runs_end_to_end(monkeypatch):
    """``up_steps`` 1 runs the object's class one ladder step above its level too; with ``up_fill`` only the boxes too
    small for the level below (:func:`below_level`) reach the NMS from there, without it larger ones do too."""
    import os2d.inference.detect as detect_module

    obj = textured_object((300, 300), seed=5)
    scene = scene_with(obj, [(300, 200)], size=(960, 720), seed=2)
    det = Detector.from_weights("default", max_detections=10)
    det.add_class("thing", obj)
    base = det.detect(scene)
    merged, seen = detect_module._merged, []
    monkeypatch.setattr(detect_module, "_merged", lambda model, cands, *a, **k: seen.append(cands) or merged(
        model, cands, *a, **k))
    filled = det.detect(scene, auto_scale={"up_steps": 1, "up_fill": True})
    unfilled = det.detect(scene, auto_scale={"up_steps": 1})
    sizes = ladder(det.config.auto_scale)
    top = max(base.levels["thing"])
    up = sizes[sizes.index(top) + 1]
    assert filled.levels["thing"] == sorted([*base.levels["thing"], up]) == unfilled.levels["thing"]
    up_filled, up_unfilled = ([c for c in cands if round(math.sqrt(c.level_size[0] * c.level_size[1])) == up][0]
                              for cands in seen)
    below = [below_level(c.boxes_xyxy, scene.size, up, 2**0.5, 240) for c in (up_filled, up_unfilled)]
    assert bool(below[0].all())
    assert not bool(below[1].all()) and int(below[1].sum()) == len(up_filled.scores)  # the filter removed just those


def test_up_confident_runs_the_up_level_only_for_classes_found_with_a_detection_that_counts(monkeypatch):
    """``up_confident``: the up pairs wait for the planned levels' finished detections and run only for the classes
    with one at the calibration's threshold or above (all count at threshold 0, none above 1)."""
    obj = textured_object((300, 300), seed=5)
    scene = scene_with(obj, [(300, 200)], size=(960, 720), seed=2)
    det = Detector.from_weights("default", max_detections=10)
    det.add_class("thing", obj)
    cal = det.model.calibration
    assert cal is not None
    base = det.detect(scene).levels["thing"]
    eager = det.detect(scene, auto_scale={"up_steps": 1, "up_fill": True}).levels["thing"]
    assert len(eager) == len(base) + 1
    wait = {"up_steps": 1, "up_fill": True, "up_confident": True}
    monkeypatch.setattr(det.model, "calibration", replace(cal, threshold=0.0))
    assert det.detect(scene, auto_scale=wait).levels["thing"] == eager
    monkeypatch.setattr(det.model, "calibration", replace(cal, threshold=1.01))
    assert det.detect(scene, auto_scale=wait).levels["thing"] == base


def test_rescue_pairs_are_the_strong_views_clear_prior_free_peaks():
    """``rescue_confidence``: the demo shelf's cups (plain peak 7 cells, the prior picks 28 / 40 cells -> 384 / 272)
    get the level of that clear peak, 1536, as a rescue pair (``hedge_peak``'s pairs); a strong view whose plain best is
    the smallest template (the small templates' bias, as on a close-up) and a weak view get none. The plan itself is
    unchanged; off there are no pairs (on by default: 0.01, recipes/autoscale_rescue)."""
    scores = torch.tensor([
        [0.28, 0.29, 0.304, 0.29, 0.28, 0.27, 0.262, 0.24],  # plain 7 cells -> 1536, prior 28 -> 384
        [0.27, 0.30, 0.315, 0.30, 0.28, 0.26, 0.237, 0.22],  # plain 7 cells -> 1536, prior 40 -> 272
        [0.33, 0.30, 0.27, 0.25, 0.24, 0.23, 0.22, 0.21],  # plain best: the smallest template (moved to 272)
        [0.12, 0.15, 0.11, 0.10, 0.09, 0.08, 0.07, 0.06],  # weak
    ])
    assert AutoScaleConfig().rescue_confidence == 0.01
    off = plan_levels(scores, AutoScaleConfig(rescue_confidence=None), 15)
    on = plan_levels(scores, AutoScaleConfig(rescue_confidence=0.01), 15)
    assert off.rescue == () and replace(on, rescue=()) == off
    assert on.view_levels == (384, 272, 272, 272)  # at most max_levels 2
    assert on.rescue == ((0, 1536), (1, 1536))
    assert on.rescue == plan_levels(scores, AutoScaleConfig(hedge_peak=True), 15).extra
    assert on.levels() == [272, 384]  # rescue pairs are not planned levels
    near = torch.tensor([[0.28, 0.29, 0.304, 0.29, 0.28, 0.27, 0.262, 0.24]])
    assert plan_levels(near, AutoScaleConfig(rescue_confidence=0.01, size_prior=0.0), 15).rescue == ()
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError):
            AutoScaleConfig(rescue_confidence=bad)


def _rescue_plan(views: int):
    """Every view planned at 384 (where the 120 px object of ``small_object_scene`` is a few px), rescued at 1536."""
    from os2d.inference.autoscale import ScalePlan

    return ScalePlan(768, (384,) * views, (0.3,) * views, rescue=tuple((v, 1536) for v in range(views)))


def test_rescue_runs_only_when_the_planned_levels_find_nothing_credible(small_object_scene, monkeypatch):
    """The rescue levels run after the planned ones when no detection reaches ``rescue_confidence``; the planned
    level's heads are not run again, and the levels are reported. When a detection is credible, nothing more runs."""
    import os2d.inference.detect as detect_module

    obj, scene = small_object_scene
    det = Detector.from_weights("default", max_detections=10)
    det.add_class("thing", obj)
    assert det.calibration is not None
    monkeypatch.setattr(detect_module, "plan_levels", lambda *a, **k: _rescue_plan(det.gallery.kernels.shape[0]))
    runs, heads = [], detect_module.level_candidates
    monkeypatch.setattr(detect_module, "level_candidates", lambda model, image, *a, **k: runs.append(
        round(math.sqrt(image.shape[-1] * image.shape[-2]))) or heads(model, image, *a, **k))
    planned = det.detect(scene, auto_scale={"rescue_confidence": None})  # rescue off: 384 only
    assert runs == [384] and planned.levels == {"thing": [384]}
    runs.clear()
    unsure = det.detect(scene, auto_scale={"rescue_confidence": 0.999999})  # nothing is that sure: rescue
    assert runs == [384, 1536] and unsure.levels == {"thing": [384, 1536]}
    box = unsure.boxes_xyxy[0].tolist()
    ix = max(0.0, min(box[2], 620) - max(box[0], 500))
    iy = max(0.0, min(box[3], 420) - max(box[1], 300))
    assert ix * iy / ((box[2] - box[0]) * (box[3] - box[1]) + 120 * 120 - ix * iy) > 0.6
    assert float(unsure.confidence[0]) > float(planned.confidence[0])
    runs.clear()
    sure = det.detect(scene, auto_scale={"rescue_confidence": 1e-9})  # the planned level's best is credible enough
    assert runs == [384] and torch.equal(sure.scores, planned.scores)
    # without a calibration for the scores (raw scores: verify_rescore 0) there is no judge and no rescue
    runs.clear()
    det.detect(scene, verify_rescore=0, auto_scale={"rescue_confidence": 0.999999})
    assert runs == [384]


def test_rescue_with_negative_exemplars(small_object_scene, monkeypatch):
    """With negatives the judge sees the detections after the negatives' suppression; the rescue still runs."""
    import os2d.inference.detect as detect_module

    obj, scene = small_object_scene
    det = Detector.from_weights("default", max_detections=10)
    det.add_class("thing", obj)
    det.add_negative("thing", textured_object((120, 120), seed=9))
    monkeypatch.setattr(detect_module, "plan_levels", lambda model_scores, *a, **k: _rescue_plan(
        model_scores.shape[0]))
    dets = det.detect(scene, auto_scale={"rescue_confidence": 0.999999})
    assert dets.levels == {"thing": [384, 1536]} and dets.label_names[0] == "thing"
