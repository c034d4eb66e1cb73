"""The CoAE baseline (os2d.coae, os2d.evaluation.baselines.coae) with the tiny deterministic backbone: RoIAlign
known values, box coding, the head's co-attention at initialisation, RoI sampling with look-alikes, the loss terms,
a short training run on generated scenes that finds each class's own object, the weights file, the harness method
and the CLI."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import make_toy_model
from helpers import textured_object
from PIL import Image

from os2d.agnostic.cache import compute_levels
from os2d.agnostic.config import DetectorTrainConfig, HeadConfig
from os2d.agnostic.proposals import PyramidLevel
from os2d.apps.cli.main import main
from os2d.coae.config import CoaeHeadConfig, CoaeTrainConfig
from os2d.coae.data import read_labelled_csvs, sample_rois
from os2d.coae.head import build_coae_head, decode_boxes, encode_boxes
from os2d.coae.roi import roi_align
from os2d.coae.weights import CoaeWeights, load_coae, save_coae
from os2d.config import InferenceConfig
from os2d.evaluation.baselines import build_method
from os2d.evaluation.baselines.coae import assign_levels
from os2d.io import image_to_tensor
from os2d.ops import box_iou
from os2d.train.coae import TrainingLevel, coae_config_from_dict, coae_losses, draw_query, train_coae_head
from os2d.train.detector_head import train_head

TINY_HEAD = CoaeHeadConfig(in_channels=32, pool_size=5, attention_dim=16, excitation_reduction=4, hidden_channels=32,
                           fc_dim=64, query_size=64)
TINY_TRAIN = CoaeTrainConfig(head=TINY_HEAD, steps=150, batch_size=6, rois_per_sample=24, lr=3e-3, seed=0,
                             checkpoint_every=50)
TINY_DETECTOR = DetectorTrainConfig(head=HeadConfig(in_channels=32, hidden_channels=32, dilations=(1, 2)),
                                    crop_cells=16, epochs=40, batch_size=8, lr=1e-2, seed=0, whitening_crops=0)
OBJECTS = [textured_object((64, 80), seed=3), textured_object((64, 80), seed=4)]  # two classes


def two_class_scene(seed: int, size: int = 256) -> tuple[Image.Image, torch.Tensor, torch.Tensor]:
    """Both class objects (at random, non-overlapping places) on a noisy background: image, boxes (2, 4), labels."""
    g = torch.Generator().manual_seed(seed)
    bg = (torch.randn(size, size, 3, generator=g) * 20 + 128).clamp(0, 255).to(torch.uint8).numpy()
    img = Image.fromarray(bg)
    boxes: list[list[float]] = []
    while len(boxes) < 2:
        x, y = (int(v) for v in torch.randint(0, size - 80, (2,), generator=g))
        cand = [float(x), float(y), x + 64.0, y + 80.0]
        if boxes and float(box_iou(torch.tensor([cand]), torch.tensor(boxes)).max()) > 0:
            continue
        img.paste(OBJECTS[len(boxes)], (x, y))
        boxes.append(cand)
    return img, torch.tensor(boxes), torch.tensor([0, 1])


@pytest.fixture(scope="module")
def toy():
    return make_toy_model()


@pytest.fixture(scope="module")
def tiny_coae(toy):
    """A proposal head and a CoAE head trained on 16 generated scenes (single thread: tiny convolutions)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cached = []
        for seed in range(16):
            img, boxes, labels = two_class_scene(seed)
            cached += [(lv, labels) for lv in compute_levels(toy, img, boxes, [img.size])]
        proposal_head = train_head([lv for lv, _ in cached], TINY_DETECTOR)
        levels = []
        for lv, labels in cached:  # proposals: the objects, shifted copies of them and background boxes
            g = torch.Generator().manual_seed(len(levels))
            noise = (torch.rand(12, 4, generator=g) - 0.5) * 60
            background = torch.rand(8, 2, generator=g) * 180
            proposals = torch.cat([lv.boxes_xyxy.repeat(6, 1) + noise,
                                   torch.cat([background, background + 60], dim=1)])
            levels.append(TrainingLevel(lv.features, lv.boxes_xyxy, labels, 0, proposals))
        queries = toy.extract_features(torch.stack([image_to_tensor(o.resize((64, 64))) for o in OBJECTS]),
                                       align_to_anchors=False)
        head = train_coae_head(levels, queries.half(), [0, 1], TINY_TRAIN)
        return head, proposal_head
    finally:
        torch.set_num_threads(threads)


def save_tiny(path, tiny_coae, trunk_fingerprint=None):
    head, proposal_head = tiny_coae
    save_coae(path, CoaeWeights(head, TINY_HEAD, proposal_head, TINY_DETECTOR.head, 20, 0.5, "toy", trunk_fingerprint))


def test_roi_align_known_values():
    # channel 0 = the cell centre's x pixel, channel 1 = its y pixel: bilinear samples of a linear map are exact
    h, w, stride = 6, 8, 16.0
    xs = (torch.arange(w) + 0.5) * stride
    ys = (torch.arange(h) + 0.5) * stride
    feats = torch.stack([xs[None].expand(h, w), ys[:, None].expand(h, w)])
    out = roi_align(feats, torch.tensor([[32.0, 24.0, 96.0, 72.0]]), stride=stride, size=2, sampling=2)
    assert out.shape == (1, 2, 2, 2)
    assert torch.allclose(out[0, 0], torch.tensor([[48.0, 80.0], [48.0, 80.0]]), atol=1e-4)  # bin centres in x
    assert torch.allclose(out[0, 1], torch.tensor([[36.0, 36.0], [60.0, 60.0]]), atol=1e-4)
    assert roi_align(feats, torch.zeros(0, 4), stride=stride, size=3).shape == (0, 2, 3, 3)


def test_box_coding_round_trip():
    props = torch.tensor([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 16.0, 16.0]])
    target = torch.tensor([[12.0, 18.0, 60.0, 90.0], [2.0, 3.0, 30.0, 10.0]])
    assert torch.allclose(decode_boxes(props, encode_boxes(props, target)), target, atol=1e-4)
    assert encode_boxes(props, props).abs().max() == 0


def test_head_starts_as_identity_attention_and_has_gradients():
    head = build_coae_head(TINY_HEAD)
    r = torch.randn(3, 5, 32)
    assert torch.equal(head.target_from_query(r, torch.randn(3, 7, 32)), r)  # zero-initialised W_z
    logits, deltas = head(torch.randn(3, 32, 5, 5), torch.randn(32, 4, 4))
    assert logits.shape == (3,) and deltas.shape == (3, 4)
    (logits.sum() + deltas.sum()).backward()
    assert all(p.grad is not None for p in head.parameters())
    batched, _ = head(torch.randn(2, 32, 5, 5), torch.randn(2, 32, 4, 4))  # one query per RoI
    assert batched.shape == (2,)


def test_sample_rois_labels_look_alikes_negative():
    boxes = torch.tensor([[0.0, 0.0, 50.0, 50.0], [100.0, 100.0, 150.0, 150.0]])
    labels = torch.tensor([0, 1])
    proposals = torch.tensor([[2.0, 2.0, 50.0, 50.0], [100.0, 100.0, 150.0, 150.0], [60.0, 0.0, 90.0, 30.0]])
    s = sample_rois(proposals, boxes, labels, 0, count=64, positive_fraction=0.5, positive_iou=0.5,
                    negative_iou=0.4, generator=torch.Generator().manual_seed(0))
    iou = box_iou(s.rois_xyxy, boxes[:1])[:, 0]
    assert s.is_positive.any() and (iou[s.is_positive] >= 0.5).all() and (iou[~s.is_positive] < 0.4).all()
    other = box_iou(s.rois_xyxy, boxes[1:])[:, 0]
    assert (other[~s.is_positive] > 0.9).any()  # the other class's object is a negative for this query
    assert torch.allclose(s.matched_xyxy[s.is_positive], boxes[:1].expand(int(s.is_positive.sum()), 4))
    few = sample_rois(proposals, boxes, labels, 0, count=4, positive_fraction=0.25, positive_iou=0.5,
                      negative_iou=0.4, generator=torch.Generator().manual_seed(0))
    assert len(few.rois_xyxy) <= 4 and int(few.is_positive.sum()) == 1  # at most a quarter positive
    absent = sample_rois(proposals, boxes, labels, 5, count=8, positive_fraction=0.5, positive_iou=0.5,
                         negative_iou=0.4, generator=torch.Generator().manual_seed(0))
    assert not absent.is_positive.any() and len(absent.rois_xyxy) == 3


def test_draw_query_picks_present_or_absent_classes_of_the_group():
    lv = TrainingLevel(torch.zeros(1, 1, 1), torch.zeros(1, 4), torch.tensor([1]), 0, torch.zeros(0, 4))
    g = torch.Generator().manual_seed(0)
    drawn = {draw_query(lv, [0, 0, 0, 1], 0.5, g) for _ in range(50)}
    assert drawn == {0, 1, 2}  # class 3 is of another group; class 1 is present
    assert {draw_query(lv, [0, 0, 0, 1], 0.0, g) for _ in range(10)} == {1}


def test_losses_known_values():
    logits = torch.tensor([5.0, -5.0, 4.0, -4.0])
    pos = torch.tensor([True, False, True, False])
    sample = torch.tensor([0, 0, 1, 1])
    terms = coae_losses(logits, torch.zeros(4, 4), pos, torch.zeros(4, 4), sample, margin=0.3)
    assert terms["rank"].item() == 0.0 and terms["box"].item() == 0.0 and terms["score"].item() < 0.02
    flipped = coae_losses(-logits, torch.zeros(4, 4), pos, torch.zeros(4, 4), sample, margin=0.3)
    assert flipped["rank"].item() > 1.0  # every negative above every positive
    none = coae_losses(logits, torch.zeros(4, 4), torch.zeros(4, dtype=torch.bool), torch.zeros(4, 4), sample, 0.3)
    assert none["box"].item() == 0.0 and none["rank"].item() == 0.0


def test_tiny_coae_finds_each_class_own_object(toy, tiny_coae, tmp_path):
    path = tmp_path / "coae.pt"
    save_tiny(path, tiny_coae)
    cfg = InferenceConfig(image_size=None, scales=(1.0,), max_detections=10)
    method = build_method("coae", cfg, model=toy, weights=path)
    img, boxes, _ = two_class_scene(100)
    assert len(method.detect(img)) == 0  # no classes yet
    method.add_class("a", [OBJECTS[0]])
    method.add_class("b", [OBJECTS[1]])
    right = 0
    for seed in range(100, 108):  # scenes never trained on
        img, boxes, _ = two_class_scene(seed)
        dets = method.detect(img)
        assert dets.class_names == ["a", "b"] and (dets.scores[:-1] >= dets.scores[1:]).all()
        for c in range(2):
            mine = dets.labels == c
            if mine.any():
                best = dets.boxes_xyxy[mine][dets.scores[mine].argmax()]
                right += int(box_iou(best[None], boxes[c:c + 1]).item() >= 0.5)
    assert right >= 12, f"best box of each class on its own object: {right}/16"
    d = method.describe()
    assert d["method"] == "coae" and d["trunk_matches"] is True and d["num_proposals"] == 20


def test_weights_file_round_trip_and_errors(toy, tiny_coae, tmp_path, caplog):
    path = tmp_path / "coae.pt"
    save_tiny(path, tiny_coae, trunk_fingerprint="0" * 16)
    w = load_coae(path)
    assert w.head_config == TINY_HEAD and w.num_proposals == 20 and w.trunk == "toy"
    x, q = torch.randn(2, 32, 5, 5), torch.randn(32, 4, 4)
    assert torch.allclose(w.head(x, q)[0], tiny_coae[0](x, q)[0], atol=0.05)  # float16 storage
    with caplog.at_level("WARNING"):
        method = build_method("coae", InferenceConfig(image_size=None), model=toy, weights=path)
    assert method.describe()["trunk_matches"] is False and "trained on the trunk of 'toy'" in caplog.text
    torch.save({"kind": "something"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not an os2d CoAE weights file"):
        load_coae(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        build_method("coae", InferenceConfig(image_size=None), model=toy, weights=tmp_path / "missing.pt")


def test_training_resumes_from_its_checkpoint(tiny_coae, tmp_path):
    levels = [TrainingLevel(torch.randn(32, 8, 8).half(), torch.tensor([[16.0, 16.0, 80.0, 96.0]]), torch.tensor([0]),
                            0, torch.tensor([[10.0, 20.0, 70.0, 90.0], [60.0, 60.0, 120.0, 120.0]]))]
    queries = torch.randn(2, 32, 4, 4).half()
    cfg = TINY_TRAIN.replace(steps=6, checkpoint_every=3)
    straight = train_coae_head(levels, queries, [0, 0], cfg)
    ckpt, halfway = tmp_path / "ckpt.pt", tmp_path / "step3.pt"

    def keep_step3(record):  # the checkpoint as an interrupt after step 3 would have left it
        if record["step"] == 3:
            shutil.copy(ckpt, halfway)

    train_coae_head(levels, queries, [0, 0], cfg, checkpoint=ckpt, log=keep_step3)
    assert torch.load(halfway, weights_only=True)["step"] == 3
    resumed = train_coae_head(levels, queries, [0, 0], cfg, checkpoint=halfway)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_level_assignment_picks_the_level_nearest_the_target_size():
    levels = [PyramidLevel((500, 500), torch.zeros(1)), PyramidLevel((1000, 1000), torch.zeros(1))]
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 300.0, 300.0]])  # 200 px / 600 px at level 1
    assert assign_levels(boxes, (500, 500), levels, 192.0).tolist() == [1, 0]


def test_labelled_csvs_drop_excluded_images_and_mark_classes_without_images(tmp_path):
    (tmp_path / "b.csv").write_text("image,class,x1,y1,x2,y2\na.jpg,Nike,0,0,10,10\na.jpg,Adidas,5,5,20,20\n"
                                    "b.jpg,Adidas,1,2,3,4\nb.jpg,Other,4,4,8,8\n")
    (tmp_path / "c.csv").write_text("class,class_image\nAdidas,x.jpg\nNike,y.jpg\nAdidas,z.jpg\n")
    data = read_labelled_csvs([tmp_path / "b.csv"], [tmp_path / "c.csv"], exclude_classes=("Nike",))
    assert data.class_names == ["Adidas"] and data.class_images == [str(tmp_path / "x.jpg")]
    assert len(data.images) == 1 and data.images[0].labels.tolist() == [0, -1]
    (tmp_path / "bad.csv").write_text("label,file\nA,x.jpg\n")
    with pytest.raises(ValueError, match="needs columns name,path"):
        read_labelled_csvs([tmp_path / "b.csv"], [tmp_path / "bad.csv"])


def test_config_validation_and_cli_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown"):
        coae_config_from_dict({}, ["head.fc_dims=8"])
    with pytest.raises(ValueError, match="pair up"):
        CoaeTrainConfig(box_csvs=("a.csv",))
    with pytest.raises(ValueError):
        CoaeTrainConfig(negative_iou=0.6, positive_iou=0.5)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 1\n")
    assert main(["train-coae", "--config", str(cfg), "--output-dir", str(tmp_path / "run")]) == 2
    assert "no training boxes" in capsys.readouterr().err
    assert main(["train-coae", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    img, boxes, _ = two_class_scene(3)
    img.save(tmp_path / "scene.png")
    OBJECTS[0].save(tmp_path / "cls.png")
    (tmp_path / "boxes.csv").write_text("image,class,x1,y1,x2,y2\nscene.png,a," + ",".join(
        str(int(v)) for v in boxes[0].tolist()) + "\n")
    (tmp_path / "classes.csv").write_text(f"name,path\na,{tmp_path / 'cls.png'}\n")
    common = ["eval", "--boxes", str(tmp_path / "boxes.csv"), "--classes", str(tmp_path / "classes.csv"),
              "--output-dir", str(tmp_path / "out"), "--no-plots", "--quiet"]
    assert main([*common, "--method", "template", "--coae", str(tmp_path / "boxes.csv")]) == 2
    assert "--coae goes with --method coae" in capsys.readouterr().err
    assert main([*common, "--method", "coae", "--coae", str(tmp_path / "none.pt")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_packaged_coae_is_small_and_fits_the_default_trunk():
    from os2d.agnostic.weights import DEFAULT_DETECTOR, load_detector
    from os2d.evaluation.baselines.coae import DEFAULT_COAE
    from os2d.weights import load_model
    from os2d.weights.fingerprint import model_fingerprint

    assert DEFAULT_COAE.is_file() and DEFAULT_COAE.stat().st_size < 4_000_000
    w = load_coae(DEFAULT_COAE)
    assert w.trunk == "default" and w.head_config.in_channels == 112 and w.num_proposals == 100
    assert w.trunk_fingerprint == model_fingerprint(load_model("default"))
    detector = load_detector(DEFAULT_DETECTOR)  # its proposals are the packaged detector's
    for k, v in detector.head.state_dict().items():
        assert torch.equal(v, w.proposal_head.state_dict()[k])
