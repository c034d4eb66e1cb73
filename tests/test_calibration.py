"""Calibrated confidence (os2d.calibration): the fit, the threshold, ECE, labelling, weights files, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import scene_with, textured_object

from os2d.calibration import (
    SCORE_FIELDS,
    Calibration,
    CalibrationError,
    best_f1_threshold,
    config_score_kind,
    expected_calibration_error,
    fit_calibration,
    fit_platt,
    label_detections,
    precision_threshold,
    reliability,
    score_kind_name,
)
from os2d.config import InferenceConfig
from os2d.data.records import ImageRecord
from os2d.results import Detections


def synthetic(n: int, a: float, b: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.uniform(-0.2, 1.0, n)
    hits = rng.uniform(size=n) < 1 / (1 + np.exp(-(a * scores + b)))
    return scores, hits


def test_platt_recovers_the_generating_curve_and_is_calibrated():
    scores, hits = synthetic(40_000, 9.0, -5.0)
    a, b = fit_platt(scores, hits)
    assert a == pytest.approx(9.0, rel=0.05) and b == pytest.approx(-5.0, rel=0.05)
    conf = 1 / (1 + np.exp(-(a * scores + b)))
    assert expected_calibration_error(conf, hits) < 0.01
    assert expected_calibration_error(np.clip(scores, 0, 1), hits) > 0.05  # the raw score is not a probability
    bins = reliability(conf, hits)
    assert sum(x["count"] for x in bins) == len(scores) and len(bins) == 10
    with pytest.raises(CalibrationError, match="need both"):
        fit_platt(scores, np.ones_like(hits))


def test_platt_converges_on_small_scores_with_far_negative_outliers():
    """Second-look scores sit near 0 and a negative score divided by a tiny factor can reach -1e6: plain Newton from
    (1, 0) diverged on such data (a ~ 1e15). Clipped to [-1, 1], standardised and damped, the fit recovers the curve."""
    rng = np.random.default_rng(1)
    scores = rng.exponential(0.02, 20_000)
    hits = rng.uniform(size=len(scores)) < 1 / (1 + np.exp(-(60.0 * scores - 5.0)))
    a, b = fit_platt(scores, hits)
    assert a == pytest.approx(60.0, rel=0.1) and b == pytest.approx(-5.0, rel=0.1)
    outliers = np.concatenate([scores, [-1.5e6, -400.0, -50.0]])
    a2, b2 = fit_platt(outliers, np.concatenate([hits, [False, False, False]]))
    assert a2 == pytest.approx(a, rel=0.02) and b2 == pytest.approx(b, rel=0.02)


def test_precision_threshold_is_the_lowest_that_reaches_the_target():
    conf = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    hits = np.array([True, True, True, False, True, False])
    assert precision_threshold(conf, hits, 0.9) == pytest.approx(0.8)  # 3/3 at 0.8; 4/5 at 0.6
    assert precision_threshold(conf, hits, 0.75) == pytest.approx(0.6)  # 4/5
    assert precision_threshold(conf, np.zeros(6, bool), 0.9) == 1.0
    # best F1 against 5 objects: keeping 3 gives 6/8, keeping 5 gives 8/10 (the best), keeping 6 gives 8/11
    assert best_f1_threshold(conf, hits, 5) == pytest.approx(0.6)
    assert best_f1_threshold(conf, hits, 3) == pytest.approx(0.8)  # 3 kept, all correct: F1 = 1
    assert best_f1_threshold(conf, np.zeros(6, bool), 3) == float("inf")


def test_calibration_round_trip_and_checks():
    scores, hits = synthetic(5_000, 9.0, -5.0, seed=1)
    cal = fit_calibration(scores, hits, fitted_on="synthetic")
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal and 0 < cal.threshold < 1 and cal.num_correct == int(hits.sum())
    assert float(cal(torch.tensor(cal.score_at(0.3)))) == pytest.approx(0.3, abs=1e-4)
    assert cal.colour_rescore == 0 and cal.applies_to(0.0) and not cal.applies_to(0.5)
    rescored = fit_calibration(scores, hits, colour_rescore=0.5)
    assert Calibration.from_dict(rescored.to_dict()).colour_rescore == 0.5 and rescored.applies_to(0.5)
    old = {k: v for k, v in cal.to_dict().items() if k != "colour_rescore"}  # written before it existed
    assert Calibration.from_dict(old).colour_rescore == 0
    for bad, message in [({"kind": "isotonic"}, "not a 'platt'"), ({"kind": "platt", "a": 1}, "malformed"),
                         ({"kind": "platt", "a": -1, "b": 0, "threshold": 0.5}, "a > 0"),
                         ({"kind": "platt", "a": 1, "b": 0, "threshold": 0.5, "colour_rescore": -1}, "colour_rescore")]:
        with pytest.raises(CalibrationError, match=message):
            Calibration.from_dict(bad)


def test_labelling_is_voc_matching():
    gt = ImageRecord("i", "x.png", 100, 100, boxes_xyxy=[[0, 0, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90]],
                     labels=[0, 0, 1], difficult=[False, False, True])
    det = Detections(torch.tensor([[0, 0, 10, 10], [1, 0, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90],
                                   [20, 20, 30, 30]], dtype=torch.float32),
                     torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]), torch.tensor([0, 0, 1, 1, 0]), torch.zeros(5, 4, 2),
                     ["a", "b"], (100, 100))
    scores, hits = label_detections([det], [gt])
    # 0.9 takes box 0; 0.8 is its duplicate; 0.7 is the wrong class; 0.6 is on a difficult box (left out); 0.5 misses
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.5]) and hits.tolist() == [True, False, False, False]


@pytest.fixture(scope="module")
def calibrated_weights(tmp_path_factory):
    from os2d.weights import load_model, save_checkpoint

    path = tmp_path_factory.mktemp("w") / "calibrated.pt"
    model = load_model("default")
    # fitted on the scores the default settings give (the second look's)
    model.calibration = Calibration(a=10.0, b=-6.0, threshold=0.5, fitted_on="test",
                                    **{k: getattr(InferenceConfig(), k) for k in SCORE_FIELDS})
    save_checkpoint(path, model, half=True)
    return path


def test_weights_carry_the_calibration_into_detections(calibrated_weights, tmp_path):
    from os2d.detector import Detector
    from os2d.weights import WeightsError, load_model, read_weights_file, save_checkpoint

    det = Detector.from_weights(str(calibrated_weights), image_size=None)
    assert det.confidence_threshold == 0.5 and det.calibration.fitted_on == "test"
    assert det.known_score == pytest.approx(0.6)  # sigmoid(10 * 0.6 - 6) = 0.5
    obj = textured_object(seed=3)
    det.add_class("a", obj)
    dets = det.detect(scene_with(obj, [(40, 60)]))
    assert dets.confidence is not None
    assert torch.allclose(dets.confidence, torch.sigmoid(10 * dets.scores - 6))
    rec = dets.to_records()[0]
    assert list(rec)[:3] == ["label", "score", "confidence"] and rec["confidence"] == round(float(dets.confidence[0]), 4)
    back = Detections.from_records(dets.to_records(), ["a"], dets.image_size)
    assert torch.allclose(back.confidence, dets.confidence, atol=1e-4)
    assert Detector.from_weights("efficientnet_lite0-imagenet").confidence_threshold is None
    # fitted on the default kind of score: no confidence for colour re-scored ones (another kind) or raw ones
    assert det.detect(scene_with(obj, [(40, 60)]), verify_rescore=0.0).confidence is None
    rescoring = Detector.from_weights(str(calibrated_weights), image_size=None, colour_rescore=0.5)
    assert rescoring.calibration is None and rescoring.confidence_threshold is None and rescoring.known_score is None
    rescoring.add_class("a", obj)
    assert rescoring.detect(scene_with(obj, [(40, 60)])).confidence is None
    assert det.detect(scene_with(obj, [(40, 60)]), colour_rescore=0.5).confidence is None  # per-call override too
    # a malformed calibration entry is a clear weights error, not a traceback
    payload = read_weights_file(calibrated_weights) | {"calibration": {"kind": "platt", "a": "x"}}
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="malformed calibration"):
        load_model(str(tmp_path / "bad.pt"))
    # and a model saved again keeps it
    save_checkpoint(tmp_path / "again.pt", load_model(str(calibrated_weights)))
    assert load_model(str(tmp_path / "again.pt")).calibration.threshold == 0.5


def test_cli_calibrate_and_check(tmp_path, capsys):
    from os2d.apps.cli.main import main
    from os2d.weights import load_model

    obj_a, obj_b = textured_object(seed=3), textured_object(seed=7)  # 96 x 128
    root = tmp_path / "data"
    root.mkdir()
    obj_a.save(root / "A.png")
    obj_b.save(root / "B.png")
    rows = []
    for i in range(4):
        pos = [(20 + 20 * i, 40), (300, 200 - 20 * i)]
        scene_with(obj_a if i % 2 == 0 else obj_b, pos, seed=i).save(root / f"s{i}.png")
        name = "A" if i % 2 == 0 else "B"
        rows += [f"s{i}.png,{name},{x},{y},{x + 96},{y + 128}" for x, y in pos]
    (root / "boxes.csv").write_text("image,class,x1,y1,x2,y2\n" + "\n".join(rows) + "\n")
    (root / "classes.csv").write_text("name,path\nA,A.png\nB,B.png\n")
    ev = tmp_path / "ev"
    assert main(["eval", "--boxes", str(root / "boxes.csv"), "--classes", str(root / "classes.csv"),
                 "--image-size", "0", "--output-dir", str(ev), "-q", "--no-plots"]) == 0
    capsys.readouterr()
    out, plot = tmp_path / "cal.pt", tmp_path / "rel.png"
    assert main(["weights", "calibrate", "default", "--from-eval", str(ev), "--output", str(out),
                 "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    cal = load_model(str(out)).calibration
    assert cal is not None and cal.num_correct >= 1 and "weights default" in cal.fitted_on
    # the fit records the default's score kind, in its fields and in words
    assert tuple(getattr(cal, k) for k in SCORE_FIELDS) == config_score_kind(InferenceConfig())
    assert f"{score_kind_name(*config_score_kind(InferenceConfig()))} scores" in cal.fitted_on
    n = sum(len(json.loads(line)["detections"]) for line in (ev / "detections.jsonl").read_text().splitlines())
    row = f"| ev | {n} | {cal.num_correct} |"
    assert cal.num_detections == n and row in text and "default threshold" in text and plot.stat().st_size > 1000
    assert main(["weights", "calibrate", str(out), "--weights-name", "default", "--check", str(ev)]) == 0
    assert row in capsys.readouterr().out
    # colour re-scored evaluations: a calibration of that kind; never mixed with raw ones, nor checked against them
    ev2 = tmp_path / "ev2"
    assert main(["eval", "--boxes", str(root / "boxes.csv"), "--classes", str(root / "classes.csv"),
                 "--image-size", "0", "--output-dir", str(ev2), "-q", "--no-plots", "--colour-rescore", "0.5"]) == 0
    assert main(["weights", "calibrate", "default", "--from-eval", str(ev2), "--output", str(tmp_path / "c2.pt")]) == 0
    assert load_model(str(tmp_path / "c2.pt")).calibration.colour_rescore == 0.5
    capsys.readouterr()
    assert main(["weights", "calibrate", "default", "--from-eval", str(ev), str(ev2), "--output",
                 str(tmp_path / "c3.pt")]) == 2
    cfg = InferenceConfig()
    default_kind = score_kind_name(*config_score_kind(cfg))  # the second look's, by default
    both = score_kind_name(*config_score_kind(cfg.replace(colour_rescore=0.5)))
    assert f"re-scored differently ({default_kind}, {both})" in capsys.readouterr().err
    assert main(["weights", "calibrate", str(out), "--weights-name", "default", "--check", str(ev2)]) == 2
    assert f"fitted on {default_kind} scores, these evaluations have {both} scores" in capsys.readouterr().err
    # evaluations of other weights, and folders that are not evaluations, are refused
    assert main(["weights", "calibrate", "efficientnet_lite0-imagenet", "--from-eval", str(ev), "--output",
                 str(tmp_path / "x.pt")]) == 2
    assert "was evaluated with --weights default" in capsys.readouterr().err
    assert main(["weights", "calibrate", "default", "--from-eval", str(tmp_path), "--output",
                 str(tmp_path / "x.pt")]) == 2
    assert "metrics.json is missing" in capsys.readouterr().err
