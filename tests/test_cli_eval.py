"""``os2d eval`` and ``os2d dataset-stats`` end to end on a generated dataset (via ``cli.main``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import scene_with, textured_object

from os2d.apps.cli.main import main

OBJ_SIZE = (64, 80)


def _write(root: Path) -> tuple[Path, Path]:
    obj_a, obj_b = textured_object(OBJ_SIZE, seed=3), textured_object(OBJ_SIZE, seed=7)
    root.mkdir(parents=True, exist_ok=True)
    obj_a.save(root / "A.png")
    obj_b.save(root / "B.png")
    scene_with(obj_a, [(10, 10), (120, 60)], size=(200, 150), seed=1).save(root / "a.png")
    scene_with(obj_b, [(60, 40)], size=(200, 150), seed=2).save(root / "b.png")
    w, h = OBJ_SIZE
    (root / "boxes.csv").write_text(
        "image,class,x1,y1,x2,y2\n"
        f"a.png,A,10,10,{10 + w},{10 + h}\na.png,A,120,60,{120 + w},{60 + h}\nb.png,B,60,40,{60 + w},{40 + h}\n")
    (root / "classes.csv").write_text("name,path\nA,A.png\nB,B.png\n")
    return root / "boxes.csv", root / "classes.csv"


@pytest.fixture
def data(tmp_path):
    return _write(tmp_path / "data")


def test_eval_sift_writes_outputs(data, tmp_path, capsys):
    boxes, classes = data
    out = tmp_path / "out"
    rc = main(["eval", "--boxes", str(boxes), "--classes", str(classes), "--method", "sift", "--image-size", "0",
               "--output-dir", str(out), "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "sift on boxes: 2 images, 2 classes, image size None" in captured.out
    assert "mAP@0.50 100.0 | mAPw@0.50 100.0 | recall@0.50 100.0" in captured.out
    lines = captured.out.splitlines()
    assert any(ln.split()[:2] == ["A", "2"] for ln in lines)  # per-class row: name, GT
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["mAP@0.50"] == pytest.approx(1.0)
    assert metrics["config"]["dataset_spec"]["format"] == "simple_csv" and metrics["config"]["weights"] is None
    assert len((out / "detections.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in (out / "pr").iterdir()) == ["000_A.png", "001_B.png", "overall.png"]


def test_eval_folder_reloads_from_another_working_directory(data, tmp_path, monkeypatch, capsys):
    """Relative --boxes/--classes/--image-dir are recorded as absolute paths: the evaluation folder (os2d weights
    calibrate, --check) reloads its dataset from any working directory."""
    from os2d.evaluation.runs import load_eval_run

    boxes, _ = data
    monkeypatch.chdir(boxes.parent)
    out = tmp_path / "out"
    assert main(["eval", "--boxes", "boxes.csv", "--classes", "classes.csv", "--image-dir", ".", "--method", "sift",
                 "--image-size", "0", "--output-dir", str(out), "-q", "--no-plots"]) == 0
    spec = json.loads((out / "metrics.json").read_text())["config"]["dataset_spec"]
    assert spec["annotations"] == str(boxes.resolve()) and spec["image_dir"] == str(boxes.parent.resolve())
    monkeypatch.chdir(tmp_path)  # a folder with neither CSV
    run = load_eval_run(out)
    assert len(run.images) == len(run.detections) == 2
    capsys.readouterr()


def test_eval_with_spec_file_and_model_method(data, tmp_path, capsys):
    boxes, classes = data
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"format: simple_csv\nannotations: {boxes}\nclasses: {classes}\nclass_names: [A]\n"
                    "image_size: 180\n")
    out = tmp_path / "out2"
    rc = main(["eval", "--dataset", str(spec), "--method", "sliding-ar", "--output-dir", str(out), "-q", "--no-plots",
               "--max-images", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "sliding-ar on boxes: 1 images, 1 classes, image size 180, scales 1, weights default" in captured.out
    m = json.loads((out / "metrics.json").read_text())
    assert m["classes"] == ["A"] and m["config"]["inference"]["image_size"] == 180
    assert m["config"]["weights"] == "default" and not (out / "pr").exists()


def test_eval_template_uses_scales(data, tmp_path, capsys):
    boxes, classes = data
    # template side 240/s at the base level; image size = dataset's suggestion (objects ~240 px) -> s = 1 works
    rc = main(["eval", "--boxes", str(boxes), "--classes", str(classes), "--method", "template", "--scales", "1",
               "--output-dir", str(tmp_path / "o"), "-q", "--no-plots"])
    out = capsys.readouterr().out
    assert rc == 0
    suggested = round(math.sqrt(200 * 150) * 240 / math.sqrt(64 * 80))
    assert f"image size {suggested}" in out
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["metrics"]["mAP@0.50"] == pytest.approx(1.0)


def test_dataset_stats(data, capsys):
    boxes, classes = data
    assert main(["dataset-stats", "--boxes", str(boxes), "--classes", str(classes)]) == 0
    out = capsys.readouterr().out
    assert "2 images (0 without boxes), 3 boxes (3 non-difficult), 2 classes" in out
    assert f"suggested image size (objects ~240 px): {round(math.sqrt(200 * 150) * 240 / math.sqrt(64 * 80))}" in out
    assert main(["dataset-stats", "--boxes", str(boxes), "--classes", str(classes), "--json",
                 "--class-names", "B"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["classes"] == 1 and stats["boxes_per_class"] == {"B": 1} and stats["images_without_boxes"] == 1


@pytest.mark.parametrize("argv, message", [
    (["eval", "--output-dir", "X"], "no dataset"),
    (["eval", "--boxes", "missing.csv", "--classes", "c.csv", "--output-dir", "X"], "--boxes: file not found"),
    (["dataset-stats", "--dataset", "nope.yaml"], "dataset spec not found"),
])
def test_errors_without_files(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_errors_with_files(data, tmp_path, capsys):
    boxes, classes = data
    base = ["eval", "--boxes", str(boxes), "--classes", str(classes), "--output-dir", str(tmp_path / "o"), "-q"]
    assert main(base + ["--max-images", "0"]) == 2
    assert "--max-images must be positive" in capsys.readouterr().err
    assert main(base + ["--class-names", "Nope"]) == 2
    assert "unknown class name(s) ['Nope']" in capsys.readouterr().err
    assert main(base + ["--dataset", "x.yaml"]) == 2
    assert "not both" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: simple_csv\nannotations: a.csv\n")
    assert main(["eval", "--dataset", str(bad), "--output-dir", str(tmp_path / "o")]) == 2
    assert "needs 'classes'" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(base[:-3] + ["--output-dir", str(tmp_path / "file")]) == 2
    assert "is not a folder" in capsys.readouterr().err
