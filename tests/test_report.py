"""Shelf reports (os2d.report): rows, order, facings and the planogram comparison on generated shelves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from os2d.report import PlanogramError, compare_planogram, read_planogram, shelf_report
from os2d.results import Detections

NAMES = ["cola", "juice", "milk", "tea"]


def shelf(layout: list[list[str]], *, seed: int = 0, extra: list[tuple[str, tuple]] | None = None) -> Detections:
    """Detections of a generated shelf: rows of facings 80 px wide, 120 px tall, 200 px apart, with jitter."""
    rng = np.random.default_rng(seed)
    boxes, labels = [], []
    for r, row in enumerate(layout):
        for p, name in enumerate(row):
            x, y = 20 + 90 * p + rng.uniform(-6, 6), 30 + 200 * r + rng.uniform(-15, 15)
            h = 120 + rng.uniform(-20, 20)
            boxes.append([x, y, x + 80, y + h])
            labels.append(NAMES.index(name))
    for name, box in extra or []:
        boxes.append(list(box))
        labels.append(NAMES.index(name))
    order = rng.permutation(len(boxes))  # detections come best first, in no spatial order
    n = len(boxes)
    return Detections(boxes_xyxy=torch.tensor(boxes, dtype=torch.float32)[order],
                      scores=torch.linspace(0.9, 0.5, n)[: n], labels=torch.tensor(labels)[order],
                      corners_xy=torch.zeros(n, 4, 2), class_names=NAMES, image_size=(1000, 800))


LAYOUT = [["cola", "cola", "juice", "juice", "juice"], ["milk", "milk", "tea"], ["tea", "cola", "cola", "cola"]]


@pytest.mark.parametrize("seed", range(5))
def test_rows_order_and_facings_are_recovered(seed):
    report = shelf_report(shelf(LAYOUT, seed=seed))
    assert report.rows() == LAYOUT
    assert report.counts() == {"cola": 5, "juice": 3, "milk": 2, "tea": 2}
    assert report.row_counts()[("cola", 3)] == 3
    d = json.loads(json.dumps(report.to_dict()))
    assert d["rows"][1]["row"] == 2 and d["rows"][1]["classes"] == ["milk", "milk", "tea"]
    assert d["rows"][0]["top"] < d["rows"][0]["bottom"] < d["rows"][1]["top"]  # bands are ordered, disjoint
    assert len(d["items"]) == 12 and d["items"][0]["row"] == 1 and d["items"][0]["position"] == 1
    # the same report from the JSON records of the detections
    dets = shelf(LAYOUT, seed=seed)
    assert shelf_report(dets.to_records()).rows() == LAYOUT


def test_draw_shelf_report_tints_rows_and_outlines_facings():
    from PIL import Image

    from os2d.visualize import class_color, draw_shelf_report

    report = shelf_report(shelf(LAYOUT))
    img = Image.new("RGB", (1000, 800), (128, 128, 128))
    pic = draw_shelf_report(img, report, NAMES, line_width=2)
    f = next(f for f in report.facings if f.label == "milk")
    x1, y1, x2, y2 = (round(v) for v in f.box_xyxy)
    assert pic.getpixel((x1, (y1 + y2) // 2)) == class_color(NAMES.index("milk"))  # outline in the class colour
    top, bottom = report.bands[0]
    inside, outside = pic.getpixel((990, int((top + bottom) / 2))), pic.getpixel((990, 795))
    assert inside != (128, 128, 128) and outside == (128, 128, 128)
    assert img.getpixel((990, int((top + bottom) / 2))) == (128, 128, 128)  # the input is not modified


def test_records_are_checked():
    with pytest.raises(ValueError, match="detection 1: needs"):
        shelf_report([{"label": "a", "score": 1, "box_xyxy": [0, 0, 1, 1]}, {"label": "a", "score": 1}])
    with pytest.raises(ValueError, match="4 finite numbers"):
        shelf_report([{"label": "a", "score": 1, "box_xyxy": [0, 0, 1, float("nan")]}])


def test_min_score_drops_weak_detections():
    dets = shelf(LAYOUT)
    assert len(shelf_report(dets, min_score=0.7).facings) == int((dets.scores >= 0.7).sum())
    assert shelf_report(dets, min_score=2.0).rows() == []


def test_planogram_comparison(tmp_path):
    plan_csv = tmp_path / "plan.csv"
    plan_csv.write_text("class,row,facings\ncola,1,2\njuice,1,4\nmilk,2,2\ntea,2,1\ntea,3,1\ncola,3,3\n"
                        "juice,2,0\n")
    plan = read_planogram(plan_csv)
    # found: juice 3 of 4 in row 1; a juice facing on row 2 where none is expected (but expected on row 1)
    dets = shelf(LAYOUT, extra=[("juice", (500, 230, 580, 350))])
    lines = {(x["class"], x["row"]): (x["expected"], x["found"], x["status"]) for x in compare_planogram(
        shelf_report(dets), plan)}
    assert lines[("juice", 1)] == (4, 3, "missing")
    assert lines[("juice", 2)] == (0, 1, "misplaced")
    assert lines[("cola", 1)] == (2, 2, "ok") and lines[("tea", 3)] == (1, 1, "ok")
    dets = shelf([["cola", "cola", "cola", "juice", "juice", "juice", "juice"]] + LAYOUT[1:])
    lines = {(x["class"], x["row"]): x["status"] for x in compare_planogram(shelf_report(dets), plan)}
    assert lines[("cola", 1)] == "extra" and lines[("juice", 1)] == "ok"


@pytest.mark.parametrize("text, message", [
    ("name,row,facings\n", "header"),
    ("class,row,facings\ncola,0,2\n", "row 2"),
    ("class,row,facings\ncola,1\n", "row 2"),
    ("class,row,facings\ncola,1,2\ntea,x,1\n", "row 3"),
])
def test_bad_planograms_are_refused_with_the_line(tmp_path, text, message):
    p = tmp_path / "plan.csv"
    p.write_text(text)
    with pytest.raises(PlanogramError, match=message):
        read_planogram(p)
    with pytest.raises(PlanogramError, match="not found"):
        read_planogram(tmp_path / "nope.csv")


def test_cli_report_and_planogram(tmp_path, capsys):
    import csv

    from helpers import textured_object
    from PIL import Image, ImageDraw

    from os2d.apps.cli.main import main

    a, b = textured_object((120, 150), seed=3), Image.new("RGB", (120, 150), (20, 40, 160))
    draw = ImageDraw.Draw(b)  # another kind of product: textured objects all look alike to the model (0.9)
    for i in range(-150, 120, 16):
        draw.line([(i, 0), (i + 150, 150)], fill=(240, 240, 240), width=5)
    draw.polygon([(60, 10), (110, 140), (10, 140)], fill=(220, 30, 30), outline=(0, 0, 0))
    draw.ellipse([40, 50, 80, 90], fill=(30, 200, 60))
    a.save(tmp_path / "a.png")
    b.save(tmp_path / "b.png")
    scene = Image.new("RGB", (720, 440), (128, 128, 128))
    for i, obj in enumerate([a, a, b]):
        scene.paste(obj, (40 + 200 * i, 30))
    for i, obj in enumerate([b, a]):
        scene.paste(obj, (40 + 200 * i, 250))
    scene.save(tmp_path / "shelf.png")
    (tmp_path / "plan.csv").write_text("class,row,facings\na,1,2\nb,1,1\nb,2,1\na,2,1\n")
    out, report = tmp_path / "d.json", tmp_path / "shelf.csv"
    args = ["detect", str(tmp_path / "shelf.png"), "--class", f"a={tmp_path / 'a.png'}", "--class",
            f"b={tmp_path / 'b.png'}", "-o", str(out), "--image-size", "0", "--max-detections", "5",
            "--verify-rescore", "0"]  # raw scores: the threshold below was read off them
    assert main(args + ["-q"]) == 0
    threshold = 0.6
    assert main(args + ["--score-threshold", str(threshold), "--report", str(report), "--planogram",
                        str(tmp_path / "plan.csv"), "--draw", str(tmp_path / "pics")]) == 0
    err = capsys.readouterr().err
    record = json.loads(out.read_text())["images"][0]
    dets = record["detections"]
    assert dets and all(d["score"] > threshold for d in dets)
    expected = shelf_report(Detections(
        boxes_xyxy=torch.tensor([d["box_xyxy"] for d in dets]), scores=torch.tensor([d["score"] for d in dets]),
        labels=torch.tensor([["a", "b"].index(d["label"]) for d in dets]), corners_xy=torch.zeros(len(dets), 4, 2),
        class_names=["a", "b"], image_size=scene.size), min_score=threshold)
    rows = list(csv.DictReader(report.open()))
    assert [(int(r["row"]), int(r["position"]), r["class"]) for r in rows] == [
        (f.row, f.position, f.label) for f in expected.facings]
    assert [r["class"] for r in rows[:2]] == ["a", "a"]  # the top row starts with the two facings of a
    assert record["shelf"] == json.loads(json.dumps(expected.to_dict()))  # the JSON carries the same report
    assert record["shelf"]["min_score"] == threshold
    picture = Image.open(tmp_path / "pics" / "shelf_os2d.png")  # the rows drawn: tinted bands over the grey shelf
    band = expected.bands[0]
    assert picture.size == scene.size
    assert picture.getpixel((700, int((band[0] + band[1]) / 2))) != scene.getpixel((700, int((band[0] + band[1]) / 2)))
    assert picture.getpixel((700, 435)) == scene.getpixel((700, 435))  # below every row: untouched
    comparison = compare_planogram(expected, read_planogram(tmp_path / "plan.csv"))
    lines = list(csv.DictReader((tmp_path / "shelf_planogram.csv").open()))
    assert [(r["class"], int(r["row"]), r["status"]) for r in lines] == [
        (c["class"], c["row"], c["status"]) for c in comparison]
    n_ok = sum(c["status"] == "ok" for c in comparison)
    assert f"planogram {n_ok} ok, " in err


@pytest.mark.parametrize("extra, message", [
    (["--report", "{t}/r.csv", "--weights", "efficientnet_lite0-imagenet"], "give --score-threshold (these weights"),
    (["--planogram", "{t}/plan.csv"], "--planogram needs --report"),
    (["--report-one-label", "0.7"], "--report-one-label needs --report"),
    (["--report", "{t}/r.csv", "--score-threshold", "0.5", "-o", "{t}/d.jsonl"], "not .jsonl"),
    (["--report", "{t}/r.csv", "--score-threshold", "0.5", "--planogram", "{t}/bad.csv"], "header"),
])
def test_cli_report_usage_errors(tmp_path, capsys, extra, message):
    from helpers import textured_object

    from os2d.apps.cli.main import main

    textured_object().save(tmp_path / "a.png")
    (tmp_path / "bad.csv").write_text("name,row\n")
    rc = main(["detect", str(tmp_path / "a.png"), "--class", f"a={tmp_path / 'a.png'}", "-o", str(tmp_path / "d.json"),
               *[e.format(t=tmp_path) for e in extra]])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and not (tmp_path / "r.csv").exists()


def test_cli_report_counts_from_the_calibrated_threshold_by_default(tmp_path):
    """Without --score-threshold the report counts the detections at or above the weights' calibrated confidence
    threshold (precision >= 0.9 on their validation data)."""
    import csv

    from helpers import scene_with, textured_object

    from os2d.apps.cli.main import main
    from os2d.weights import load_model

    a = textured_object(seed=3)
    a.save(tmp_path / "a.png")
    scene_with(a, [(40, 60), (300, 60)]).save(tmp_path / "s.png")
    out, report = tmp_path / "d.json", tmp_path / "r.csv"
    assert main(["detect", str(tmp_path / "s.png"), "--class", f"a={tmp_path / 'a.png'}", "-o", str(out), "-q",
                 "--report", str(report)]) == 0
    cal = load_model("default").calibration
    dets = json.loads(out.read_text())["images"][0]["detections"]
    counted = [d for d in dets if d["score"] >= cal.score_at(cal.threshold)]
    assert all(d["confidence"] >= cal.threshold - 1e-3 for d in counted)
    rows = list(csv.DictReader(report.open()))
    assert len(rows) == len(counted) == 2 and [r["position"] for r in rows] == ["1", "2"]


def test_one_facing_detected_as_two_look_alike_classes_counts_once():
    """A facing is one product: of two counted detections of different classes on it, the better one counts
    (``one_label_iou``, default :data:`os2d.report.ONE_LABEL_IOU`); None counts both; same-class boxes are not merged."""
    from os2d.report import ONE_LABEL_IOU

    look_alike = ("juice", (22, 32, 100, 150))  # on the first cola of row 1 (IoU ~0.9), scored below it
    dets = shelf(LAYOUT, extra=[look_alike])
    assert dets.scores[dets.labels == NAMES.index("juice")].min() < dets.scores.max()
    report = shelf_report(dets)
    assert ONE_LABEL_IOU == 0.5 and report.one_label_iou == ONE_LABEL_IOU
    kept = shelf_report(dets, one_label_iou=None)
    assert sum(kept.counts().values()) == sum(report.counts().values()) + 1
    assert report.to_dict()["one_label_iou"] == ONE_LABEL_IOU and kept.to_dict()["one_label_iou"] is None
    records = dets.to_records()
    assert shelf_report(records).counts() == report.counts()  # the JSON records give the same report
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="one_label_iou"):
            shelf_report(dets, one_label_iou=bad)


@pytest.mark.parametrize("value, expected", [("off", "off"), ("0.7", 0.7), ("1", 1.0)])
def test_cli_report_one_label_option(value, expected):
    from os2d.apps.cli.detect import _one_label_iou

    assert _one_label_iou(value) == expected


@pytest.mark.parametrize("value", ["0", "1.2", "nan", "half"])
def test_cli_report_one_label_refuses_bad_values(value):
    import argparse

    from os2d.apps.cli.detect import _one_label_iou

    with pytest.raises(argparse.ArgumentTypeError, match="IoU in"):
        _one_label_iou(value)
