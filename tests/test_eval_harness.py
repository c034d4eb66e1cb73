"""Evaluation harness: dataset specs, one harness for all methods, JSON / JSON Lines round trips, PR plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import scene_with, textured_object

from os2d.config import InferenceConfig
from os2d.data.spec import (
    FL27_BRANDS,
    FL27_TRAIN_BRANDS,
    FL27_VAL_BRANDS,
    DatasetSpec,
    dataset_image_size,
    load_dataset,
    load_spec,
)
from os2d.data.validate import AnnotationError
from os2d.evaluation.harness import evaluate_method, evaluate_model, read_detections_jsonl
from os2d.evaluation.metrics import evaluate_detections

OBJ_SIZE = (64, 80)
SCENE = (200, 150)


def write_tiny_dataset(root: Path) -> dict[str, Path]:
    """Two classes: a.png has two pastes of class A, b.png one of B, src.png one of A and is the image that
    A's class image was "cropped from" (class CSV column source_image)."""
    root.mkdir(parents=True, exist_ok=True)
    obj_a, obj_b = textured_object(OBJ_SIZE, seed=3), textured_object(OBJ_SIZE, seed=7)
    (root / "cls").mkdir(exist_ok=True)
    obj_a.save(root / "cls" / "A.png")
    obj_b.save(root / "cls" / "B.png")
    scene_with(obj_a, [(10, 10), (120, 60)], size=SCENE, seed=1).save(root / "a.png")
    scene_with(obj_b, [(60, 40)], size=SCENE, seed=2).save(root / "b.png")
    scene_with(obj_a, [(60, 40)], size=SCENE, seed=5).save(root / "src.png")
    w, h = OBJ_SIZE
    rows = ["image,class,x1,y1,x2,y2", f"a.png,A,10,10,{10 + w},{10 + h}", f"a.png,A,120,60,{120 + w},{60 + h}",
            f"b.png,B,60,40,{60 + w},{40 + h}", f"src.png,A,60,40,{60 + w},{40 + h}"]
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    (root / "classes.csv").write_text("class,class_image,source_image\nA,cls/A.png,src.png\nB,cls/B.png,\n")
    return {"boxes": root / "boxes.csv", "classes": root / "classes.csv"}


def _spec(files: dict[str, Path], **kw) -> DatasetSpec:
    return DatasetSpec(format="simple_csv", annotations=str(files["boxes"]), classes=str(files["classes"]), **kw)


# ----------------------------------------------------------------------------------------------- spec


def test_fl27_split_constants():
    assert len(FL27_BRANDS) == 20 and list(FL27_BRANDS) == sorted(FL27_BRANDS)
    assert FL27_VAL_BRANDS == ("Citroen", "Ford", "Intel", "Nike", "Puma", "Texaco")
    assert len(FL27_TRAIN_BRANDS) == 14 and not set(FL27_TRAIN_BRANDS) & set(FL27_VAL_BRANDS)


def test_spec_dict_round_trip_and_validation(tmp_path):
    spec = DatasetSpec(format="reference_csv", annotations="a.csv", image_dir="img", class_image_dir="cls",
                       split="val", class_names=["x", "y"], image_size=1280, name="d")
    assert spec.class_names == ("x", "y")
    d = json.loads(json.dumps(spec.to_dict()))
    assert DatasetSpec.from_dict(d) == spec
    resolved = DatasetSpec.from_dict(d, base_dir=tmp_path)
    assert resolved.annotations == str(tmp_path / "a.csv") and resolved.class_image_dir == str(tmp_path / "cls")
    with pytest.raises(ValueError, match="unknown dataset spec keys"):
        DatasetSpec.from_dict({**d, "imgsize": 3})
    with pytest.raises(ValueError, match="format must be one of"):
        DatasetSpec(format="voc", annotations="a")
    with pytest.raises(ValueError, match="needs 'classes'"):
        DatasetSpec(format="simple_csv", annotations="a.csv")
    with pytest.raises(ValueError, match="needs 'image_dir' and 'class_image_dir'"):
        DatasetSpec(format="coco", annotations="a.json")
    with pytest.raises(ValueError, match="only used by reference_csv"):
        DatasetSpec(annotations="a.csv", classes="c.csv", split="train")
    with pytest.raises(ValueError, match="source_image"):
        DatasetSpec(format="coco", annotations="a", image_dir="i", class_image_dir="c", exclude_class_sources=True)
    with pytest.raises(ValueError, match="image_size"):
        DatasetSpec(annotations="a.csv", classes="c.csv", image_size=8)
    with pytest.raises(ValueError, match="duplicates"):
        DatasetSpec(annotations="a.csv", classes="c.csv", class_names=["a", "a"])


def test_load_spec_yaml_relative_paths(tmp_path):
    files = write_tiny_dataset(tmp_path / "data")
    (tmp_path / "spec.yaml").write_text("format: simple_csv\nannotations: data/boxes.csv\nclasses: data/classes.csv\n"
                                        "class_names: [A]\nimage_size: 300\n")
    spec = load_spec(tmp_path / "spec.yaml")
    assert spec.annotations == str(tmp_path / "data" / "boxes.csv") and spec.class_names == ("A",)
    ds = load_dataset(spec)
    assert ds.class_names == ["A"] and len(ds.images) == 3  # b.png stays, without boxes
    assert dataset_image_size(spec, ds) == 300
    assert files["boxes"].is_file()
    (tmp_path / "bad.yaml").write_text("format: simple_csv\nannotations: x.csv\nclasses: c.csv\nbogus: 1\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown dataset spec keys"):
        load_spec(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError):
        load_spec(tmp_path / "missing.yaml")


def test_load_dataset_subset_and_source_exclusion(tmp_path):
    files = write_tiny_dataset(tmp_path)
    full = load_dataset(_spec(files))
    assert [im.image_id for im in full.images] == ["a.png", "b.png", "src.png"]
    ds = load_dataset(_spec(files, exclude_class_sources=True))
    assert [im.image_id for im in ds.images] == ["a.png", "b.png"]
    only_b = load_dataset(_spec(files, class_names=("B",), exclude_class_sources=True))
    # A's source image stays when A is not evaluated; A's boxes are dropped, its images stay as negatives
    assert [im.image_id for im in only_b.images] == ["a.png", "b.png", "src.png"]
    assert [im.num_boxes for im in only_b.images] == [0, 1, 0]
    with pytest.raises(AnnotationError, match=r"unknown class name\(s\) \['C'\]"):
        load_dataset(_spec(files, class_names=("C",)))
    # the image size that brings the median object (sqrt(64*80) = 71.6 px in 200x150 images) to 240 px
    assert dataset_image_size(_spec(files), full) == round(math.sqrt(200 * 150) * 240 / math.sqrt(64 * 80))


def test_exclude_sources_needs_source_column(tmp_path):
    files = write_tiny_dataset(tmp_path)
    files["classes"].write_text("name,path\nA,cls/A.png\nB,cls/B.png\n")
    with pytest.raises(AnnotationError, match="source_image"):
        load_dataset(_spec(files, exclude_class_sources=True))


# -------------------------------------------------------------------------------------------- harness


@pytest.fixture
def tiny(tmp_path):
    files = write_tiny_dataset(tmp_path / "data")
    return load_dataset(_spec(files, exclude_class_sources=True))


def test_template_harness_round_trips(tiny, tmp_path):
    side = int(round(math.sqrt(OBJ_SIZE[0] * OBJ_SIZE[1])))
    config = InferenceConfig(image_size=None, scales=(1.0,), max_detections=10)
    path = tmp_path / "out" / "detections.jsonl"
    ev = evaluate_method("template", tiny, config, progress=False, detections_path=path,
                         method_options={"class_image_size": side})
    assert ev.method == "template" and ev.image_ids == ["a.png", "b.png"]
    assert ev.result.map == pytest.approx(1.0) and ev.result.recall == pytest.approx(1.0)
    assert ev.seconds_per_image > 0 and len(ev.detections) == 2

    d = ev.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d  # strictly JSON (no NaN, no numpy)
    assert d["metrics"]["mAP@0.50"] == pytest.approx(1.0)
    assert d["metrics"]["per_class"]["A"]["num_gt"] == 2 and d["metrics"]["per_class"]["B"]["num_tp"] == 1
    assert d["config"]["inference"]["scales"] == [1.0] and d["config"]["method"]["class_image_size"] == side
    assert d["dataset"]["images"] == 2 and d["timing"]["num_images"] == 2 and d["classes"] == ["A", "B"]

    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["image_id"] == "a.png"
    back = read_detections_jsonl(path, ev.class_names)
    dets = [back[i] for i in ev.image_ids]
    again = evaluate_detections(dets, tiny.images, 2, class_names=ev.class_names)
    assert again.to_dict() == ev.result.to_dict()
    for a, b in zip(dets, ev.detections, strict=True):
        assert a.boxes_xyxy.tolist() == b.boxes_xyxy.tolist() and a.label_names == b.label_names


def test_read_detections_rejects_unknown_label(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"image_id": "x", "width": 4, "height": 4, "detections": [
        {"label": "Z", "score": 1.0, "box_xyxy": [0, 0, 1, 1]}]}) + "\n")
    with pytest.raises(ValueError, match=r"d.jsonl:1: .*unknown label 'Z'"):
        read_detections_jsonl(p, ["A"])


def test_sift_harness_and_max_images(tiny):
    ev = evaluate_method("sift", tiny, InferenceConfig(image_size=None), progress=False, max_images=1)
    assert ev.image_ids == ["a.png"] and ev.dataset["images"] == 1
    assert ev.result.ap_per_class[0] == pytest.approx(1.0)  # both pastes of A
    assert math.isnan(ev.result.ap_per_class[1])  # no B in the first image
    with pytest.raises(ValueError, match="max_images"):
        evaluate_method("sift", tiny, InferenceConfig(), progress=False, max_images=0)


def test_evaluate_model_restores_training_mode(toy_model, tiny):
    toy_model.train()
    config = InferenceConfig(image_size=None, scales=(240 / math.sqrt(OBJ_SIZE[0] * OBJ_SIZE[1]),),
                             max_detections=20)
    ev = evaluate_model(toy_model, tiny, config, progress=False)
    assert toy_model.training  # put back for the training loop
    assert ev.method == "os2d" and len(ev.detections) == 2
    assert all(d.image_size == SCENE for d in ev.detections)
    assert ev.class_seconds > 0 and 0 <= ev.result.map <= 1
    assert ev.joint_curve is not None and len(ev.joint_curve.recall) > 0


def test_sliding_methods_in_harness(toy_model, tiny):
    config = InferenceConfig(image_size=None, scales=(240 / math.sqrt(OBJ_SIZE[0] * OBJ_SIZE[1]),),
                             max_detections=20)
    ar = evaluate_method("sliding-ar", tiny, config, model=toy_model, progress=False)
    assert ar.result.map > 0.5  # exact pastes rank near the top even with random toy features
    sq = evaluate_method("sliding-square", tiny, config, model=toy_model, progress=False)
    assert sq.method == "sliding-square" and sq.config["method"]["transform"] == "IdentityTransform"
    with pytest.raises(ValueError, match="needs a model"):
        evaluate_method("sliding-ar", tiny, config, progress=False)


def test_image_size_mismatch_is_an_error(tiny):
    tiny.images[0].width = 999
    with pytest.raises(ValueError, match="differs from the annotation"):
        evaluate_method("template", tiny, InferenceConfig(image_size=None), progress=False)


def test_pr_plots(tiny, tmp_path):
    pytest.importorskip("matplotlib")
    from os2d.evaluation.plots import plot_pr_curves, safe_filename

    ev = evaluate_method("sift", tiny, InferenceConfig(image_size=None), progress=False)
    paths = plot_pr_curves(ev, tmp_path / "pr")
    assert [p.name for p in paths] == ["000_A.png", "001_B.png", "overall.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000
    assert safe_filename("Coca Cola/x?") == "Coca_Cola_x"


def test_no_nan_in_dict_without_gt(tiny):
    only_b = tiny.subset(image_ids=["a.png"])  # B has no GT there: its AP is NaN -> None in JSON
    ev = evaluate_method("template", only_b, InferenceConfig(image_size=None), progress=False)
    d = ev.to_dict()
    assert d["metrics"]["per_class"]["B"]["AP@0.50"] is None
    json.dumps(d, allow_nan=False)
    assert np.isnan(ev.result.ap_per_class[1])
