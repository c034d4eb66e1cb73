"""``ModelConfig.anchor_aspect_search``: at inference the heads try more anchor shapes and each location keeps the
best-scoring one; TransformNet is shared, so each anchor's values equal the single-anchor head's."""

from __future__ import annotations

import pytest
import torch
from helpers import trained_like_transform_net

from os2d.config import ModelConfig
from os2d.model.correlation import class_kernels, resize_class_features
from os2d.model.head import anchor_powers, os2d_head


def _inputs():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(2, 16, 14, 17, generator=g)
    kernels = class_kernels(torch.stack([resize_class_features(torch.randn(16, 9, 12, generator=g))
                                         for _ in range(3)]))
    return feats, kernels, torch.tensor([0.4, 1.0, 2.5]), trained_like_transform_net(0, linear_std=0.05)


def test_each_location_keeps_the_best_anchor():
    feats, kernels, aspect, net = _inputs()
    with torch.no_grad():
        single = {p: os2d_head(feats, kernels, net, invert_transform=True, aspect=aspect, aspect_power=p)
                  for p in (0.5, 0.0, 1.0)}
        both = os2d_head(feats, kernels, net, invert_transform=True, aspect=aspect, aspect_power=0.5,
                         aspect_search=(0.0, 1.0, 0.5), class_chunk=2)
    scores = torch.stack([single[p].scores for p in (0.5, 0.0, 1.0)])  # (A, B, K, H, W)
    torch.testing.assert_close(both.scores, scores.amax(0), rtol=0, atol=0)
    pick = torch.where(single[0.0].scores > single[0.5].scores, 1, 0)  # ties keep the earlier anchor
    pick = torch.where(single[1.0].scores > torch.maximum(single[0.0].scores, single[0.5].scores), 2, pick)
    boxes = torch.stack([single[p].boxes_xyxy for p in (0.5, 0.0, 1.0)])
    want = boxes.gather(0, pick[None, ..., None].expand(1, *pick.shape, 4))[0]
    torch.testing.assert_close(both.boxes_xyxy, want, rtol=0, atol=0)
    assert 0 < float((pick != 0).float().mean()) < 1  # both kinds of location occur, so the test means something
    # the square class view (aspect 1) is the same under every anchor
    torch.testing.assert_close(both.scores[:, 1], single[0.5].scores[:, 1], rtol=0, atol=0)


def test_search_skipped_where_it_cannot_change_anything():
    assert anchor_powers(None, 0.5, (1.0,)) == [0.5]
    assert anchor_powers(torch.ones(3), 0.5, (1.0,)) == [0.5]  # every view square
    assert anchor_powers(torch.tensor([2.0]), 0.5, (1.0, 0.5, 1.0)) == [0.5, 1.0]


def test_search_is_for_inference_only():
    feats, kernels, aspect, net = _inputs()
    with pytest.raises(ValueError, match="inference"):
        os2d_head(feats, kernels, net, invert_transform=True, aspect=aspect, aspect_power=0.5, aspect_search=(1.0,),
                  with_detached_scores=True)


def test_config_round_trip_and_checks():
    cfg = ModelConfig(anchor_aspect_power=0.5, anchor_aspect_search=[1.0])
    assert cfg.anchor_aspect_search == (1.0,)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert "anchor_aspect_search" not in ModelConfig().to_dict()  # old files and fingerprints unchanged
    with pytest.raises(ValueError, match="anchor_aspect_search"):
        ModelConfig(anchor_aspect_search=(1.5,))
