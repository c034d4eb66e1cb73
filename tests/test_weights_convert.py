"""Foreign weight formats -> os2d: explicit remappings, strict checks, variant inference, safe unpickling.

Every foreign file is built here with the real key layout and shapes (ResNet-50 at most; ResNet-101 only as
meta tensors for key/shape logic), from a model with random non-trivial weights, so that a conversion can be
compared tensor by tensor and output by output with the model it came from.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from os2d.config import ModelConfig
from os2d.model.backbone.resnet import _make_stage
from os2d.model.os2d import Os2dModel, build_os2d
from os2d.weights import (
    WeightsError,
    convert,
    load_model,
    model_from_file,
    read_weights_file,
    save_checkpoint,
)
from os2d.weights.convert import (
    OFFICIAL_BACKBONE_PREFIX,
    OFFICIAL_CLASS_BACKBONE_PREFIX,
    OFFICIAL_TRANSFORM_PREFIX,
    convert_official_checkpoint,
)

# ------------------------------------------------------------------------------------------------------------
# builders of foreign files


def randomize(model: Os2dModel, seed: int = 0) -> Os2dModel:
    """Non-trivial weights everywhere (BN statistics, TransformNet output not the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                scale = 0.01 if name.startswith("transform_net.linear") else 0.1
                t.copy_(torch.randn(t.shape, generator=g) * scale + (1.0 if name.endswith("bn1.weight") else 0.0))
        bias = model.transform_net.linear.bias
        bias.copy_(torch.tensor([1.0, 0.05, 0.1, -0.05, 0.9, -0.1][: bias.numel()]))
    return model.eval()


def torchvision_layout(trunk: dict[str, torch.Tensor], *, old: bool = True) -> dict[str, torch.Tensor]:
    """Full torchvision ResNet-50 file: our conv1..layer3 + a real-shaped layer4 and fc.

    ``old``: like resnet50-19c8e357.pth (saved before PyTorch 0.4.1: no num_batches_tracked)."""
    layer4 = {"layer4." + k: torch.zeros_like(v) for k, v in _make_stage(1024, 512, 3, 2).state_dict().items()}
    state = {**trunk, **layer4, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    if old:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    return state


SEQ = {"conv1.": "0.", "bn1.": "1.", "layer1.": "4.", "layer2.": "5.", "layer3.": "6.", "layer4.": "7."}


def sequential_layout(tv: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """torchvision names -> nn.Sequential indices (cirtorch Caffe2 files, weakalign FeatureExtraction)."""
    out = {}
    for k, v in tv.items():
        if k.startswith("fc."):
            continue
        head = next(p for p in SEQ if k.startswith(p))
        out[prefix + SEQ[head] + k[len(head):]] = v
    return out


def official_layout(model: Os2dModel) -> dict:
    """Our state dict renamed to the official OS2D checkpoint, with the shared backbone registered twice."""
    net = {}
    for k, v in model.state_dict().items():
        if k.startswith("backbone."):
            net[OFFICIAL_BACKBONE_PREFIX + k[len("backbone."):]] = v
            net[OFFICIAL_CLASS_BACKBONE_PREFIX + k[len("backbone."):]] = v
        else:
            net[OFFICIAL_TRANSFORM_PREFIX + k[len("transform_net."):]] = v
    return {"net": net}


class WeakalignRegression(nn.Module):
    """weakalign's FeatureRegression as published: valid convolutions + a Linear on the flattened 5x5 map."""

    def __init__(self, outputs: int = 6) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(225, 128, 7), nn.BatchNorm2d(128), nn.ReLU(),
                                  nn.Conv2d(128, 64, 5), nn.BatchNorm2d(64), nn.ReLU())
        self.linear = nn.Linear(64 * 5 * 5, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.conv(x).flatten(1))


def weakalign_regression(seed: int = 3, outputs: int = 6) -> WeakalignRegression:
    torch.manual_seed(seed)
    net = WeakalignRegression(outputs)
    with torch.no_grad():
        for bn in (net.conv[1], net.conv[4]):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.normal_(1, 0.1)
            bn.bias.normal_(0, 0.1)
    return net.eval()


def weakalign_file(regression: WeakalignRegression, features: dict[str, torch.Tensor] | None = None) -> dict:
    """A weakalign .pth.tar: training extras (argparse args, numpy losses, optimizer) + state_dict without
    num_batches_tracked (PyTorch 0.3), affine stage, TPS stage and optionally the feature extractor."""
    state = {}
    for k, v in regression.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            state["FeatureRegression." + k] = v
    for k, v in weakalign_regression(9, 18).state_dict().items():
        if not k.endswith("num_batches_tracked"):
            state["FeatureRegression2." + k] = v
    state.update(features or {})
    return {"epoch": 5, "args": argparse.Namespace(feature_extraction_cnn="resnet101", lr=5e-8),
            "state_dict": state, "best_test_loss": np.float64(-0.7), "train_loss": np.zeros(5),
            "test_loss": np.zeros(5, dtype=np.float32), "optimizer": {"state": {}, "param_groups": []}}


def meta_trunk_state(depth: str) -> dict[str, torch.Tensor]:
    """A ResNet trunk state dict without memory (shapes and keys only)."""
    from os2d.model.backbone.resnet import ResNetTrunk

    with torch.device("meta"):
        return ResNetTrunk(depth).state_dict()


# ------------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def r50() -> Os2dModel:
    torch.manual_seed(0)
    return randomize(build_os2d(ModelConfig.v2("resnet50")))


@pytest.fixture(scope="module")
def trunk(r50) -> dict[str, torch.Tensor]:
    return r50.backbone.state_dict()


@pytest.fixture(scope="module")
def files(tmp_path_factory, r50, trunk) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("foreign")
    tv = torchvision_layout(trunk)
    paths = {}

    def save(name: str, obj, **kw) -> None:
        paths[name] = root / name
        torch.save(obj, paths[name], **kw)

    save("resnet50-19c8e357.pth", tv)
    save("imagenet-checkpoint.pth.tar", {"epoch": 90, "arch": "resnet50",
                                          "state_dict": {"module." + k: v for k, v in tv.items()}})
    save("imagenet-caffe-resnet50-features-ac468af.pth", sequential_layout(tv))
    save("imagenet-caffe-resnet50-features-ac468af-converted.pth",
         {k: v for k, v in tv.items() if not k.startswith("fc.")})
    cirtorch = sequential_layout(tv, "features.")
    cirtorch.update({"pool.p": torch.tensor([3.0]), "whiten.weight": torch.zeros(2048, 2048),
                     "whiten.bias": torch.zeros(2048)})
    save("gl18-tl-resnet50-gem-w.pth", {"state_dict": cirtorch, "meta": {"architecture": "resnet50",
                                                                          "pooling": "gem", "whitening": True}})
    save("os2d_v2-official.pth", official_layout(r50))
    save("weakalign.pth.tar", weakalign_file(weakalign_regression()), _use_new_zipfile_serialization=False)
    return paths


def fresh(config: ModelConfig | None = None) -> Os2dModel:
    torch.manual_seed(123)
    return build_os2d(config or ModelConfig.v2("resnet50")).eval()


def assert_same_state(a: nn.Module, b: nn.Module, skip_num_batches: bool = False) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if skip_num_batches and k.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


# ------------------------------------------------------------------------------------------------------------
# ResNet trunks


@pytest.mark.parametrize("name, fmt", [
    ("resnet50-19c8e357.pth", "torchvision"),
    ("imagenet-checkpoint.pth.tar", "torchvision"),
    ("imagenet-caffe-resnet50-features-ac468af.pth", "caffe2"),
    ("imagenet-caffe-resnet50-features-ac468af-converted.pth", "torchvision"),
    ("gl18-tl-resnet50-gem-w.pth", "cirtorch"),
    ("os2d_v2-official.pth", "official"),
])
def test_backbone_from_each_format_equals_source(files, r50, name, fmt):
    model = fresh()
    report = convert.init_backbone_from_file(model, files[name])
    assert report.format == fmt and report.backbone == "resnet50" and report.loaded == ["backbone"]
    assert_same_state(model.backbone, r50.backbone, skip_num_batches=True)
    if fmt == "caffe2":  # equal tensors give equal outputs; one forward as a witness (CPU time is precious)
        image = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.testing.assert_close(model.extract_features(image), r50.extract_features(image), rtol=0, atol=0)


def test_dropped_and_filled_keys_are_reported(files):
    report = convert.init_backbone_from_file(fresh(), files["gl18-tl-resnet50-gem-w.pth"])
    dropped = set(report.dropped)
    assert {"pool.p", "whiten.weight", "whiten.bias"} <= dropped
    assert any(k.startswith("features.7.") for k in dropped)  # layer4
    assert len(report.filled) == 43  # BN layers of a ResNet-50 trunk, none in an old file
    report = convert.init_backbone_from_file(fresh(), files["resnet50-19c8e357.pth"])
    assert {"fc.weight", "fc.bias"} <= set(report.dropped)


def test_caffe2_format_accepts_renamed_files(files):
    report = convert.init_backbone_from_file(fresh(), files["imagenet-caffe-resnet50-features-ac468af-converted.pth"],
                                             format="caffe2")
    assert report.format == "caffe2"


def test_backbone_only_file_gives_identity_transform_model(files, r50):
    model, report = model_from_file(files["imagenet-caffe-resnet50-features-ac468af.pth"])
    assert (model.config.backbone, model.config.variant) == ("resnet50", "v2")
    assert report.loaded == ["backbone"]
    torch.testing.assert_close(model.transform_net.linear.bias, torch.tensor([1.0, 0, 0, 0, 1, 0]))
    assert not model.transform_net.linear.weight.detach().any()
    assert convert.count_parameters(model) == 10_169_478  # the reference's R50 V2 count
    v1, _ = model_from_file(files["resnet50-19c8e357.pth"], variant="v1")
    assert v1.config.variant == "v1" and v1.transform_net.num_params == 4


def test_unknown_missing_and_mis_shaped_keys_fail_loudly(tmp_path, trunk):
    tv = torchvision_layout(trunk)
    cases = {
        "unknown": ({**tv, "head.weight": torch.zeros(3)}, "head.weight"),
        "missing": ({k: v for k, v in tv.items() if k != "layer3.5.bn3.running_var"}, "layer3.5.bn3.running_var"),
        "shape": ({**tv, "conv1.weight": torch.zeros(64, 3, 3, 3)}, "conv1.weight"),
        "extra_in_kept_part": ({**tv, "layer2.0.extra": torch.zeros(1)}, "layer2.0.extra"),
    }
    for name, (state, key) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(state, path)
        with pytest.raises(WeightsError, match=key.replace(".", r"\.")):
            convert.init_backbone_from_file(fresh(), path)


def test_depth_and_architecture_mismatch(files):
    with torch.device("meta"):
        r101 = build_os2d(ModelConfig.v2("resnet101"))
    with pytest.raises(WeightsError, match="resnet50 trunk but the model's backbone is resnet101"):
        convert.init_backbone_from_file(r101, files["resnet50-19c8e357.pth"])
    effnet = build_os2d(ModelConfig(backbone="efficientnet_lite0"), pretrained_backbone=False)
    with pytest.raises(WeightsError, match="not a ResNet"):
        convert.init_backbone_from_file(effnet, files["resnet50-19c8e357.pth"])
    with pytest.raises(WeightsError, match="holds resnet50 trunk weights, expected resnet101"):
        model_from_file(files["resnet50-19c8e357.pth"], backbone="resnet101")


def test_resnet101_key_and_shape_logic_without_memory():
    r101 = meta_trunk_state("resnet101")
    own = {k: tuple(v.shape) for k, v in r101.items()}
    tv = {**r101, "fc.weight": torch.empty(1000, 2048, device="meta")}
    for fmt, obj in {
        "torchvision": tv,
        "caffe2": sequential_layout(tv),
        "cirtorch": {"state_dict": {**sequential_layout(tv, "features."), "pool.p": torch.empty(1, device="meta")}},
        "weakalign": {"state_dict": sequential_layout({k: v for k, v in r101.items()}, "FeatureExtraction.model.")},
    }.items():
        assert convert.detect_format(obj) == fmt
        state, _ = convert.resnet_trunk_state(obj, fmt, fmt)
        assert convert.infer_resnet_depth(state, fmt) == "resnet101"
        assert {k: tuple(v.shape) for k, v in state.items()} == own, fmt
    with pytest.raises(WeightsError, match="expected 6"):
        convert.infer_resnet_depth({k: v for k, v in r101.items() if not k.startswith("layer3.22.")}, "cut")


# ------------------------------------------------------------------------------------------------------------
# official OS2D checkpoints and variant inference


def test_official_checkpoint_round_trip_and_outputs(files, r50):
    model, report = model_from_file(files["os2d_v2-official.pth"])
    assert report.format == "official" and (report.backbone, report.variant) == ("resnet50", "v2")
    assert report.dropped and all(k.startswith("net_label_features.") for k in report.dropped)
    assert_same_state(model, r50)
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 64, 80, generator=g)
    with torch.no_grad():
        kernels = r50.class_kernels([torch.rand(3, 64, 80, generator=g)])
        a, b = model(image, kernels), r50(image, kernels)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=0)
    torch.testing.assert_close(a.boxes_xyxy, b.boxes_xyxy, rtol=0, atol=0)


@pytest.mark.parametrize("depth, params, variant", [("resnet50", 4, "v1"), ("resnet50", 6, "v2"),
                                                     ("resnet101", 4, "v1"), ("resnet101", 6, "v2")])
def test_official_variant_inference(depth, params, variant):
    config = ModelConfig.v2(depth) if params == 6 else ModelConfig.v1(depth)
    with torch.device("meta"):
        model = build_os2d(config)
    net = official_layout(model)["net"]
    inferred, state = convert_official_checkpoint(net)
    assert (inferred.backbone, inferred.variant, inferred.num_transform_params) == (depth, variant, params)
    assert inferred.invert_transform == (variant == "v2")
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_official_expectations_checked(files):
    with pytest.raises(WeightsError, match="holds resnet50 V2 weights, expected V1$"):
        model_from_file(files["os2d_v2-official.pth"], variant="v1")
    with pytest.raises(WeightsError, match="holds resnet50 V2 weights, expected resnet101$"):
        model_from_file(files["os2d_v2-official.pth"], backbone="resnet101")


# ------------------------------------------------------------------------------------------------------------
# weakalign


def test_weakalign_transform_equals_feature_regression(files):
    model = fresh()
    report = convert.init_transform_from_weakalign(model, files["weakalign.pth.tar"])
    assert report.loaded == ["transform_net"]
    assert any(k.startswith("FeatureRegression2.") for k in report.dropped)  # TPS stage ignored
    assert tuple(model.transform_net.linear.weight.shape) == (6, 64, 5, 5)
    reference = weakalign_regression()  # the same weights, published layout
    x = torch.rand(3, 225, 15, 15, generator=torch.Generator().manual_seed(0))
    tn = model.transform_net
    with torch.no_grad():
        ours = tn.linear(tn.conv(x))  # same padding: (3, 6, 15, 15); the centre sees exactly the 15x15 input
        theirs = reference(x)  # valid convs + Linear: (3, 6)
        torch.testing.assert_close(ours[:, :, 7, 7], theirs, rtol=0, atol=1e-5)
        # with the ReLU + L2 normalisation in front (eps placement differs slightly from weakalign's)
        full = tn(x)[:, :, 7, 7]
        norm = x.relu() / (x.relu().pow(2).sum(1, keepdim=True) + 1e-6).sqrt()
        torch.testing.assert_close(full, reference(norm), rtol=0, atol=1e-4)


def test_weakalign_needs_v2_and_file_extras_load_safely(files):
    v1 = fresh(ModelConfig.v1("resnet50"))
    with pytest.raises(WeightsError, match="P=6"):
        convert.init_transform_from_weakalign(v1, files["weakalign.pth.tar"])
    # the file (legacy serialisation with argparse.Namespace and numpy arrays) is read with weights_only
    obj = read_weights_file(files["weakalign.pth.tar"])
    assert isinstance(obj["args"], argparse.Namespace) and obj["train_loss"].shape == (5,)
    with pytest.raises(WeightsError, match="no feature extractor"):
        model_from_file(files["weakalign.pth.tar"])


def test_weakalign_as_transform_of_a_backbone_file(files):
    model, report = model_from_file(files["imagenet-caffe-resnet50-features-ac468af.pth"],
                                            transform=files["weakalign.pth.tar"])
    assert report.loaded == ["backbone", "transform_net"]  # the V2-init recipe
    expected = weakalign_regression().linear.weight.reshape(6, 64, 5, 5)
    torch.testing.assert_close(model.transform_net.linear.weight, expected, rtol=0, atol=0)


def test_weakalign_layout_errors(tmp_path):
    reg = weakalign_regression()
    bad = weakalign_file(reg)
    bad["state_dict"] = {k: v for k, v in bad["state_dict"].items() if k != "FeatureRegression.conv.4.running_var"}
    torch.save(bad, tmp_path / "bad.pth.tar")
    with pytest.raises(WeightsError, match="conv.4.running_var"):
        convert.init_transform_from_weakalign(fresh(), tmp_path / "bad.pth.tar")


# ------------------------------------------------------------------------------------------------------------
# format detection, safety, our checkpoints


def test_wrong_format_gives_clear_error(tmp_path, files):
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match=r"is not an os2d checkpoint nor another known weights format.*Formats tried: os2d.*official.*weakalign"
                                           r".*cirtorch.*torchvision.*caffe2"):
        model_from_file(tmp_path / "other.pth")
    with pytest.raises(WeightsError, match=r"not a cirtorch.*looks like torchvision"):
        convert.init_backbone_from_file(fresh(), files["resnet50-19c8e357.pth"], format="cirtorch")
    with pytest.raises(WeightsError, match="unknown format"):
        model_from_file(files["resnet50-19c8e357.pth"], format="keras")
    (tmp_path / "text.pth").write_text("<html>not a checkpoint</html>")
    with pytest.raises(WeightsError, match="not a PyTorch weights file"):
        model_from_file(tmp_path / "text.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "other.pth").read_bytes()[:100])  # truncated download
    with pytest.raises(WeightsError, match=r"cannot read .*cut\.pth as a weights file: corrupt or truncated \("
                                           r"PytorchStreamReader failed reading zip archive"):
        model_from_file(tmp_path / "cut.pth")


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_tampered_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "resnet50-evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": _Exploit(marker)}, path)
    for load in (read_weights_file, model_from_file,
                 lambda p: convert.init_backbone_from_file(fresh(), p), load_model):
        with pytest.raises(WeightsError, match="as a weights file: it needs unsafe pickled objects"):
            load(path)
    with pytest.raises(WeightsError) as info:
        read_weights_file(path)
    message = str(info.value)  # one line, not torch's advice to pass weights_only=False
    assert re.fullmatch(rf"cannot read {re.escape(str(path))} as a weights file: it needs unsafe pickled objects "
                        r"\((posix|os|nt)\.system\); os2d unpickles only tensors and plain data, never code", message)
    legacy = tmp_path / "legacy-evil.pth"  # pre-1.6 serialisation, same refusal
    torch.save({"net": _Exploit(marker)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match="needs unsafe pickled objects"):
        model_from_file(legacy)
    assert not marker.exists()


def test_our_checkpoint_round_trip_and_variant_expectation(tmp_path, r50):
    path = tmp_path / "ours.pth"
    save_checkpoint(path, r50, step=3)
    model, report = model_from_file(path)
    assert report.format == "os2d" and model.config == r50.config
    assert_same_state(model, r50)
    assert_same_state(load_model(path), r50)
    with pytest.raises(WeightsError, match="holds resnet50 V2 weights, expected resnet101 V1"):
        load_model(path, expect=ModelConfig.v1("resnet101"))
    with pytest.raises(WeightsError, match="holds resnet50 V2 weights, expected V1$"):
        model_from_file(path, variant="v1")
    # its backbone can initialise another model
    other = fresh()
    convert.init_backbone_from_file(other, path)
    assert_same_state(other.backbone, r50.backbone)


def test_load_model_reads_backbone_files_by_path_like_registry_names(files, r50):
    model = load_model(files["imagenet-caffe-resnet50-features-ac468af.pth"])
    assert (model.config.backbone, model.config.variant) == ("resnet50", "v2") and not model.training
    assert_same_state(model.backbone, r50.backbone, skip_num_batches=True)
    v1 = load_model(files["resnet50-19c8e357.pth"], expect=ModelConfig.v1("resnet50"))  # a trunk fits either head
    assert v1.config.variant == "v1" and v1.transform_net.num_params == 4
    with pytest.raises(WeightsError, match="holds resnet50 trunk weights, expected resnet101 V1"):
        load_model(files["resnet50-19c8e357.pth"], expect=ModelConfig.v1("resnet101"))


def test_one_architecture_check():
    from os2d.weights.loading import check_expected

    check_expected("f", "resnet50", "v2")  # no expectation
    check_expected("f", "resnet50", "v2", expect_backbone="resnet50", expect_variant="v2")
    check_expected("f", "resnet50", None, expect_variant="v1")  # trunk: any head
    with pytest.raises(WeightsError, match=r"^f holds resnet50 V2 weights, expected V1$"):
        check_expected("f", "resnet50", "v2", expect_variant="v1")
    with pytest.raises(WeightsError, match=r"^f holds resnet50 trunk weights, expected resnet101$"):
        check_expected("f", "resnet50", None, expect_backbone="resnet101")
    with pytest.raises(WeightsError, match=r"^efficientnet_lite0-imagenet holds efficientnet_lite0 V2 weights, "
                                           r"expected resnet50 V2$"):
        load_model("efficientnet_lite0-imagenet", expect=ModelConfig.v2("resnet50"))
