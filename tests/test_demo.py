"""The built-in demo: a procedurally drawn shelf scene, and detection of its planted classes end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from os2d.apps.demo.run import demo_image_size, run_demo, topk_recall
from os2d.apps.demo.scene import INSTANCES_PER_CLASS, DemoScene, make_demo_scene
from os2d.ops import box_iou
from os2d.results import Detections


@pytest.fixture(scope="module")
def scene() -> DemoScene:
    return make_demo_scene(0)


def test_scene_is_deterministic_for_a_seed(scene):
    again = make_demo_scene(0)
    assert np.array_equal(np.asarray(scene.image), np.asarray(again.image))
    assert scene.boxes == again.boxes
    for name, img in scene.class_images.items():
        assert np.array_equal(np.asarray(img), np.asarray(again.class_images[name]))
    other = make_demo_scene(1)
    assert not np.array_equal(np.asarray(scene.image), np.asarray(other.image))
    assert other.boxes != scene.boxes


def test_scene_contents(scene):
    assert isinstance(scene.image, Image.Image) and scene.image.mode == "RGB"
    w, h = scene.image.size
    assert 1000 <= w <= 1600 and 600 <= h <= 1000
    assert 2 <= len(scene.class_images) <= 3
    names = [n for n, _ in scene.boxes]
    for k, name in enumerate(scene.class_images):
        assert names.count(name) == INSTANCES_PER_CLASS[k]
        assert 3 <= names.count(name) <= 4
    assert len(scene.distractor_boxes) >= 3


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_boxes_inside_image_and_not_overlapping(seed):
    sc = make_demo_scene(seed)
    w, h = sc.image.size
    all_boxes = [b for _, b in sc.boxes] + list(sc.distractor_boxes)
    for x1, y1, x2, y2 in all_boxes:
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert 120 <= np.sqrt((x2 - x1) * (y2 - y1)) <= 280  # 0.8-1.2 x ~190 px
    iou = box_iou(torch.tensor(all_boxes), torch.tensor(all_boxes))
    assert torch.equal(iou, torch.eye(len(all_boxes)))  # every box touches only itself


def test_class_images_are_textured_and_distinct(scene):
    arrays = {}
    for name, img in scene.class_images.items():
        assert img.mode == "RGB"
        assert 150 <= min(img.size) and max(img.size) <= 300
        a = np.asarray(img).astype(np.float32)
        assert a.std() > 30  # not a uniform box
        # many distinct colours and strong edges (texture)
        assert len(np.unique(a.reshape(-1, 3) // 16, axis=0)) > 20
        assert np.abs(np.diff(a, axis=1)).mean() > 5
        arrays[name] = np.asarray(img.resize((64, 64))).astype(np.float32)
    names = list(arrays)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(arrays[a] - arrays[b]).mean() > 30


def test_planted_instances_look_like_their_class(scene):
    # The crop of each planted instance is closer to its own class image than to the others.
    for name, (x1, y1, x2, y2) in scene.boxes:
        crop = np.asarray(scene.image.crop((int(x1), int(y1), int(x2), int(y2))).resize((48, 48))).astype(float)
        dist = {n: np.abs(crop - np.asarray(im.resize((48, 48))).astype(float)).mean()
                for n, im in scene.class_images.items()}
        assert min(dist, key=dist.get) == name


def test_topk_recall():
    gt = [("a", (0, 0, 10, 10)), ("a", (20, 0, 30, 10)), ("b", (0, 20, 10, 30)), ("c", (0, 0, 5, 5))]
    dets = Detections.from_records([
        {"label": "a", "score": 0.9, "box_xyxy": [0, 0, 10, 10]},
        {"label": "a", "score": 0.8, "box_xyxy": [1, 0, 11, 10]},  # duplicate: takes the 2nd top-k slot
        {"label": "b", "score": 0.5, "box_xyxy": [0, 20, 10, 30]},
        {"label": "a", "score": 0.1, "box_xyxy": [20, 0, 30, 10]},  # outside the top-2
    ], ["a", "b"], (40, 40))
    r = topk_recall(gt, dets)
    assert r["a"] == {"instances": 2, "found": 1, "recall": 0.5}
    assert r["b"] == {"instances": 1, "found": 1, "recall": 1.0}
    assert r["c"] == {"instances": 1, "found": 0, "recall": 0.0}  # a class without detections
    # the IoU threshold is inclusive: [0,0,10,10] vs [5,0,15,10] has IoU 1/3
    shifted = Detections.from_records([{"label": "a", "score": 1.0, "box_xyxy": [5, 0, 15, 10]}], ["a"], (40, 40))
    assert topk_recall(gt[:1], shifted, iou_threshold=1 / 3)["a"]["found"] == 1
    assert topk_recall(gt[:1], shifted, iou_threshold=0.34)["a"]["found"] == 0


def test_demo_image_size_puts_objects_near_model_size(scene):
    w, h = scene.image.size
    r = demo_image_size(scene) / np.sqrt(w * h)
    sizes = [np.sqrt((b[2] - b[0]) * (b[3] - b[1])) * r for _, b in scene.boxes]
    assert 200 <= np.median(sizes) <= 280


@pytest.mark.slow  # ~8 s of CPU (one thread); more on a busy machine
def test_run_demo_end_to_end(tmp_path):
    summary = run_demo(tmp_path)
    for name in ("demo_scene.png", "demo_detections.png", "demo_detections.json"):
        assert (tmp_path / name).is_file()
    with Image.open(tmp_path / "demo_scene.png") as im:
        size = im.size
    with Image.open(tmp_path / "demo_detections.png") as im:
        assert im.width == size[0] and im.height > size[1]  # scene + gallery strip
    data = json.loads((tmp_path / "demo_detections.json").read_text())
    assert data["version"] == 1 and len(data["images"]) == 1 and data["classes"] == summary["classes"]
    rec = data["images"][0]
    assert (rec["width"], rec["height"]) == size
    assert rec["detections"] and set(rec["detections"][0]) == {"label", "score", "confidence", "box_xyxy", "corners_xy"}
    scores = [d["score"] for d in rec["detections"]]
    assert scores == sorted(scores, reverse=True)
    assert summary["num_instances"] == sum(INSTANCES_PER_CLASS)
    assert set(summary["recall"]) == set(summary["classes"])
    assert summary["overall_recall"] >= 0.8, summary["recall"]
