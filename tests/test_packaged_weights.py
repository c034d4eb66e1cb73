"""Compact (float16) weights files, packaged weights lookup, and partial backbone freezing for training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from os2d.config import ModelConfig
from os2d.model.os2d import build_os2d
from os2d.train.config import FreezeConfig
from os2d.train.optim import apply_freeze
from os2d.weights import DEFAULT_WEIGHTS, WeightsError, load_model, model_fingerprint, save_checkpoint
from os2d.weights import registry as reg


def _lite0():
    torch.manual_seed(0)
    return build_os2d(ModelConfig(backbone="efficientnet_lite0"), pretrained_backbone=False).eval()


def test_compact_half_file_is_the_model_rounded_to_float16(tmp_path: Path) -> None:
    model = _lite0()
    save_checkpoint(tmp_path / "m.pt", model, half=True)
    save_checkpoint(tmp_path / "m32.pt", model)
    half, full = load_model(tmp_path / "m.pt"), load_model(tmp_path / "m32.pt")
    assert (tmp_path / "m.pt").stat().st_size < 0.6 * (tmp_path / "m32.pt").stat().st_size
    ref = model.state_dict()
    for k, v in half.state_dict().items():
        assert v.dtype == ref[k].dtype  # loaded back into the float32 model
        if v.is_floating_point():
            torch.testing.assert_close(v, ref[k].half().float(), rtol=0, atol=0)
        torch.testing.assert_close(full.state_dict()[k], ref[k], rtol=0, atol=0)


def test_packaged_weights_missing_file_gives_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(reg, "ASSETS_DIR", tmp_path)
    with pytest.raises(WeightsError, match="missing from this installation"):
        load_model(DEFAULT_WEIGHTS)
    with pytest.raises(WeightsError, match="missing from this installation"):
        load_model("default")


def test_packaged_weights_load_from_the_assets_dir(tmp_path: Path, monkeypatch) -> None:
    name, filename = DEFAULT_WEIGHTS, reg.REGISTRY[DEFAULT_WEIGHTS].filename
    save_checkpoint(tmp_path / filename, _lite0(), half=True)
    monkeypatch.setattr(reg, "ASSETS_DIR", tmp_path)
    model = load_model(name)
    assert model.config.backbone == "efficientnet_lite0" and not model.training


def test_shipped_packaged_weights_load() -> None:
    for name in [e.name for e in reg.REGISTRY.values() if e.kind == "packaged"]:
        if not reg.packaged_weights_path(name, check=False).is_file():
            pytest.skip(f"{name} not built into this checkout")
        model = load_model(name)
        assert model.config.variant == "v2"
        # a trained TransformNet: its last layer is no longer the zero (identity) init
        assert float(model.transform_net.linear.weight.detach().abs().sum()) > 0


def test_fingerprint_follows_the_weights() -> None:
    model = _lite0()
    first = model_fingerprint(model)
    assert model_fingerprint(model) == first  # unchanged model: same id (memoised)
    assert model_fingerprint(_lite0()) == first  # same weights in another model: same id
    with torch.no_grad():
        model.transform_net.linear.bias.add_(0.5)  # in place, e.g. an optimizer step
    changed = model_fingerprint(model)
    assert changed != first and model_fingerprint(model) == changed
    model.load_state_dict(_lite0().state_dict())  # copied back: the original id again
    assert model_fingerprint(model) == first
    model.transform_net.linear.bias = torch.nn.Parameter(torch.ones_like(model.transform_net.linear.bias))
    replaced = model_fingerprint(model)
    assert replaced not in (first, changed)  # a replaced tensor
    model.transform_net.conv[1].running_mean.add_(0.1)  # a buffer, as a training forward moves BN statistics
    assert model_fingerprint(model) != replaced


def test_backbone_train_last_unfreezes_only_the_last_blocks() -> None:
    model = _lite0()
    blocks = model.backbone.blocks()
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


def test_cli_compact_writes_a_small_loadable_file_and_keeps_existing_ones(tmp_path: Path, capsys) -> None:
    from os2d.apps.cli.main import main

    model = _lite0()
    ckpt = tmp_path / "run.pt"
    save_checkpoint(ckpt, model, optimizer={"state": {0: torch.zeros(500_000)}}, step=7)  # training extras
    out = tmp_path / "small.pt"
    assert main(["weights", "compact", str(ckpt), str(out)]) == 0
    assert "float16" in capsys.readouterr().out
    assert out.stat().st_size < 0.5 * ckpt.stat().st_size
    assert set(torch.load(out, weights_only=True)) == {"format", "version", "config", "model"}
    loaded = load_model(out)
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k].half().to(v.dtype), rtol=0, atol=0)
    assert main(["weights", "compact", str(ckpt), str(out)]) == 2  # refuses to overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["weights", "compact", str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")]) == 2


def test_backbone_train_last_on_resnet_trains_the_end_of_layer3() -> None:
    torch.manual_seed(0)
    model = build_os2d(ModelConfig.v2(backbone="resnet50"), pretrained_backbone=False)
    trainable = {id(p) for p in apply_freeze(model, FreezeConfig(backbone=True, backbone_train_last=2))}
    for name, p in model.backbone.named_parameters():
        assert (id(p) in trainable) == name.startswith(("layer3.4.", "layer3.5.")), name


def test_default_model_recipe_configs_load_and_chain() -> None:
    from os2d.train.config import load_train_config

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "default_model"
    stage1 = load_train_config(recipe / "train.yaml")
    stage2 = load_train_config(recipe / "train_stage2.yaml")
    assert stage1.model == stage2.model and stage1.train_data == stage2.train_data and stage1.loss == stage2.loss
    assert stage2.init.weights == f"{stage1.output_dir}/final.pt"  # stage 2 continues from stage 1
    assert not stage2.init.pretrained_backbone and stage2.init.transform is None
    assert (stage1.freeze.backbone_train_last, stage2.freeze.backbone_train_last) == (3, 5)
    assert stage2.output_dir != stage1.output_dir
