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
