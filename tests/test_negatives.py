"""Negative exemplars: the gallery keeps them, the detector drops what a negative matches at least as well."""

from __future__ import annotations

import pytest
import torch
from helpers import scene_with, textured_object

from os2d.config import InferenceConfig
from os2d.detector import Detector
from os2d.gallery import ClassGallery
from os2d.inference.negatives import SHADOW_PREFIX, suppress_by_negatives, with_negatives
from os2d.results import Detections


def kernels(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 4, 8, generator=torch.Generator().manual_seed(seed))


def gallery() -> ClassGallery:
    g = ClassGallery(model_id="m")
    g.add("a", kernels(2, 0), ["original", "flip"])
    g.add("b", kernels(1, 1), ["original"])
    g.add("c", kernels(1, 2), ["original"])
    g.add_negative("b", kernels(1, 3), ["original"])
    g.add_negative("c", kernels(2, 4), ["original", "flip"])
    return g


def test_gallery_keeps_negatives_through_remove_subset_and_files(tmp_path):
    g = gallery()
    assert (g.negatives_of("a"), g.negatives_of("b"), g.negatives_of("c")) == (0, 1, 2)
    with pytest.raises(KeyError, match="add the class before"):
        g.add_negative("zzz", kernels(1, 5), ["original"])
    h = g.copy()
    h.remove("b")  # its negative goes, c's negatives now point at label 1
    assert h.class_names == ["a", "c"] and h.negative_class.tolist() == [1, 1] and h.negatives_of("c") == 2
    assert g.negatives_of("b") == 1  # the copy changed, not the original
    s = g.subset(["c", "a"])
    assert s.negative_class.tolist() == [0, 0] and torch.equal(s.negative_kernels, g.negative_kernels[1:])
    g.save(tmp_path / "g.pt")
    back = ClassGallery.load(tmp_path / "g.pt")
    assert torch.equal(back.negative_kernels, g.negative_kernels) and back.negative_view_names == g.negative_view_names
    # a gallery saved before negatives existed (no negative fields) still loads
    payload = g.to_payload()
    for k in ("negative_kernels", "negative_class", "negative_view_names"):
        del payload[k]
    assert ClassGallery.from_payload(payload).negative_kernels is None
    bad = g.to_payload() | {"negative_class": torch.tensor([0, 0, 7])}
    with pytest.raises(ValueError, match="negative's class index is outside"):
        ClassGallery.from_payload(bad)


def test_suppression_drops_what_a_negative_matches_at_least_as_well():
    g = gallery()
    views = with_negatives(g.kernels, g.view_class, g.class_names, g.negative_kernels, g.negative_class)
    assert views.class_names == ["a", "b", "c", SHADOW_PREFIX + "b", SHADOW_PREFIX + "c"]
    assert views.view_class.tolist() == [0, 0, 1, 2, 3, 4, 4] and views.owner.tolist() == [1, 2]
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10], [51, 50, 61, 60],
                          [100, 0, 110, 10], [0, 0, 10, 10]], dtype=torch.float32)
    #                  b beaten  a (no negs)  c beats its neg  shadow b   shadow c   c alone   shadow c elsewhere
    scores = torch.tensor([0.7, 0.9, 0.8, 0.75, 0.6, 0.5, 0.95])
    labels = torch.tensor([1, 0, 2, 3, 4, 2, 4])
    order = scores.argsort(descending=True)
    dets = Detections(boxes[order], scores[order], labels[order], torch.zeros(7, 4, 2), views.class_names, (200, 100),
                      levels={n: [512] for n in views.class_names})
    out = suppress_by_negatives(dets, views, 0.5, None)
    assert out.class_names == ["a", "b", "c"] and set(out.levels) == {"a", "b", "c"}
    assert out.scores.tolist() == pytest.approx([0.9, 0.8, 0.5])  # b at (0,0) dropped: its negative scored 0.75
    assert out.labels.tolist() == [0, 2, 2]
    assert len(suppress_by_negatives(dets, views, 0.5, 2)) == 2  # the cap applies after the suppression
    # equal scores: the negative wins (the photo matches what it is not as well as what it is)
    tie = Detections(boxes[:2][[0, 0]], torch.tensor([0.7, 0.7]), torch.tensor([1, 3]), torch.zeros(2, 4, 2),
                     views.class_names, (200, 100))
    assert len(suppress_by_negatives(tie, views, 0.5, None)) == 0


def test_detector_negative_removes_the_lookalike_and_keeps_the_class():
    """Two textured products look alike to the model: class 'a' fires on b as well; b's picture as a negative of
    'a' removes that detection and keeps the one on a."""
    a, b = textured_object(seed=3), textured_object(seed=6)  # colour variants: a fires on b
    scene = scene_with(a, [(40, 60)])
    scene.paste(b, (300, 60))
    det = Detector.from_weights("default", config=InferenceConfig(image_size=None))

    def on(dets: Detections, x: int) -> list[float]:
        return [float(s) for s, box in zip(dets.scores, dets.boxes_xyxy, strict=True)
                if abs(float(box[0] + box[2]) / 2 - (x + 48)) < 30 and abs(float(box[1] + box[3]) / 2 - 124) < 30]

    det.add_class("a", a)
    plain = det.detect(scene)
    assert on(plain, 40) and on(plain, 300), "the look-alike is detected as 'a' without a negative"
    det.remove_class("a")
    det.add_class("a", a, negatives=[b])
    assert det.gallery.negatives_of("a") == 1
    with_neg = det.detect(scene)
    assert with_neg.class_names == ["a"]
    assert max(on(with_neg, 40)) == pytest.approx(max(on(plain, 40)), abs=1e-5)  # the class itself is untouched
    assert not on(with_neg, 300), "the negative did not remove the detection on the look-alike"
    det.add_negative("a", [b])  # more negatives of the same class add views, not classes
    assert det.gallery.negatives_of("a") == 2 and det.classes == ["a"]
    with pytest.raises(KeyError):
        det.add_negative("nope", b)


def test_cli_negative_drops_the_lookalike_and_checks_its_class(tmp_path, capsys):
    import json

    from os2d.apps.cli.main import main

    a, b = textured_object(seed=3), textured_object(seed=6)  # colour variants: a fires on b
    scene = scene_with(a, [(40, 60)])
    scene.paste(b, (300, 60))
    a.save(tmp_path / "a.png")
    b.save(tmp_path / "b.png")
    scene.save(tmp_path / "s.png")
    base = ["detect", str(tmp_path / "s.png"), "--class", f"a={tmp_path / 'a.png'}", "--image-size", "0", "-q"]

    def right_side(out):  # detections centred on b
        dets = json.loads(out.read_text())["images"][0]["detections"]
        return [d for d in dets if abs((d["box_xyxy"][0] + d["box_xyxy"][2]) / 2 - 348) < 30
                and abs((d["box_xyxy"][1] + d["box_xyxy"][3]) / 2 - 124) < 30]

    assert main(base + ["-o", str(tmp_path / "plain.json")]) == 0
    assert right_side(tmp_path / "plain.json")
    assert main(base + ["-o", str(tmp_path / "neg.json"), "--negative", f"a={tmp_path / 'b.png'}",
                        "--save-gallery", str(tmp_path / "g.pt")]) == 0
    assert not right_side(tmp_path / "neg.json")
    assert ClassGallery.load(tmp_path / "g.pt").negatives_of("a") == 1  # saved with the gallery
    capsys.readouterr()
    assert main(base + ["-o", str(tmp_path / "x.json"), "--negative", f"zzz={tmp_path / 'b.png'}"]) == 2
    assert "no class 'zzz'" in capsys.readouterr().err
    assert main(base + ["-o", str(tmp_path / "x.json"), "--negative", "a"]) == 2
    assert "--negative expects NAME=PATH" in capsys.readouterr().err


def test_demote_keeps_the_detection_below_its_negative():
    g = gallery()
    views = with_negatives(g.kernels, g.view_class, g.class_names, g.negative_kernels, g.negative_class)
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float32)
    dets = Detections(boxes, torch.tensor([0.8, 0.7, 0.6]), torch.tensor([3, 1, 0]), torch.zeros(3, 4, 2),
                      views.class_names, (100, 100))
    out = suppress_by_negatives(dets, views, 0.5, None, mode="demote")
    assert out.labels.tolist() == [0, 1] and out.scores.tolist() == pytest.approx([0.6, 0.6])  # 2 * 0.7 - 0.8
    with pytest.raises(ValueError, match="negative_mode"):
        InferenceConfig(negative_mode="hide")
