"""`os2d detect` end to end on generated files: JSON contract, gallery, bad input -> clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import scene_with, textured_object

from os2d.apps.cli.common import read_classes_folder
from os2d.apps.cli.main import main
from os2d.detector import Detector


@pytest.fixture
def files(tmp_path):
    obj = textured_object((160, 192))
    obj.save(tmp_path / "thing.png")
    textured_object((120, 120), seed=5).save(tmp_path / "other.png")
    scene_with(obj, [(96, 64)]).save(tmp_path / "scene1.jpg")
    scene_with(obj, [(200, 120)], seed=2).save(tmp_path / "scene2.png")
    return tmp_path


def _check_contract(payload):
    assert payload["version"] == 1
    for rec in payload["images"]:
        assert set(rec) >= {"path", "detections"}
        if "error" in rec:
            continue
        assert rec["width"] > 0 and rec["height"] > 0
        for det in rec["detections"]:
            assert set(det) == {"label", "score", "confidence", "box_xyxy", "corners_xy"}  # calibrated default
            x1, y1, x2, y2 = det["box_xyxy"]
            assert 0 <= x1 < x2 <= rec["width"] and 0 <= y1 < y2 <= rec["height"]
            assert len(det["corners_xy"]) == 4 and all(len(c) == 2 for c in det["corners_xy"])


def test_detect_writes_valid_json_and_drawings(files, capsys):
    out = files / "out.json"
    rc = main(["detect", str(files / "scene1.jpg"), str(files / "scene2.png"), "--class", f"thing={files / 'thing.png'}",
               "--class", f"other={files / 'other.png'}", "--output", str(out), "--draw", str(files / "draw"),
               "--image-size", "0", "--max-detections", "5", "-q"])
    assert rc == 0
    payload = json.loads(out.read_text())
    _check_contract(payload)
    assert payload["classes"] == ["thing", "other"]
    assert [len(r["detections"]) for r in payload["images"]] == [5, 5]
    top = payload["images"][0]["detections"][0]
    assert top["label"] == "thing"
    assert sorted((files / "draw").iterdir())[0].suffix == ".png"


def test_classes_csv_images_from_and_gallery(files):
    (files / "classes.csv").write_text("name,path\nthing,thing.png\nother,other.png\n")
    (files / "list.txt").write_text("scene1.jpg\n\n# comment\nscene2.png\n")
    out = files / "o.json"
    rc = main(["detect", "--images-from", str(files / "list.txt"), "--classes", str(files / "classes.csv"),
               "--output", str(out), "--save-gallery", str(files / "g.pt"), "--image-size", "0", "-q"])
    assert rc == 0
    first = json.loads(out.read_text())
    assert len(first["images"]) == 2
    rc = main(["detect", str(files / "scene1.jpg"), "--gallery", str(files / "g.pt"), "--output", str(out),
               "--image-size", "0", "-q"])
    assert rc == 0
    again = json.loads(out.read_text())
    assert again["images"][0]["detections"] == first["images"][0]["detections"]


def test_classes_folder_names_classes_by_file_and_subfolder(files, capsys):
    classes = files / "classes"
    (classes / "other").mkdir(parents=True)
    shutil.copy(files / "thing.png", classes / "thing.png")
    shutil.copy(files / "other.png", classes / "other" / "front.png")
    shutil.copy(files / "other.png", classes / "other" / "side.png")
    (classes / "notes.txt").write_text("not a class")
    (classes / ".hidden.png").write_bytes(b"")
    out = files / "o.json"
    rc = main(["detect", str(files / "scene1.jpg"), "--classes", str(classes), "--output", str(out),
               "--image-size", "0", "-q"])
    assert rc == 0
    assert json.loads(out.read_text())["classes"] == ["other", "thing"]  # sorted; the subfolder is one class
    assert read_classes_folder(classes) == [("other", str(classes / "other" / "front.png")),
                                            ("other", str(classes / "other" / "side.png")),
                                            ("thing", str(classes / "thing.png"))]


@pytest.mark.parametrize("entries, message", [
    (["a.png", "a.jpg"], "two classes named 'a'"),
    (["a.png", "a/b.png"], "two classes named 'a'"),
    (["empty/"], "the class folder empty/ has no images"),
    (["readme.txt"], "no class images"),
])
def test_classes_folder_errors_say_what_is_wrong(files, capsys, entries, message):
    classes = files / "classes"
    for entry in entries:  # checked before any image is read: the files need not be images
        (classes / entry).parent.mkdir(parents=True, exist_ok=True)
        (classes / entry).mkdir() if entry.endswith("/") else (classes / entry).write_bytes(b"x")
    rc = main(["detect", str(files / "scene1.jpg"), "--classes", str(classes), "--image-size", "0"])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_without_output_the_detections_are_listed_and_with_dash_the_json_goes_to_stdout(files, capsys):
    args = ["detect", str(files / "scene1.jpg"), str(files / "scene2.png"), "--class", f"thing={files / 'thing.png'}",
            "--image-size", "0", "--max-detections", "5"]
    assert main(args + ["--output", "-"]) == 0
    payload = json.loads(capsys.readouterr().out)  # the whole of stdout is the document
    _check_contract(payload)
    assert not list(files.glob("*.json"))  # nothing written
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    t = Detector.from_weights("default").confidence_threshold
    expected = []
    for rec in payload["images"]:  # the listing: the detections at the calibrated threshold, as --draw shows
        shown = [d for d in rec["detections"] if d["confidence"] >= t]
        expected.append(f"{rec['path']}: {len(shown)} detections at confidence >= {t:.2f} "
                        f"({len(rec['detections'])} in all)")
        expected += [f"{d['label']:>20s} {d['score']:.3f} confidence {d['confidence']:.2f} "
                     f"{[round(v, 1) for v in d['box_xyxy']]}" for d in shown]
    assert lines == expected
    assert [ln.split()[0] for ln in lines if ln.startswith(" ")] == ["thing", "thing"]  # each scene's object


def test_corrupt_and_missing_images_fail_clearly_but_keep_the_rest(files, capsys):
    (files / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = files / "out.json"
    rc = main(["detect", str(files / "bad.jpg"), str(files / "nope.png"), str(files / "scene1.jpg"),
               "--class", f"thing={files / 'thing.png'}", "--output", str(out), "--image-size", "0", "-q"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "bad.jpg" in err and "nope.png" in err and "Traceback" not in err
    payload = json.loads(out.read_text())
    _check_contract(payload)
    assert ["error" in r for r in payload["images"]] == [True, True, False]
    assert payload["images"][2]["detections"]


@pytest.mark.parametrize("args, message", [
    (["--class", "blank={blank}"], "blank"),
    (["--class", "nope={missing}"], "not found"),
    (["--class", "no-equals-sign"], "NAME=PATH"),
    (["--classes", "{badcsv}"], "row 3"),
    (["--classes", "{nohdr}"], "header"),
    ([], "no classes"),
    (["--class", "thing={thing}", "--weights", "{notckpt}"], "not an os2d"),
    (["--class", "thing={thing}", "--weights", "no-such-weights"], "unknown weights"),
    (["--class", "thing={thing}", "--scales", "0"], "positive"),
])
def test_bad_input_gives_message_and_exit_2(files, capsys, args, message):
    from PIL import Image

    Image.new("RGB", (200, 200), (255, 255, 255)).save(files / "blank.png")
    (files / "bad.csv").write_text("name,path\nthing,thing.png\n,other.png\n")
    (files / "nohdr.csv").write_text("thing,thing.png\n")
    import torch

    torch.save({"foo": torch.zeros(1)}, files / "notckpt.pth")
    fill = {"blank": files / "blank.png", "missing": files / "missing.png", "badcsv": files / "bad.csv",
            "nohdr": files / "nohdr.csv", "thing": files / "thing.png", "notckpt": files / "notckpt.pth"}
    args = [a.format(**fill) for a in args]
    rc = main(["detect", str(files / "scene1.jpg"), "--output", str(files / "o.json"), *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("os2d: error:") and message in err and "Traceback" not in err


def test_default_image_size_is_auto_and_the_json_says_which_levels_ran(files):
    out = files / "auto.json"
    rc = main(["detect", str(files / "scene1.jpg"), "--class", f"thing={files / 'thing.png'}", "--output", str(out),
               "--max-detections", "3", "-q"])
    assert rc == 0
    rec = json.loads(out.read_text())["images"][0]
    assert list(rec["levels"]) == ["thing"] and rec["detections"][0]["label"] == "thing"


@pytest.mark.parametrize("value", ["big", "8", "-1", "nan"])
def test_bad_image_size_is_a_one_line_usage_error(files, capsys, value):
    with pytest.raises(SystemExit) as exc:
        main(["detect", str(files / "scene1.jpg"), "--class", f"thing={files / 'thing.png'}", "--image-size", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--image-size" in err and "Traceback" not in err


def test_one_image_with_output_also_prints_its_ten_best(files, capsys):
    out = files / "one.json"
    assert main(["detect", str(files / "scene1.jpg"), "--class", f"thing={files / 'thing.png'}", "--output", str(out),
                 "--image-size", "0"]) == 0
    dets = json.loads(out.read_text())["images"][0]["detections"]
    assert capsys.readouterr().out.splitlines() == [
        f"{d['label']:>20s} {d['score']:.3f} confidence {d['confidence']:.2f} {[round(v, 1) for v in d['box_xyxy']]}"
        for d in dets[:10]]
