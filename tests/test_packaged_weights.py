"""Compact (float16) weights files, packaged weights lookup, and partial backbone freezing for training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from os2d import weights
from os2d.config import ModelConfig
from os2d.model.os2d import build_os2d
from os2d.train.config import FreezeConfig
from os2d.train.optim import apply_freeze, backbone_blocks
from os2d.weights import WeightsError, load_model, save_compact


def _lite0():
    torch.manual_seed(0)
    return build_os2d(ModelConfig(backbone="efficientnet_lite0"), pretrained_backbone=False).eval()


def test_compact_half_file_is_the_model_rounded_to_float16(tmp_path: Path) -> None:
    model = _lite0()
    save_compact(tmp_path / "m.pt", model)
    save_compact(tmp_path / "m32.pt", model, half=False)
    half, full = load_model(tmp_path / "m.pt"), load_model(tmp_path / "m32.pt")
    assert (tmp_path / "m.pt").stat().st_size < 0.6 * (tmp_path / "m32.pt").stat().st_size
    ref = model.state_dict()
    for k, v in half.state_dict().items():
        assert v.dtype == ref[k].dtype  # loaded back into the float32 model
        if v.is_floating_point():
            torch.testing.assert_close(v, ref[k].half().float(), rtol=0, atol=0)
        torch.testing.assert_close(full.state_dict()[k], ref[k], rtol=0, atol=0)


def test_packaged_weights_missing_file_gives_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(weights, "ASSETS_DIR", tmp_path)
    with pytest.raises(WeightsError, match="missing from this installation"):
        load_model(next(iter(weights.PACKAGED_WEIGHTS)))


def test_packaged_weights_load_from_the_assets_dir(tmp_path: Path, monkeypatch) -> None:
    name, filename = next(iter(weights.PACKAGED_WEIGHTS.items()))
    save_compact(tmp_path / filename, _lite0())
    monkeypatch.setattr(weights, "ASSETS_DIR", tmp_path)
    model = load_model(name)
    assert model.config.backbone == "efficientnet_lite0" and not model.training


def test_shipped_packaged_weights_load() -> None:
    for name in weights.PACKAGED_WEIGHTS:
        if not (weights.ASSETS_DIR / weights.PACKAGED_WEIGHTS[name]).is_file():
            pytest.skip(f"{name} not built into this checkout")
        model = load_model(name)
        assert model.config.variant == "v2"
        # a trained TransformNet: its last layer is no longer the zero (identity) init
        assert float(model.transform_net.linear.weight.detach().abs().sum()) > 0


def test_backbone_train_last_unfreezes_only_the_last_blocks() -> None:
    model = _lite0()
    blocks = backbone_blocks(model.backbone)
    params = apply_freeze(model, FreezeConfig(backbone=True, backbone_train_last=3))
    trainable = {id(p) for p in params}
    for i, block in enumerate(blocks):
        assert all((id(p) in trainable) == (i >= len(blocks) - 3) for p in block.parameters())
    assert all(id(p) in trainable for p in model.transform_net.parameters())
    assert not any(p.requires_grad for p in model.backbone._conv_stem.parameters())
    with pytest.raises(ValueError, match="has 11 blocks"):
        apply_freeze(model, FreezeConfig(backbone=True, backbone_train_last=12))
    with pytest.raises(ValueError, match=">= 0"):
        FreezeConfig(backbone_train_last=-1)
