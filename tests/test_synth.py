"""Synthetic data generator: geometry, compositing and occlusion bookkeeping, the written dataset, the CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from helpers import textured_object
from PIL import Image

from os2d.apps.cli.main import main
from os2d.data import read_simple_csv
from os2d.synth import Scene, SynthConfig, generate_dataset, generate_sample
from os2d.synth.geometry import (
    apply_homography,
    homography,
    perspective_quad,
    quad_area,
    rect_corners,
)
from os2d.synth.sources import class_image_list, load_class_image

PLAIN = dict(shelf_prob=0.0, scatter_objects=(1, 1), lookalike_prob=0.0, flip_prob=0.0, blur_prob=0.0,
             max_noise_std=0.0, lighting=0.0, colour_jitter=0.0, occluder_prob=0.0, feather_px=0.0)


@pytest.fixture
def inputs(tmp_path):
    """Three class images (one PNG with transparent margins) and two background photos."""
    cls = tmp_path / "classes"
    bg = tmp_path / "backgrounds"
    cls.mkdir()
    bg.mkdir()
    textured_object((60, 90), seed=1).save(cls / "alpha.jpg")
    textured_object((80, 60), seed=2).save(cls / "beta.png")
    logo = Image.new("RGBA", (100, 80), (0, 0, 0, 0))
    logo.paste(textured_object((60, 40), seed=3), (20, 30))
    logo.save(cls / "gamma.png")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).resize((320, 240)).save(bg / f"b{i}.jpg")
    return cls, bg


def _load_classes(cls_dir):
    return [[load_class_image(n, p)] for n, p in class_image_list(cls_dir)]


# -------------------------------------------------------------------------------------------- geometry


def test_homography_maps_the_four_points():
    src = rect_corners(50, 30)
    dst = np.array([[10.0, 5.0], [70.0, 12.0], [65.0, 60.0], [8.0, 44.0]])
    np.testing.assert_allclose(apply_homography(homography(src, dst), src), dst, atol=1e-9)
    with pytest.raises(ValueError, match="degenerate"):
        homography(src, np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))


def test_perspective_quad_without_rotation_is_the_rectangle():
    quad = perspective_quad(0.5, 0.0, 0.0, 0.0)
    np.testing.assert_allclose(quad, [[-0.25, -0.5], [0.25, -0.5], [0.25, 0.5], [-0.25, 0.5]], atol=1e-12)
    turned = perspective_quad(0.5, 30.0, 0.0, 0.0)
    heights = turned[2, 1] - turned[1, 1], turned[3, 1] - turned[0, 1]
    assert heights[0] != pytest.approx(heights[1])  # yaw: the nearer side looks taller
    assert quad_area(rect_corners(4, 3)) == pytest.approx(12.0)


# ------------------------------------------------------------------------------------------ compositing


def _grey_scene(w=200, h=160):
    return Scene(Image.new("RGB", (w, h), (128, 128, 128)))


def test_paste_puts_the_object_inside_its_box():
    scene = _grey_scene()
    red = Image.new("RGBA", (40, 20), (255, 0, 0, 255))
    quad = rect_corners(40, 20) + np.array([30.0, 50.0])
    scene.paste(red, quad, label=0, feather_px=0.0)
    img = np.asarray(scene.render(np.random.default_rng(0), lighting=0.0, noise_std=0.0)).astype(int)
    assert (img[50:70, 30:70] == [255, 0, 0]).all()
    changed = np.argwhere(np.abs(img - 128).sum(-1) > 0)
    assert changed.min(0).tolist() == [50, 30] and changed.max(0).tolist() == [69, 69]
    (a,) = scene.annotations(difficult_occlusion=0.5, min_box_px=8)
    assert a.box_xyxy == (30.0, 50.0, 70.0, 70.0) and not a.difficult and a.occluded == pytest.approx(0.0)


@pytest.mark.parametrize("cover,difficult", [(0.2, False), (0.7, True)])
def test_occluded_share_decides_difficult(cover, difficult):
    scene = _grey_scene()
    scene.paste(Image.new("RGBA", (100, 50), (255, 0, 0, 255)), rect_corners(100, 50) + 20, label=1, feather_px=0)
    occluder = Image.new("RGBA", (int(100 * cover), 70), (0, 0, 255, 255))
    scene.paste(occluder, rect_corners(100 * cover, 70) + np.array([20.0, 10.0]), feather_px=0)
    (a,) = scene.annotations(difficult_occlusion=0.5, min_box_px=8)
    assert a.occluded == pytest.approx(cover, abs=0.01)
    assert a.difficult is difficult
    assert a.box_xyxy == (20.0, 20.0, 120.0, 70.0)  # the whole object's extent, also behind the occluder


def test_truncated_by_the_border_is_clipped_and_counts_as_occluded():
    scene = _grey_scene()
    scene.paste(Image.new("RGBA", (60, 40), (0, 255, 0, 255)), rect_corners(60, 40) + np.array([170.0, 10.0]),
                label=0, feather_px=0)
    scene.paste(Image.new("RGBA", (30, 30), (0, 255, 0, 255)), rect_corners(30, 30) + np.array([300.0, 10.0]),
                label=0, feather_px=0)  # entirely outside: not annotated
    (a,) = scene.annotations(difficult_occlusion=0.4, min_box_px=8)
    assert a.box_xyxy == (170.0, 10.0, 200.0, 50.0)
    assert a.occluded == pytest.approx(0.5, abs=0.01) and a.difficult


def test_unlabelled_layers_are_not_annotated_and_tiny_boxes_are_difficult():
    scene = _grey_scene()
    scene.paste(Image.new("RGBA", (30, 30), (9, 9, 9, 255)), rect_corners(30, 30) + 5, label=-1)
    scene.paste(Image.new("RGBA", (6, 30), (9, 9, 9, 255)), rect_corners(6, 30) + 100, label=2)
    (a,) = scene.annotations(difficult_occlusion=0.5, min_box_px=8)
    assert a.label == 2 and a.difficult


def test_generated_box_matches_the_changed_pixels(inputs):
    cls, _ = inputs
    bg = cls.parent / "flat"
    bg.mkdir()
    Image.new("RGB", (300, 300), (0, 255, 0)).save(bg / "flat.png")
    classes = _load_classes(cls)
    config = SynthConfig(image_size=256, aspect_range=(1.0, 1.0), object_size=(0.3, 0.4), max_roll_deg=15, **PLAIN)
    checked = 0
    for seed in range(6):
        sample = generate_sample(classes, [bg / "flat.png"], config, np.random.default_rng(seed))
        (a,) = sample.annotations
        if a.occluded > 0:  # cut by the border: the visible part is smaller than the box
            continue
        img = np.asarray(sample.image).astype(int)
        ys, xs = np.nonzero(np.abs(img - [0, 255, 0]).sum(-1) > 30)
        x1, y1, x2, y2 = a.box_xyxy
        assert abs(xs.min() - x1) <= 1.5 and abs(xs.max() + 1 - x2) <= 1.5
        assert abs(ys.min() - y1) <= 1.5 and abs(ys.max() + 1 - y2) <= 1.5
        checked += 1
    assert checked >= 2


# --------------------------------------------------------------------------------------------- dataset


def test_dataset_round_trip(inputs, tmp_path):
    cls, bg = inputs
    out = tmp_path / "synth"
    config = SynthConfig(image_size=256, scatter_objects=(2, 5), shelf_rows=(1, 2))
    summary = generate_dataset(cls, bg, out, num_images=5, config=config, seed=3, preview=4, progress=False)
    assert summary["images"] == 5 and summary["classes"] == 3 and summary["boxes"] >= 5
    ds = read_simple_csv(out / "annotations.csv", out / "class_images.csv")
    assert [c.name for c in ds.classes] == ["alpha", "beta", "gamma"]
    assert len(ds.images) == 5 and ds.num_boxes == summary["boxes"]
    with open(out / "annotations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_image: dict[str, list[dict]] = {}
    for r in rows:
        by_image.setdefault(r["image"], []).append(r)
    for im in ds.images:
        w, h = Image.open(im.path).size
        assert (im.width, im.height) == (w, h) and max(w, h) == 256
        written = by_image[im.image_id]
        expected = np.array([[float(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in written], np.float32)
        np.testing.assert_array_equal(im.boxes_xyxy, expected)  # no clipping or rounding on the way back
        assert (im.boxes_xyxy[:, :2] >= 0).all() and (im.boxes_xyxy[:, 2] <= w).all()
        assert (im.boxes_xyxy[:, 3] <= h).all()
        assert (im.boxes_xyxy[:, 2:] > im.boxes_xyxy[:, :2]).all()
        assert [ds.classes[i].name for i in im.labels] == [r["class"] for r in written]
        assert im.difficult.tolist() == [r["difficult"] == "1" for r in written]
        assert (~im.difficult).any()  # every image has a clean box
    gamma = Image.open(out / "class_images" / "gamma.png")
    assert gamma.size == (60, 40)  # cropped to its opaque part
    assert Image.open(out / "preview.jpg").size[0] > 0
    assert (out / "synth_config.json").is_file()


def test_same_seed_same_bytes(inputs, tmp_path):
    cls, bg = inputs
    config = SynthConfig(image_size=200)
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        generate_dataset(cls, bg, tmp_path / name, num_images=3, config=config, seed=seed, preview=0, progress=False)
    a, b, c = ((tmp_path / n / "annotations.csv").read_bytes() for n in "abc")
    assert a == b and a != c
    for i in range(3):
        img = f"images/{i:06d}.jpg"
        assert (tmp_path / "a" / img).read_bytes() == (tmp_path / "b" / img).read_bytes()


def test_sources_errors(tmp_path):
    d = tmp_path / "dup"
    (d / "x").mkdir(parents=True)
    textured_object(seed=1).save(d / "same.jpg")
    textured_object(seed=2).save(d / "x" / "same.png")
    with pytest.raises(ValueError, match="two class images named 'same'"):
        class_image_list(d)
    bad = tmp_path / "classes.csv"
    bad.write_text("class_name,file\na,b.jpg\n")
    with pytest.raises(ValueError, match="name,path"):
        class_image_list(bad)
    good = tmp_path / "good.csv"
    good.write_text("name,path\nthing,dup/same.jpg\nthing,dup/x/same.png\n")
    assert [n for n, _ in class_image_list(good)] == ["thing", "thing"]
    with pytest.raises(ValueError, match="not found"):
        class_image_list(tmp_path / "missing")
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(clear)
    with pytest.raises(ValueError, match="fully transparent"):
        load_class_image("clear", clear)


def test_config_validation():
    with pytest.raises(ValueError, match="facings"):
        SynthConfig(facings=(3, 1))
    with pytest.raises(ValueError, match="shelf_prob"):
        SynthConfig(shelf_prob=1.5)
    with pytest.raises(ValueError, match="unknown"):
        SynthConfig.from_dict({"nope": 1})
    assert SynthConfig.from_dict(SynthConfig().to_dict()) == SynthConfig()


def test_cli(inputs, tmp_path, capsys):
    cls, bg = inputs
    out = tmp_path / "cli"
    args = ["synth", "--class-images", str(cls), "--backgrounds", str(bg), "--out", str(out), "--num-images", "2",
            "--image-size", "160", "--preview", "2", "--config-json", '{"facings": [2, 3]}']
    assert main(args) == 0
    assert "2 images" in capsys.readouterr().out
    assert len(list((out / "images").glob("*.jpg"))) == 2
    assert main(args) == 2  # not empty
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--num-images", "1"]) == 0
    assert len(list((out / "images").glob("*.jpg"))) == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    assert main(args[:6] + [str(other), "--overwrite"]) == 2 and (other / "keep.txt").exists()
    assert main(["synth", "--class-images", str(tmp_path / "none"), "--backgrounds", str(bg), "--out",
                 str(tmp_path / "o2")]) == 2
    assert main(args[:6] + [str(tmp_path / "o3"), "--config-json", '{"facings": 3}']) == 2


def test_variant_changes_one_band_and_keeps_the_outline():
    from os2d.synth.appearance import variant

    base = Image.new("RGBA", (40, 100), (200, 40, 40, 255))
    base.putpixel((0, 0), (200, 40, 40, 0))  # a transparent corner: the outline
    donor = Image.new("RGB", (10, 10), (20, 20, 220))
    for seed in range(6):
        out = np.asarray(variant(base, donor, np.random.default_rng(seed)))
        changed = (out[..., :3] != np.asarray(base)[..., :3]).any(axis=(1, 2))  # per row
        rows = np.flatnonzero(changed)
        assert out[0, 0, 3] == 0 and (out[..., 3].ravel()[1:] == 255).all()
        assert 20 <= len(rows) <= 40 and rows.max() - rows.min() + 1 == len(rows)  # one band of 20-40% of h
        assert rows.min() >= 15 and rows.max() < 85


def test_variant_classes_are_labelled_written_and_share_scenes(inputs, tmp_path):
    cls, bg = inputs
    out = tmp_path / "v"
    config = SynthConfig(image_size=256, variant_prob=1.0, classes_per_image=(1, 1), lookalike_prob=0.0)
    summary = generate_dataset(cls, bg, out, num_images=8, config=config, seed=5, preview=0, progress=False)
    ds = read_simple_csv(out / "annotations.csv", out / "class_images.csv")
    names = [c.name for c in ds.classes]
    assert names == ["alpha", "beta", "gamma", "alpha-variant", "beta-variant", "gamma-variant"]
    assert summary["classes"] == 6
    for n in ("alpha", "gamma"):  # the variant's class image is its base with one band changed, same size
        a, b = (np.asarray(Image.open(out / "class_images" / f"{m}.png").convert("RGB")) for m in (n, f"{n}-variant"))
        assert a.shape == b.shape and (a != b).any() and (a == b).all(axis=(1, 2)).mean() > 0.5
    # one class drawn per scene, its variant added in most: base and variant share images
    together = sum(len({names[i].removesuffix("-variant") for i in im.labels}) < len(set(im.labels.tolist()))
                   for im in ds.images)
    assert together >= 3
    assert SynthConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="variant_prob"):
        SynthConfig(variant_prob=1.5)
