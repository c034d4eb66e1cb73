"""The recipes' data generators: made-up logos (the unseen-class tuning set) and label-free patch classes."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unseen_logos_are_deterministic_rgba_logos_cropped_to_content() -> None:
    logos = _load("unseen_logos")
    fonts = logos.fonts()
    rng1, rng2 = random.Random(7), random.Random(7)
    first = [logos.logo(rng1, fonts) for _ in range(8)]
    again = [logos.logo(rng2, fonts) for _ in range(8)]
    assert all(im.mode == "RGBA" for im in first)
    for x, y in zip(first, again, strict=True):
        assert x.size == y.size and np.array_equal(np.asarray(x), np.asarray(y))  # same seed, same logo
        alpha = np.asarray(x)[..., 3]
        assert x.size[0] >= 40 and x.size[1] >= 30
        assert alpha[0].any() and alpha[-1].any() and alpha[:, 0].any() and alpha[:, -1].any()  # cropped to content
    assert len({im.size for im in first}) > 4  # words, fonts and layouts vary


def test_unseen_logo_words_are_made_up_and_pronounceable() -> None:
    logos = _load("unseen_logos")
    rng = random.Random(0)
    words = [logos.word(rng) for _ in range(50)]
    assert all(4 <= len(w) <= 9 and w.isalpha() for w in words)
    assert len(set(w.lower() for w in words)) >= 45


def test_patch_classes_crop_textured_patches_and_skip_flat_ones() -> None:
    patches = _load("patch_classes")
    rng = np.random.default_rng(0)
    textured = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    flat = Image.new("RGB", (640, 480), (120, 130, 140))
    crops = [patches.patch(textured, random.Random(s)) for s in range(20)]
    assert all(c is not None and max(c.size) <= 320 for c in crops)
    sides = [min(c.size) for c in crops]
    assert min(sides) >= 0.2 * 480 * 0.5  # 25-60% of the shorter side, the aspect spread over 0.4-3
    assert patches.patch(flat, random.Random(0)) is None


@pytest.mark.parametrize("name", ["unseen_logos", "patch_classes"])
def test_recipe_data_scripts_have_a_usage_line(name: str) -> None:
    assert "python recipes/" in (_load(name).__doc__ or "")


def _load_path(relative: str):
    path = RECIPES / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_package_tile_keeps_the_product_box_on_a_blurred_cell() -> None:
    data = _load_path("real_packages/make_data.py")
    tile = data.TILE
    photo = np.zeros((tile, tile, 3), np.uint8)
    photo[:, :, 2] = 200  # blue shelf
    photo[100:260, 120:220] = (230, 20, 20)  # the red product
    row = {"x1": "120", "y1": "100", "x2": "220", "y2": "260"}
    for seed in range(10):
        cell, (x1, y1, x2, y2) = data.product_tile(Image.fromarray(photo), row, random.Random(seed))
        assert cell.size == (tile, tile)
        assert 0 <= x1 < x2 <= tile and 0 <= y1 < y2 <= tile
        assert abs((x2 - x1) / (y2 - y1) - 100 / 160) < 0.03  # the product's aspect is kept
        inside = np.asarray(cell)[round(y1) + 2:round(y2) - 2, round(x1) + 2:round(x2) - 2]
        assert (inside[..., 0] > 200).mean() > 0.95  # the box holds the product
        side = max(x2 - x1, y2 - y1) * (1 + 2 * data.MARGIN)
        assert 0.7 * tile <= side <= 0.96 * tile


def test_real_package_mosaics_use_every_photo_once_with_look_alikes_together() -> None:
    data = _load_path("real_packages/make_data.py")
    rows = [{"image": f"{g}-{c}-{i}", "class": f"{g}-{c}", "coarse": g} for g in ("milk", "juice")
            for c in range(9) for i in range(3)]  # 2 coarse groups x 9 products x 3 photos
    groups = data.group_tiles(rows, random.Random(0))
    n = data.GRID * data.GRID
    assert all(len(g) == n for g in groups)
    assert sorted(r["image"] for g in groups for r in g) == sorted(r["image"] for r in rows)
    for g in groups:
        assert len({r["coarse"] for r in g}) == 1  # one coarse group per mosaic
        assert len({r["class"] for r in g}) == n  # nine different products where the group has nine


def test_model_rule_passes_only_when_all_three_checks_hold(tmp_path: Path) -> None:
    rule = _load("model_rule")

    def log(name: str, arm: str, values: dict[str, float]) -> Path:
        p = tmp_path / name
        p.write_text("\n".join(f"| {s} | 10 | {arm} | {v:.2f} (+0.00) | 1.0 (+0.0) | 1.00 (+0.00) | 1.0 | 1.000x | "
                               f"100.0% / 100.0% |" for s, v in values.items()))
        return p

    sets = ("unseen", "synth-val", *rule.FL27)
    base = log("base.log", "default", dict.fromkeys(sets, 50.0))
    good = log("good.log", "new", {**dict.fromkeys(sets, 50.0), "unseen": 51.0, "synth-val": 49.8})
    worse_fl27 = log("bad.log", "new", {**dict.fromkeys(sets, 48.9), "unseen": 52.0, "synth-val": 50.0})
    assert rule.judge(rule.rows(base), rule.rows(good), "default", "new")
    assert not rule.judge(rule.rows(base), rule.rows(worse_fl27), "default", "new")
