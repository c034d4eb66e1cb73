"""ONNX export of the OS2D detector for a fixed input size, and of the class-image encoder.

Detector graph (one pyramid level, batch 1):

* input ``image``: (1, 3, H, W) float32 RGB in [0, 1], already resized to exactly H x W (the backbone's
  normalisation is inside the graph);
* input ``kernels``: (K, S*S, C) class kernels, K dynamic — or no such input when the kernels are baked in as a
  constant (``kernels=`` given);
* outputs ``scores`` (1, K, h, w), ``boxes_xyxy`` (1, K, h, w, 4) and ``corners_xy`` (1, K, h, w, 4, 2), in
  pixels of the H x W input, exactly :class:`os2d.model.head.HeadOutput` (decoding, score threshold and NMS
  stay outside the graph).

Class encoder graph: ``class_image`` (1, 3, h, w) RGB in [0, 1] resized to area ~240^2 (h, w dynamic) ->
``kernel`` (1, S*S, C); concatenate the kernels of all class views to feed the detector's ``kernels``.

Metadata (input size, feature size, stride, anchor size, class names of baked kernels, model config and
fingerprint) is stored in the ONNX model's ``metadata_props`` under the key ``os2d``.

Exporters: ``dynamo`` (``torch.onnx.export(dynamo=True)``, needs ``onnxscript``; opset 18) or ``torchscript``
(the legacy tracer; opset 17). ``auto`` uses dynamo when onnxscript is installed and falls back to torchscript
if it fails.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from os2d.errors import Os2dError
from os2d.model.correlation import class_kernels
from os2d.model.head import _head_chunk  # one chunk = all classes, with no Python loop over a dynamic K
from os2d.model.os2d import Os2dModel

logger = logging.getLogger(__name__)

EXPORTERS = ("auto", "dynamo", "torchscript")
DEFAULT_OPSET = {"dynamo": 18, "torchscript": 17}
METADATA_KEY = "os2d"
# onnxruntime vs PyTorch (float32, CPU), measured: ResNet-50 V2 at 768x1024 scores 2.4e-7, boxes/corners 1.2e-4 px
# (coordinates up to ~1000 px), class kernels 1.6e-7; the checks leave a wide margin for other runtimes.
SCORE_ATOL = 1e-4
PIXEL_ATOL = 1e-2
KERNEL_ATOL = 1e-4


class ExportError(Os2dError):
    """Export or its verification failed (missing package, unsupported operation, mismatch with PyTorch)."""


def _heads(model: Os2dModel, features: Tensor, kernels: Tensor,
           aspect: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    cfg = model.config
    power = cfg.anchor_aspect_power if aspect is not None else 0.0
    scores, boxes, corners, _ = _head_chunk(
        features, kernels.to(features.dtype), model.transform_net, invert_transform=cfg.invert_transform,
        grid_size=cfg.class_grid_size, pool_border=cfg.pool_border, stride=float(model.stride),
        anchor_size=cfg.anchor_size, with_detached_scores=False, aspect=aspect, aspect_power=power,
    )
    return scores, boxes, corners


def uses_aspect(model: Os2dModel) -> bool:
    """True when the model's anchors take the class aspect ratio: its graph then has an ``aspect`` (K,) input."""
    return model.config.anchor_aspect_power != 0


class DetectorGraph(nn.Module):
    """(1, 3, H, W) image + (K, S*S, C) kernels [+ (K,) class aspect ratios, for models whose anchors take them]
    -> scores, boxes_xyxy, corners_xy (see module docstring)."""

    def __init__(self, model: Os2dModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, kernels: Tensor, aspect: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        return _heads(self.model, self.model.extract_features(image), kernels, aspect)


class BakedDetectorGraph(nn.Module):
    """(1, 3, H, W) image -> scores, boxes_xyxy, corners_xy of the classes whose kernels (and aspect ratios) are
    stored inside."""

    def __init__(self, model: Os2dModel, kernels: Tensor, aspect: Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("kernels", kernels.detach().float().clone())
        self.register_buffer("aspect", None if aspect is None else aspect.detach().float().clone())

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return _heads(self.model, self.model.extract_features(image), self.kernels, self.aspect)


class ClassEncoderGraph(nn.Module):
    """(1, 3, h, w) class image in [0, 1] -> (1, S*S, C) normalised kernel (column-major cell order)."""

    def __init__(self, model: Os2dModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, class_image: Tensor) -> Tensor:
        return class_kernels(self.model.class_feature(class_image)[None])  # the model's own class grid


@dataclass
class ExportReport:
    """What was written and how closely onnxruntime reproduces PyTorch (max absolute differences)."""

    path: str
    exporter: str
    opset: int
    inputs: dict[str, list[Any]]
    outputs: dict[str, list[Any]]
    metadata: dict[str, Any]
    max_abs_diff: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        ins = ", ".join(f"{k} {v}" for k, v in self.inputs.items())
        outs = ", ".join(f"{k} {v}" for k, v in self.outputs.items())
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in self.max_abs_diff.items())
        return (f"wrote {self.path} ({self.exporter}, opset {self.opset}); inputs: {ins}; outputs: {outs}"
                + (f"; onnxruntime vs PyTorch max |diff|: {diffs}" if diffs else ""))


# --------------------------------------------------------------------------------------------------------------


def _has_onnxscript() -> bool:
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError as e:
        raise ExportError(f"ONNX export needs the '{module}' package: pip install 'os2d[export]'") from e


def _run_exporter(graph: nn.Module, args: tuple[Tensor, ...], path: Path, exporter: str, opset: int | None,
                  input_names: list[str], output_names: list[str], dynamic: dict[str, dict[int, str]]) -> tuple[str, int]:
    """Export ``graph`` with the chosen exporter; returns (exporter used, opset)."""
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose from {', '.join(EXPORTERS)}")
    if exporter == "dynamo" and not _has_onnxscript():
        raise ExportError("the dynamo exporter needs 'onnxscript': pip install 'os2d[export]' "
                          "(or use --exporter torchscript)")
    order = ["dynamo", "torchscript"] if exporter == "auto" and _has_onnxscript() else (
        ["torchscript"] if exporter == "auto" else [exporter])
    errors = []
    for name in order:
        version = opset or DEFAULT_OPSET[name]
        try:
            if name == "dynamo":
                _export_dynamo(graph, args, path, version, input_names, output_names, dynamic)
            else:
                _export_torchscript(graph, args, path, version, input_names, output_names, dynamic)
            return name, version
        except ExportError:
            raise
        except Exception as e:  # noqa: BLE001 - exporter failures have many types; report them all
            logger.warning("%s ONNX export failed: %s", name, str(e).splitlines()[0] if str(e) else type(e).__name__)
            logger.debug("export failure", exc_info=True)
            errors.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    raise ExportError("ONNX export failed (" + "; ".join(errors) + ")")


@contextlib.contextmanager
def _quiet_loggers(*names: str, level: int = logging.WARNING):
    """The exporter's helper libraries log every graph pass at INFO; keep them to ``level``."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), level))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export_dynamo(graph, args, path, opset, input_names, output_names, dynamic) -> None:
    dims: dict[str, torch.export.Dim] = {}

    def dim(label: str) -> Any:
        if label not in dims:
            dims[label] = torch.export.Dim(label, min=1 if label == "K" else 32, max=1 << 14)
        return dims[label]

    shapes = tuple({axis: dim(label) for axis, label in dynamic.get(n, {}).items()} for n in input_names)
    log = io.StringIO()
    with contextlib.redirect_stdout(log), warnings.catch_warnings(), _quiet_loggers("onnx_ir", "onnxscript"), \
            _quiet_loggers("torch.onnx._internal.exporter._registration", level=logging.ERROR):  # torchvision ops
        warnings.simplefilter("ignore")
        program = torch.onnx.export(graph, args, dynamo=True, opset_version=opset, input_names=input_names,
                                    output_names=output_names, dynamic_shapes=shapes, verbose=False)
        program.save(str(path), external_data=False)
    logger.debug("dynamo exporter: %s", log.getvalue())


def _export_torchscript(graph, args, path, opset, input_names, output_names, dynamic) -> None:
    log = io.StringIO()
    with contextlib.redirect_stdout(log), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, args, str(path), dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic or None, do_constant_folding=True)


def _write_metadata(path: Path, metadata: dict[str, Any]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(metadata)})
    onnx.save(proto, str(path))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``os2d`` metadata of an exported ONNX file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in props:
        raise ExportError(f"{path} has no os2d metadata")
    return json.loads(props[METADATA_KEY])


def _session(path: Path):
    _require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _max_diffs(names: list[str], onnx_out: list[Any], torch_out: tuple[Tensor, ...]) -> dict[str, float]:
    diffs = {}
    for name, a, b in zip(names, onnx_out, torch_out, strict=True):
        a = torch.from_numpy(a)
        if tuple(a.shape) != tuple(b.shape):
            raise ExportError(f"ONNX output {name} has shape {tuple(a.shape)}, PyTorch {tuple(b.shape)}")
        diffs[name] = float((a - b).abs().max()) if a.numel() else 0.0
    return diffs


def _check_diffs(diffs: dict[str, float], path: Path) -> None:
    limits = {"scores": SCORE_ATOL, "boxes_xyxy": PIXEL_ATOL, "corners_xy": PIXEL_ATOL, "kernel": KERNEL_ATOL}
    bad = {k: v for k, v in diffs.items() if not v <= limits[k]}  # "not <=" also catches NaN
    if bad:
        raise ExportError(f"{path}: onnxruntime differs from PyTorch beyond tolerance: {bad} (limits {limits})")


def _cpu_eval_copy(model: Os2dModel) -> Os2dModel:
    """The model on CPU in eval mode, without moving or switching the caller's model."""
    on_cpu = all(t.device.type == "cpu" for t in model.state_dict().values())
    return model.eval() if on_cpu and not model.training else copy.deepcopy(model).cpu().eval()


def _example_image(height: int, width: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, height, width, generator=g)


def _example_kernels(model: Os2dModel, count: int, seed: int = 1) -> Tensor:
    """Kernels of random class images (realistic: non-negative backbone features, unit norm)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return model.class_kernels([torch.rand(3, 240, 240, generator=g) for _ in range(count)])


# --------------------------------------------------------------------------------------------------------------
# public API


def export_onnx(model: Os2dModel, path: str | Path, *, height: int, width: int, kernels: Tensor | None = None,
                class_names: list[str] | None = None, exporter: str = "auto", opset: int | None = None,
                verify: bool = True, aspect: Tensor | None = None) -> ExportReport:
    """Export the detector for a fixed (height, width) input to ONNX.

    Args:
        model: the model (put in eval mode, moved to CPU).
        height, width: input size in pixels; the input must be resized to exactly this size.
        kernels: (K, S*S, C) class kernels to bake in as a constant; None = ``kernels`` graph input, K dynamic.
        class_names: name of each baked kernel row (stored in the metadata).
        aspect: (K,) aspect ratios of the baked kernels' class images (models with ``anchor_aspect_power``: their
            anchors take them; None = square). Without baked kernels such a model's graph has an ``aspect`` (K,)
            input.
        exporter: ``auto`` | ``dynamo`` | ``torchscript``.
        opset: ONNX opset (default 18 for dynamo, 17 for torchscript).
        verify: run the file with onnxruntime and compare with PyTorch (raises :class:`ExportError` beyond
            ``SCORE_ATOL`` on scores / ``PIXEL_ATOL`` on boxes and corners).
    """
    _require("onnx")
    if height < 16 or width < 16:
        raise ExportError(f"input size must be at least 16x16 pixels, got {height}x{width}")
    model = _cpu_eval_copy(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = _example_image(height, width)
    channels = model.feature_channels
    cells = model.config.class_grid_size ** 2
    if kernels is not None:
        kernels = kernels.detach().cpu().float()
        if kernels.dim() != 3 or tuple(kernels.shape[1:]) != (cells, channels) or kernels.shape[0] == 0:
            raise ExportError(f"kernels must be (K>0, {cells}, {channels}) for this model, got {tuple(kernels.shape)}")
        if class_names is not None and len(class_names) != kernels.shape[0]:
            raise ExportError("one class name per kernel row expected")
        if aspect is not None and tuple(aspect.shape) != (kernels.shape[0],):
            raise ExportError(f"aspect must be ({kernels.shape[0]},), one ratio per kernel row")
        graph: nn.Module = BakedDetectorGraph(model, kernels, aspect if uses_aspect(model) else None).eval()
        args: tuple[Tensor, ...] = (image,)
        input_names, dynamic = ["image"], {}
    else:
        graph = DetectorGraph(model).eval()
        args = (image, _example_kernels(model, 2))
        input_names, dynamic = ["image", "kernels"], {"kernels": {0: "K"}}
        if uses_aspect(model):
            args = (*args, torch.tensor([2.0, 0.5]))
            input_names.append("aspect")
            dynamic["aspect"] = {0: "K"}
    output_names = ["scores", "boxes_xyxy", "corners_xy"]
    with torch.no_grad():
        reference = graph(*args)
    fm_h, fm_w = reference[0].shape[-2:]
    k_label: Any = int(kernels.shape[0]) if kernels is not None else "K"
    used, version = _run_exporter(graph, args, path, exporter, opset, input_names, output_names, dynamic)

    from os2d.weights import model_fingerprint

    metadata = {
        "kind": "detector", "input": "RGB float32 in [0, 1], resized to exactly (height, width); batch 1",
        "height": height, "width": width, "feature_size": [int(fm_h), int(fm_w)], "stride": float(model.stride),
        "anchor_size": float(model.config.anchor_size), "kernels": "baked" if kernels is not None else "input",
        "num_kernels": int(kernels.shape[0]) if kernels is not None else None,
        "class_names": list(class_names) if class_names is not None else None,
        "model_config": model.config.to_dict(), "model_id": model_fingerprint(model),
    }
    _write_metadata(path, metadata)
    report = ExportReport(
        str(path), used, version,
        inputs={"image": [1, 3, height, width], **({} if kernels is not None else {"kernels": ["K", cells, channels]}),
                **({"aspect": ["K"]} if kernels is None and uses_aspect(model) else {})},
        outputs={"scores": [1, k_label, int(fm_h), int(fm_w)], "boxes_xyxy": [1, k_label, int(fm_h), int(fm_w), 4],
                 "corners_xy": [1, k_label, int(fm_h), int(fm_w), 4, 2]},
        metadata=metadata,
    )
    if verify:
        session = _session(path)
        if kernels is None:  # another K than the example: checks that K really is dynamic
            args = (image, _example_kernels(model, 3, seed=2))
            if uses_aspect(model):
                args = (*args, torch.tensor([1.5, 1.0, 0.4]))
            with torch.no_grad():
                reference = graph(*args)
        feeds = {name: a.numpy() for name, a in zip(input_names, args, strict=True)}
        report.max_abs_diff = _max_diffs(output_names, session.run(output_names, feeds), reference)
        _check_diffs(report.max_abs_diff, path)
    logger.info("%s", report.summary())
    return report


def export_class_encoder_onnx(model: Os2dModel, path: str | Path, *, exporter: str = "auto",
                              opset: int | None = None, verify: bool = True) -> ExportReport:
    """Export the class-image encoder (dynamic image size) to ONNX: ``class_image`` -> ``kernel`` (1, S*S, C)."""
    _require("onnx")
    model = _cpu_eval_copy(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = ClassEncoderGraph(model).eval()
    example = (_example_image(256, 224, seed=3),)
    used, version = _run_exporter(graph, example, path, exporter, opset, ["class_image"], ["kernel"],
                                  {"class_image": {2: "height", 3: "width"}})
    from os2d.weights import model_fingerprint

    cells, channels = model.config.class_grid_size ** 2, model.feature_channels
    metadata = {
        "kind": "class_encoder",
        "input": f"RGB float32 in [0, 1], batch 1, resized to area ~{model.config.class_image_size}^2 "
                 "keeping the aspect ratio",
        "class_image_size": model.config.class_image_size, "model_config": model.config.to_dict(),
        "model_id": model_fingerprint(model),
    }
    _write_metadata(path, metadata)
    report = ExportReport(str(path), used, version, inputs={"class_image": [1, 3, "height", "width"]},
                          outputs={"kernel": [1, cells, channels]}, metadata=metadata)
    if verify:
        session = _session(path)
        diffs: dict[str, float] = {}
        for size in ((240, 240), (176, 320)):  # other sizes than the example: checks the dynamic axes
            image = _example_image(*size, seed=4)
            with torch.no_grad():
                reference = graph(image)
            got = _max_diffs(["kernel"], session.run(["kernel"], {"class_image": image.numpy()}), (reference,))
            diffs["kernel"] = max(diffs.get("kernel", 0.0), got["kernel"])
        report.max_abs_diff = diffs
        _check_diffs(diffs, path)
    logger.info("%s", report.summary())
    return report


def report_dict(report: ExportReport) -> dict[str, Any]:
    return asdict(report)


__all__ = [
    "BakedDetectorGraph",
    "ClassEncoderGraph",
    "DetectorGraph",
    "ExportError",
    "ExportReport",
    "export_class_encoder_onnx",
    "export_onnx",
    "read_metadata",
]
