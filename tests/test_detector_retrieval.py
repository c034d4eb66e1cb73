"""The detector + retrieval baseline (os2d.agnostic, os2d.evaluation.baselines.detector_retrieval) on generated
scenes with the tiny deterministic backbone: targets, losses, a short training run that finds its objects, the
weights file round trip, resume, and retrieval ranking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_toy_model
from helpers import scene_with, textured_object
from PIL import Image, ImageDraw

from os2d.agnostic.cache import CachedLevel, compute_levels, level_sizes, read_box_csvs
from os2d.agnostic.config import DetectorTrainConfig, HeadConfig
from os2d.agnostic.head import HeadOutput, boxes_from_distances, build_head, cell_centers
from os2d.agnostic.proposals import AgnosticDetector
from os2d.agnostic.retrieval import crop_boxes, embed_images, fit_pca_whitening, gem, signed_gem
from os2d.agnostic.targets import giou_loss_ltrb, head_losses, level_targets
from os2d.agnostic.weights import load_detector, save_detector
from os2d.apps.cli.main import main
from os2d.config import InferenceConfig
from os2d.evaluation.baselines import build_method
from os2d.ops import box_iou
from os2d.train.detector_head import detector_train_config_from_dict, train_head

TINY_HEAD = HeadConfig(in_channels=32, hidden_channels=32, dilations=(1, 2))
TINY_TRAIN = DetectorTrainConfig(head=TINY_HEAD, crop_cells=16, epochs=100, batch_size=8, lr=1e-2, seed=0,
                                 whitening_crops=0)


def rectangles_scene(seed: int, size: int = 256) -> tuple[Image.Image, torch.Tensor]:
    """Coloured rectangles with a disc of another colour (2-3, 40-100 px, not overlapping) on a noisy grey
    background."""
    rng = np.random.default_rng(seed)
    bg = rng.normal(128, 25, (size, size, 3)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(bg)
    draw = ImageDraw.Draw(img)
    boxes: list[list[float]] = []
    while len(boxes) < int(rng.integers(2, 4)):
        w, h = (int(v) for v in rng.integers(40, 100, 2))
        x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        cand = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32)
        if boxes and float(box_iou(cand, torch.tensor(boxes)).max()) > 0:
            continue
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw.ellipse([x + w // 4, y + h // 4, x + 3 * w // 4, y + 3 * h // 4],
                     fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        boxes.append(cand[0].tolist())
    return img, torch.tensor(boxes)


@pytest.fixture(scope="module")
def toy():
    return make_toy_model()


@pytest.fixture(scope="module")
def tiny_detector(toy):
    levels: list[CachedLevel] = []
    for seed in range(24):
        img, boxes = rectangles_scene(seed)
        levels += compute_levels(toy, img, boxes, [img.size])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only add overhead (4 s instead of 20 on a busy 2-core box)
    try:
        return train_head(levels, TINY_TRAIN)
    finally:
        torch.set_num_threads(threads)


def test_level_targets_known_values():
    t = level_targets(torch.tensor([[16.0, 16.0, 80.0, 48.0]]), 6, 8, 16.0, 1.0)
    # centre (48, 32): the cells whose centres are within 16 px of it (and inside the box)
    assert t.is_positive.nonzero().tolist() == [[1, 2], [1, 3], [2, 2], [2, 3]]
    assert t.distances[1, 2].tolist() == [24.0, 8.0, 40.0, 24.0]  # cell centre (40, 24)
    assert t.centerness[1, 2].item() == pytest.approx((24 / 40 * 8 / 24) ** 0.5)
    empty = level_targets(torch.zeros(0, 4), 3, 3, 16.0, 1.5)
    assert not empty.is_positive.any() and empty.distances.shape == (3, 3, 4)


def test_tiny_box_gets_its_centre_cell():
    t = level_targets(torch.tensor([[33.0, 33.0, 36.0, 37.0]]), 4, 4, 16.0, 1.5)
    assert t.is_positive.nonzero().tolist() == [[2, 2]]


def test_giou_loss_zero_for_a_perfect_box_and_decoding_round_trip():
    d = torch.tensor([[3.0, 4.0, 5.0, 6.0]])
    assert giou_loss_ltrb(d, d).item() == pytest.approx(0.0, abs=1e-6)
    assert giou_loss_ltrb(d * 2, d).item() > 0
    centers = cell_centers(2, 3, 16.0)
    assert centers[1, 2].tolist() == [40.0, 24.0]
    assert boxes_from_distances(centers[1, 2], d[0]).tolist() == [37.0, 20.0, 45.0, 30.0]


def test_losses_have_gradients_and_handle_empty_targets():
    head = build_head(TINY_HEAD)
    out = head(torch.randn(2, 32, 8, 8))
    assert out.objectness_logits.shape == (2, 8, 8) and out.log_distances.shape == (2, 8, 8, 4)
    t = level_targets(torch.tensor([[20.0, 20.0, 90.0, 70.0]]), 8, 8, 16.0, 1.5)
    pos = torch.stack([t.is_positive, torch.zeros_like(t.is_positive)])
    terms = head_losses(out, pos, torch.stack([t.distances] * 2), torch.stack([t.centerness] * 2), 16.0,
                        focal_alpha=0.25, focal_gamma=2.0)
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in head.parameters())
    none = head_losses(head(torch.randn(1, 32, 4, 4)), torch.zeros(1, 4, 4, dtype=torch.bool),
                       torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4), 16.0, focal_alpha=0.25, focal_gamma=2.0)
    assert none["box"].item() == 0.0 and torch.isfinite(none["objectness"])


def test_tiny_detector_finds_its_objects(toy, tiny_detector):
    det = AgnosticDetector(toy, tiny_detector, TINY_HEAD)
    cfg = InferenceConfig(image_size=None, scales=(1.0,))
    found = total = 0
    for seed in range(100, 110):  # scenes never trained on
        img, boxes = rectangles_scene(seed)
        props = det.propose(img, cfg, max_proposals=5, nms_iou=0.5)
        assert props.boxes_xyxy.shape[1] == 4 and (props.scores[:-1] >= props.scores[1:]).all()
        found += int((box_iou(boxes, props.boxes_xyxy).max(dim=1).values >= 0.5).sum())
        total += len(boxes)
    assert found / total >= 0.75, f"recall@0.5 of the 5 best proposals: {found}/{total}"


def test_detector_file_round_trip_and_resume(toy, tiny_detector, tmp_path):
    path = tmp_path / "det.pt"
    white = fit_pca_whitening(torch.randn(50, 32), 0.1)
    save_detector(path, tiny_detector, TINY_HEAD, TINY_TRAIN.retrieval, white, trunk="toy")
    loaded = load_detector(path)
    assert loaded.head_config == TINY_HEAD and loaded.retrieval_config == TINY_TRAIN.retrieval
    x = torch.randn(1, 32, 6, 6)
    a, b = tiny_detector(x), loaded.head(x)
    assert torch.allclose(a.objectness_logits, b.objectness_logits, atol=2e-2)
    assert torch.allclose(loaded.whitening.projection, white.projection, atol=1e-2, rtol=1e-2)
    torch.save({"kind": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an os2d class-agnostic detector"):
        load_detector(tmp_path / "other.pt")
    # two epochs at once == one epoch, checkpoint, resume for the second
    img, boxes = rectangles_scene(0)
    levels = compute_levels(toy, img, boxes, [img.size])
    cfg = TINY_TRAIN.replace(epochs=2)
    straight = train_head(levels, cfg)
    ckpt = tmp_path / "ckpt.pt"
    train_head(levels, cfg.replace(epochs=1), checkpoint=ckpt)
    resumed = train_head(levels, cfg, checkpoint=ckpt)
    for (k, v), w in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(v, w, atol=1e-6), k
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"] == 2


def test_retrieval_ranks_a_known_crop_first(toy):
    objects = [textured_object((96, 128), seed=s) for s in range(3)]
    scene = scene_with(objects[1], [(200, 100)], size=(480, 352))
    scene.paste(objects[2], (40, 60))
    crops = crop_boxes(scene, torch.tensor([[200.0, 100.0, 296.0, 228.0], [40.0, 60.0, 136.0, 188.0]]), 64)
    sims = embed_images(toy, crops, size=64, gem_p=3.0) @ embed_images(toy, objects, size=64, gem_p=3.0).T
    assert sims.argmax(dim=1).tolist() == [1, 2]


def test_gem_and_whitening_known_values():
    x = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]]])  # (1, 2, 1, 2)
    assert gem(x, 1.0).tolist() == [[2.0, 2.0]]
    assert gem(x, 3.0)[0, 0].item() == pytest.approx(14.0 ** (1 / 3))
    signed = signed_gem(torch.tensor([[[[2.0, -4.0]]]]), 1.0, eps=0.0)  # (1, 1, 1, 2): positive, negative part
    assert signed.tolist() == [[1.0, 2.0]]
    g = torch.Generator().manual_seed(0)
    d = torch.randn(400, 6, generator=g) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    w = fit_pca_whitening(d, shrinkage=0.0)
    z = (d - w.mean) @ w.projection.T
    assert torch.allclose(z.T @ z / 399, torch.eye(6), atol=1e-3)
    assert torch.allclose(w(d).norm(dim=1), torch.ones(400), atol=1e-5)


def test_method_in_the_harness_detects_and_labels(toy, tiny_detector, tmp_path):
    path = tmp_path / "det.pt"
    save_detector(path, tiny_detector, TINY_HEAD, TINY_TRAIN.retrieval, None, trunk="toy")
    cfg = InferenceConfig(image_size=None, scales=(1.0,), max_detections=7)
    method = build_method("detector-retrieval", cfg, model=toy, detector=path, num_proposals=10)
    img, boxes = rectangles_scene(101)
    assert len(method.detect(img)) == 0  # no classes yet
    for i, b in enumerate(boxes):  # each class image: the crop of one object
        method.add_class(f"c{i}", [img.crop(tuple(int(v) for v in b.tolist()))])
    dets = method.detect(img)
    assert 0 < len(dets) <= 7 and dets.class_names == [f"c{i}" for i in range(len(boxes))]
    assert (dets.scores[:-1] >= dets.scores[1:]).all()
    # the toy trunk's random features rank poorly, but some detection is its own class's object
    own = box_iou(dets.boxes_xyxy, boxes)[torch.arange(len(dets)), dets.labels]
    assert float(own.max()) >= 0.5
    assert method.describe()["method"] == "detector-retrieval" and method.describe()["whitening"] is False
    with pytest.raises(FileNotFoundError):
        build_method("detector-retrieval", cfg, model=toy, detector=tmp_path / "missing.pt")


def test_whitening_must_fit_the_descriptor(toy, tiny_detector, tmp_path):
    path = tmp_path / "det.pt"
    white = fit_pca_whitening(torch.randn(80, 64), 0.1)  # signed GeM of the 32-channel toy trunk: 64 dims
    save_detector(path, tiny_detector, TINY_HEAD, TINY_TRAIN.retrieval, white, trunk="toy")
    cfg = InferenceConfig(image_size=None)
    method = build_method("detector-retrieval", cfg, model=toy, detector=path, use_whitening=True)
    method.add_class("a", [textured_object()])
    assert method.describe()["whitening"] is True and len(method.detect(scene_with(textured_object(), [(10, 10)])))
    with pytest.raises(ValueError, match="whitening was fitted on 64-dim"):
        build_method("detector-retrieval", cfg, model=toy, detector=path, use_whitening=True, gem_signed=False)


def test_a_detector_of_another_trunk_is_flagged(toy, tiny_detector, tmp_path, caplog):
    path = tmp_path / "det.pt"
    save_detector(path, tiny_detector, TINY_HEAD, TINY_TRAIN.retrieval, None, trunk="other", trunk_fingerprint="0" * 16)
    with caplog.at_level("WARNING"):
        method = build_method("detector-retrieval", InferenceConfig(image_size=None), model=toy, detector=path)
    assert method.describe()["trunk_matches"] is False and "trained on the trunk of the weights 'other'" in caplog.text


def test_read_box_csvs_drops_every_image_with_an_excluded_class(tmp_path):
    (tmp_path / "b.csv").write_text("image,class,x1,y1,x2,y2\na.jpg,Nike,0,0,10,10\na.jpg,Adidas,5,5,20,20\n"
                                    "b.jpg,Adidas,1,2,3,4\nc.jpg,Ford,1,1,9,9\n")
    images = read_box_csvs([tmp_path / "b.csv"], exclude_classes=("Nike", "Ford"))
    assert [Path(i.path).name for i in images] == ["b.jpg"] and images[0].boxes_xyxy.tolist() == [[1, 2, 3, 4]]
    assert level_sizes(400, 300, torch.tensor([[0.0, 0.0, 50.0, 50.0]]), (100.0, 2000.0), (320, 1024)) == [
        (800, 600), (1182, 887)]


def test_config_validation_and_cli_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown"):
        detector_train_config_from_dict({}, ["head.hiden_channels=8"])
    with pytest.raises(ValueError):
        HeadConfig(hidden_channels=12)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 1\n")
    assert main(["train-detector", "--config", str(cfg), "--output-dir", str(tmp_path / "run")]) == 2
    assert "no training boxes" in capsys.readouterr().err
    assert main(["train-detector", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_head_output_scores_are_probabilities():
    out = HeadOutput(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, 4))
    assert torch.allclose(out.scores(), torch.full((1, 2, 2), 0.5))
    assert torch.allclose(out.distances(16.0), torch.full((1, 2, 2, 4), 16.0))


def test_eval_cli_detector_flag_goes_with_its_method(tmp_path, capsys):
    img, boxes = rectangles_scene(3)
    img.save(tmp_path / "scene.png")
    img.crop(tuple(int(v) for v in boxes[0].tolist())).save(tmp_path / "cls.png")
    (tmp_path / "boxes.csv").write_text("image,class,x1,y1,x2,y2\n" + "".join(
        f"scene.png,a,{','.join(str(int(v)) for v in b.tolist())}\n" for b in boxes[:1]))
    (tmp_path / "classes.csv").write_text(f"name,path\na,{tmp_path / 'cls.png'}\n")
    common = ["eval", "--boxes", str(tmp_path / "boxes.csv"), "--classes", str(tmp_path / "classes.csv"),
              "--output-dir", str(tmp_path / "out"), "--no-plots", "--quiet"]
    assert main([*common, "--method", "template", "--detector", str(tmp_path / "boxes.csv")]) == 2
    assert "--detector goes with --method detector-retrieval" in capsys.readouterr().err
    assert main([*common, "--method", "detector-retrieval", "--detector", str(tmp_path / "none.pt")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_packaged_detector_is_small_and_fits_the_default_trunk():
    from os2d.evaluation.baselines.detector_retrieval import DEFAULT_DETECTOR

    assert DEFAULT_DETECTOR.is_file() and DEFAULT_DETECTOR.stat().st_size < 2_000_000
    weights = load_detector(DEFAULT_DETECTOR)
    assert weights.trunk == "default" and weights.head_config.in_channels == 112  # EfficientNet-Lite0 stage 5
    assert weights.retrieval_config.gem_signed and not weights.retrieval_config.use_whitening
    assert weights.whitening is not None and weights.whitening.projection.shape == (224, 224)
    from os2d.weights import load_model
    from os2d.weights.fingerprint import model_fingerprint

    assert weights.trunk_fingerprint == model_fingerprint(load_model("default"))
