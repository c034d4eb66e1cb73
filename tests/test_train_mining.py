"""Hard patch mining on generated scenes with small models; the sampler turns mined patches into batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_toy_model
from test_train_sampler import make_dataset

from os2d.config import ModelConfig
from os2d.model.box_coder import make_anchors
from os2d.model.os2d import build_os2d
from os2d.ops import box_iou
from os2d.train.losses import LossConfig, Os2dObjective
from os2d.train.mining import MiningConfig, anchor_crops, mine_hard_patches
from os2d.train.sampler import MinedPatch, PatchSampler, SamplerConfig
from os2d.train.targets import assign

P = 256  # patch size
W, H = 384, 256  # scene size; one 176 px object per scene, objects ~ anchor-sized at the mined scales
IMAGE_SIZE = 313  # ~ sqrt(W * H): base scale s0 ~ 1
# margins that make every positive and most negatives "hard" for an untrained model (scores ~ 0.3)
LOSS = LossConfig(pos_margin=1.0, neg_margin=0.1)


def test_anchor_crops_aligned_and_shifted_inside() -> None:
    anchors = make_anchors(3, 5, stride=16, size=240)  # centres x 8..72, y 8..40
    crops = anchor_crops(anchors, 64, 16.0, level_width=80, level_height=48)
    x0 = crops[:, 0].view(3, 5)[0].tolist()
    # centre - 32 floored to the stride: -24 -> -32 -> 0 (inside), 8 -> 0, 24 -> 16, 40 -> 32 -> 16 (W - P)
    assert x0 == [0.0, 0.0, 0.0, 16.0, 16.0]
    assert bool((crops[:, 1] == 0).all())  # the level is shorter than P: crops start at 0 (padded later)
    torch.testing.assert_close(crops[:, 2:] - crops[:, :2], torch.full((15, 2), 64.0))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="scales"):
        MiningConfig(scales=(1.6, 0.5))
    with pytest.raises(ValueError, match="nms_iou"):
        MiningConfig(nms_iou=1.5)
    assert MiningConfig(scales=[1, 2]).scales == (1.0, 2.0)


def check_patches(mined: list[MinedPatch], dataset, config: MiningConfig) -> None:
    """Sensible patches: counts, sizes, alignment, ranking, NMS, classes."""
    assert mined and all(isinstance(p, MinedPatch) for p in mined)
    for p in mined:
        rec = dataset.images[p.image_index]
        x0, y0, x1, y1 = p.crop_xyxy
        sx, sy = int(W * p.scale) / W, int(H * p.scale) / H
        assert (x1 - x0) * sx == pytest.approx(P, abs=1e-3) and (y1 - y0) * sy == pytest.approx(P, abs=1e-3)
        assert x0 >= 0 and y0 >= 0  # shifted inside; past the right/bottom only when the level is small
        level_w, level_h = int(W * p.scale), int(H * p.scale)
        assert x1 <= W + 1e-3 or level_w < P
        assert y1 <= H + 1e-3 or level_h < P
        for start, limit in ((x0 * sx, level_w - P), (y0 * sy, level_h - P)):  # stride-aligned or at the border
            assert start == pytest.approx(round(start / 16) * 16, abs=1e-3) or start == pytest.approx(limit, abs=1e-3)
        assert p.loss > 0 and config.scales[0] * 0.99 <= p.scale * np.sqrt(W * H) / IMAGE_SIZE <= config.scales[1] * 1.01
        if p.kind in ("pos", "loc"):  # a positive of the image's own class, its object inside the crop
            assert p.class_id in set(rec.labels.tolist())
            bx = rec.boxes_xyxy[rec.labels == p.class_id]
            assert (np.minimum(bx[:, 2], x1) - np.maximum(bx[:, 0], x0)).max() > 0
    for index in {p.image_index for p in mined}:
        for kind in ("neg", "pos", "loc"):
            group = [p for p in mined if p.image_index == index and p.kind == kind]
            assert len(group) <= config.num_hard
            losses = [p.loss for p in group]
            assert losses == sorted(losses, reverse=True)
            if len(group) > 1:
                iou = box_iou(torch.tensor([p.crop_xyxy for p in group]), torch.tensor([p.crop_xyxy for p in group]))
                assert float((iou - torch.eye(len(group))).max()) <= config.nms_iou + 1e-6


def test_mining_with_toy_model_feeds_the_sampler(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path, num_images=2, num_classes=4, size=(W, H), obj=176, per_image=1)
    model = make_toy_model()
    model.train()
    config = MiningConfig(num_random_classes=2, num_scales=2, scales=(0.9, 1.3), num_hard=3)
    sampler_config = SamplerConfig(patch_size=P, batch_size=2, class_batch_size=3, class_image_size=96)
    rng = np.random.default_rng(0)
    mined = mine_hard_patches(model, Os2dObjective(LOSS), dataset, sampler_config, config, image_size=IMAGE_SIZE,
                              rng=rng, device="cpu", progress=False)
    assert model.training  # mode restored
    check_patches(mined, dataset, config)
    kinds = {p.kind for p in mined}
    assert kinds == {"neg", "pos", "loc"}, kinds
    assert {p.image_index for p in mined} == {0, 1}

    # the sampler consumes the pool: half negatives, half positives, crops and classes taken from it
    sampler = PatchSampler(dataset, sampler_config, image_size=IMAGE_SIZE)
    batch = sampler.sample([0, 1], np.random.default_rng(1), mined=mined)
    assert batch.images.shape == (2, 3, P, P)
    used = sampler.select_mined(mined, 2, np.random.default_rng(1))  # the first draws of `sample`
    assert [p.kind for p in used][0] == "neg" and used[1].kind in ("pos", "loc")
    assert batch.crops_xyxy == [p.crop_xyxy for p in used]
    assert batch.image_indices == [p.image_index for p in used]
    assert {p.class_id for p in used} <= set(batch.class_ids)
    # a mined positive patch is a positive training patch: its object is there and gets a localisation positive
    pos_label = batch.class_ids.index(used[1].class_id)
    anchors = make_anchors(P // 16, P // 16, stride=16, size=240)
    targets, _ = assign(anchors, batch.boxes[1], batch.labels[1], batch.difficult[1], len(batch.class_ids))
    assert bool((batch.labels[1] == pos_label).any()) and bool((targets[pos_label] == 1).any())


def test_mining_with_efficientnet_lite0(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path, num_images=1, num_classes=3, size=(W, H), obj=176, per_image=1, seed=1)
    torch.manual_seed(0)
    model = build_os2d(ModelConfig(backbone="efficientnet_lite0"), pretrained_backbone=False)
    config = MiningConfig(num_random_classes=1, num_scales=1, scales=(1.2, 1.2), num_hard=2)
    sampler_config = SamplerConfig(patch_size=P, class_image_size=96)
    mined = mine_hard_patches(model, Os2dObjective(LOSS), dataset, sampler_config, config, image_size=IMAGE_SIZE,
                              rng=np.random.default_rng(0), device="cpu", progress=False)
    assert not model.training
    check_patches(mined, dataset, config)
    assert {p.kind for p in mined} >= {"neg", "loc"}
    assert len(mined) <= 3 * config.num_hard
