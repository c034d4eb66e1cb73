"""ONNX export: onnxruntime reproduces the PyTorch outputs (dynamic K, baked kernels, class encoder, CLI).

Tolerances: scores atol 1e-5 (measured ~1e-8), boxes/corners atol 1e-3 px (measured ~3e-5 px on coordinates
in the hundreds), kernels atol 1e-5 (measured ~2e-7). The tiny ToyBackbone keeps exports to seconds.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import make_toy_model  # noqa: E402

from os2d import export  # noqa: E402

H, W = 96, 128
ATOL = {"scores": 1e-5, "boxes_xyxy": 1e-3, "corners_xy": 1e-3, "kernel": 1e-5}
OUTPUTS = ["scores", "boxes_xyxy", "corners_xy"]


def _kernels(model, count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return model.class_kernels([torch.rand(3, 64 + 16 * i, 80, generator=g) for i in range(count)])


def _model():
    model = make_toy_model()
    with torch.no_grad():  # a TransformNet that is not the identity, so grids, inversion and boxes are exercised
        g = torch.Generator().manual_seed(5)
        model.transform_net.linear.weight.copy_(torch.randn(model.transform_net.linear.weight.shape, generator=g) * 0.01)
    return model


def _compare(session, model, image, kernels, *, feed_kernels: bool) -> dict[str, float]:
    feeds = {"image": image.numpy()}
    if feed_kernels:
        feeds["kernels"] = kernels.numpy()
    got = session.run(OUTPUTS, feeds)
    with torch.no_grad():
        ref = model(image, kernels)
    diffs = {}
    for name, a, b in zip(OUTPUTS, got, (ref.scores, ref.boxes_xyxy, ref.corners_xy), strict=True):
        a = torch.from_numpy(a)
        assert a.shape == b.shape, name
        diffs[name] = float((a - b).abs().max())
        torch.testing.assert_close(a, b, rtol=0, atol=ATOL[name], msg=name)
    return diffs


@pytest.fixture(scope="module")
def dynamic_export(tmp_path_factory):
    model = _model()
    path = tmp_path_factory.mktemp("onnx") / "os2d.onnx"
    report = export.export_onnx(model, path, height=H, width=W)
    return model, path, report


def test_dynamic_kernels_match_pytorch(dynamic_export):
    model, path, report = dynamic_export
    assert report.exporter in ("dynamo", "torchscript") and report.max_abs_diff  # verified at export
    assert report.inputs["kernels"] == ["K", 225, 32]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "kernels"]
    image = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(7))
    for k in (1, 5):  # K is a dynamic axis
        diffs = _compare(session, model, image, _kernels(model, k, seed=k), feed_kernels=True)
        assert diffs["scores"] <= ATOL["scores"]


def test_metadata(dynamic_export):
    model, path, report = dynamic_export
    meta = export.read_metadata(path)
    assert meta["kind"] == "detector" and (meta["height"], meta["width"]) == (H, W)
    assert meta["feature_size"] == [H // 16, W // 16] and meta["kernels"] == "input"
    assert meta["model_config"]["num_transform_params"] == 6 and meta["stride"] == 16.0


def test_baked_kernels_match_pytorch(tmp_path):
    model = _model()
    kernels = _kernels(model, 3, seed=11)
    path = tmp_path / "baked.onnx"
    report = export.export_onnx(model, path, height=H, width=W, kernels=kernels, class_names=["a", "b", "b"],
                                exporter="torchscript")
    assert report.exporter == "torchscript" and report.opset == 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    image = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(8))
    _compare(session, model, image, kernels, feed_kernels=False)
    assert export.read_metadata(path)["class_names"] == ["a", "b", "b"]


def test_class_encoder_dynamic_size(tmp_path):
    model = _model()
    path = tmp_path / "enc.onnx"
    export.export_class_encoder_onnx(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in ((64, 80), (112, 48)):
        image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(size[0]))
        got = torch.from_numpy(session.run(["kernel"], {"class_image": image.numpy()})[0])
        with torch.no_grad():
            ref = model.class_kernels([image[0]])
        torch.testing.assert_close(got, ref, rtol=0, atol=ATOL["kernel"])


def test_bad_arguments_are_clear(tmp_path):
    model = _model()
    with pytest.raises(export.ExportError, match="at least 16x16"):
        export.export_onnx(model, tmp_path / "x.onnx", height=8, width=64)
    with pytest.raises(export.ExportError, match=r"kernels must be \(K>0, 225, 32\)"):
        export.export_onnx(model, tmp_path / "x.onnx", height=H, width=W, kernels=torch.zeros(2, 225, 7))
    with pytest.raises(export.ExportError, match="unknown exporter"):
        export.export_onnx(model, tmp_path / "x.onnx", height=H, width=W, exporter="tflite")


def test_cli_export(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from os2d.apps.cli.main import main

    model = _model()
    monkeypatch.setattr("os2d.weights.load_model", lambda weights: model)
    pixels = torch.randint(0, 256, (90, 60, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    Image.fromarray(pixels.numpy()).save(tmp_path / "red.png")
    out = tmp_path / "cli.onnx"
    code = main(["export", "--onnx", str(out), "--height", "64", "--width", "80", "--class", f"red={tmp_path / 'red.png'}",
                 "--exporter", "torchscript"])
    text = capsys.readouterr().out
    assert code == 0 and out.is_file() and "max |diff|" in text and "['red']" in text
    assert export.read_metadata(out)["class_names"] == ["red"]
    assert main(["export", "--height", "64"]) == 2
    assert "nothing to export" in capsys.readouterr().err


@pytest.mark.parametrize("weights", ["efficientnet_lite0", "default"])
def test_class_encoder_equals_model_class_kernels_with_anchor_padding(tmp_path, weights):
    """The graph encodes a class image as the model does: no anchor padding (EfficientNet-Lite has an
    ``anchor_pad``; the encoder once padded class images like input images and drifted from the model)."""
    from os2d.config import ModelConfig
    from os2d.model.os2d import build_os2d
    from os2d.weights import load_model

    torch.manual_seed(0)
    model = build_os2d(ModelConfig(backbone="efficientnet_lite0")) if weights != "default" else load_model("default")
    assert model.backbone.anchor_pad > 0
    path = tmp_path / "enc.onnx"
    export.export_class_encoder_onnx(model, path, exporter="torchscript", verify=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = torch.rand(1, 3, 176, 320, generator=torch.Generator().manual_seed(2))  # not square, not a multiple of 16
    got = torch.from_numpy(session.run(["kernel"], {"class_image": image.numpy()})[0])
    with torch.no_grad():
        ref = model.class_kernels([image[0]])
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)
