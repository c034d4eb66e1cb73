"""Models from weights: by registry name (builtin, packaged, downloaded, imported) or from a file of any format.

Every name and path goes through :func:`model_from_file` (one reader, one format detection, one architecture
check, :func:`check_expected`), except ``builtin`` names, which need no file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from os2d.calibration import Calibration, CalibrationError
from os2d.config import ModelConfig
from os2d.model.os2d import Os2dModel, build_os2d
from os2d.weights.checkpoint import checkpoint_model_state
from os2d.weights.convert import (
    WEAKALIGN_AFFINE,
    WEAKALIGN_TRANSFORM_KEYS,
    ConversionReport,
    check_format,
    convert_official_checkpoint,
    infer_resnet_depth,
    init_transform_from_weakalign,
    load_resnet_trunk,
    load_strict,
    load_weakalign_transform,
    resnet_trunk_state,
)
from os2d.weights.errors import WeightsError
from os2d.weights.files import read_weights_file
from os2d.weights.registry import DEFAULT_WEIGHTS, get_entry, missing_message, resolve

logger = logging.getLogger(__name__)


def check_expected(source: str, backbone: str, variant: str | None, *, expect_backbone: str | None = None,
                   expect_variant: str | None = None) -> None:
    """The one architecture check: ``source`` holds ``backbone`` / ``variant`` (None: a backbone-only file,
    which fits either head); an expectation of None accepts anything.

    Raises:
        WeightsError: ``"<source> holds resnet50 V2 weights, expected resnet101 V1"`` (or ``resnet50 trunk``).
    """
    wrong_backbone = expect_backbone is not None and expect_backbone != backbone
    wrong_variant = expect_variant is not None and variant is not None and expect_variant != variant
    if wrong_backbone or wrong_variant:
        found = f"{backbone} {variant.upper()}" if variant is not None else f"{backbone} trunk"
        wanted = " ".join(x for x in (expect_backbone, expect_variant and expect_variant.upper()) if x)
        raise WeightsError(f"{source} holds {found} weights, expected {wanted}")


def _identity_transform_model(config: ModelConfig, *, pretrained_backbone: bool) -> Os2dModel:
    """A model whose TransformNet is the identity (its last layer is zero). The hidden layers are random: a
    fixed seed keeps the model, and so its gallery fingerprint, identical across runs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_os2d(config, pretrained_backbone=pretrained_backbone)


def _model_from_state(config: ModelConfig, state: dict[str, Tensor], source: str) -> Os2dModel:
    model = build_os2d(config, pretrained_backbone=False)
    load_strict(model, state, source)
    return model


def model_from_file(path: str | Path, format: str = "auto", *, backbone: str | None = None,
                    variant: str | None = None, transform: str | Path | None = None,
                    config: ModelConfig | None = None) -> tuple[Os2dModel, ConversionReport]:
    """A ready (eval) model from any supported file, with a report of what was found.

    Full checkpoints (os2d, official) carry their architecture; ``backbone``/``variant`` are then checked
    against it. Backbone-only files (torchvision, caffe2, cirtorch) give a model with that ResNet and an
    identity TransformNet (the paper's "sliding window" regime) of ``variant`` (default V2); a weakalign file
    gives a ResNet-101 with weakalign's TransformNet (V2) or identity (V1).

    Args:
        format: ``auto`` or one of :data:`os2d.weights.convert.FORMATS` (checked against the file).
        backbone: expected/required architecture ("resnet50", "resnet101", ...); None = as found.
        variant: "v1" or "v2"; None = as found (full checkpoints) or the ``config`` / V2 default.
        transform: a weakalign file whose affine regressor replaces the TransformNet afterwards.
        config: architecture hints for backbone-only files (e.g. from the weights registry).
    """
    source = str(path)
    if variant is not None and variant not in ("v1", "v2"):
        raise WeightsError(f"variant must be 'v1' or 'v2', got {variant!r}")
    obj = read_weights_file(path)
    fmt = check_format(obj, format, source)
    expected = {"expect_backbone": backbone, "expect_variant": variant}
    if fmt in ("os2d", "official"):
        cfg, state = checkpoint_model_state(obj, source) if fmt == "os2d" else convert_official_checkpoint(obj["net"])
        check_expected(source, cfg.backbone, cfg.variant, **expected)
        model = _model_from_state(cfg, state, source)
        report = ConversionReport(source, fmt, backbone=cfg.backbone, variant=cfg.variant,
                                  loaded=["backbone", "transform_net"], num_tensors=len(state))
        if fmt == "official":
            report.dropped = [k for k in obj["net"] if k.startswith("net_label_features.")]  # shared copy
        elif obj.get("calibration") is not None:  # os2d.calibration: confidence of the detections
            try:
                model.calibration = Calibration.from_dict(obj["calibration"], source=source)
            except CalibrationError as e:
                raise WeightsError(str(e)) from None
    else:
        model, report = _model_from_trunk_file(obj, fmt, source, expected, config)
    if transform is not None:
        sub = init_transform_from_weakalign(model, transform)
        if "transform_net" not in report.loaded:
            report.loaded.append("transform_net")
        report.filled += sub.filled
        report.num_tensors += sub.num_tensors
    logger.info("%s", report.summary())
    return model.eval(), report


def _model_from_trunk_file(obj: Any, fmt: str, source: str, expected: dict[str, str | None],
                           config: ModelConfig | None) -> tuple[Os2dModel, ConversionReport]:
    """A ResNet model with an identity TransformNet (weakalign: its regressor, V2) from a backbone-only file."""
    trunk, dropped = resnet_trunk_state(obj, fmt, source)
    depth = infer_resnet_depth(trunk, source)
    check_expected(source, depth, None, **expected)
    variant = expected["expect_variant"] or (config.variant if config is not None else "v2")
    base = config if config is not None and (config.backbone, config.variant) == (depth, variant) else None
    cfg = base or (ModelConfig.v2(backbone=depth) if variant == "v2" else ModelConfig.v1(backbone=depth))
    model = _identity_transform_model(cfg, pretrained_backbone=False)
    filled = load_resnet_trunk(model.backbone, trunk, source)
    report = ConversionReport(source, fmt, backbone=depth, variant=cfg.variant, loaded=["backbone"],
                              num_tensors=len(trunk) + len(filled), dropped=dropped, filled=filled)
    if fmt == "weakalign":
        if cfg.variant == "v2":
            filled_t, _ = load_weakalign_transform(model, obj, source)
            report.loaded.append("transform_net")
            report.filled += filled_t
            report.num_tensors += len(WEAKALIGN_TRANSFORM_KEYS) + len(filled_t)
            report.dropped = [k for k in dropped if not k.startswith(WEAKALIGN_AFFINE)]
        else:
            logger.warning("%s: V1 model: only the backbone is used (weakalign's regressor is full affine, "
                           "P=6); the TransformNet stays at the identity", source)
    return model, report


def load_model(weights: str | Path = "default", *, expect: ModelConfig | None = None) -> Os2dModel:
    """A ready (eval) model from a registry name (``default``, ``efficientnet_lite0-imagenet``, ``os2d_v2-train``,
    an imported name ...) or a file path.

    Args:
        expect: the architecture the caller needs; its backbone and variant are checked (a backbone-only file
            is given a TransformNet of ``expect.variant``).

    Raises:
        WeightsError: unknown name, missing file (the message says how to get it), unreadable file, or an
            architecture other than ``expect``.
    """
    name = DEFAULT_WEIGHTS if str(weights) == "default" else str(weights)
    backbone, variant = (expect.backbone, expect.variant) if expect is not None else (None, None)
    entry = get_entry(name)
    if entry is not None and entry.kind == "builtin":
        check_expected(name, entry.config.backbone, entry.config.variant, expect_backbone=backbone,
                       expect_variant=variant)
        return _identity_transform_model(entry.config, pretrained_backbone=True).eval()
    path = Path(name).expanduser()
    is_packaged = entry is not None and entry.kind == "packaged" and entry.name == name
    if is_packaged or not path.exists():  # a file path wins over a registry file name, not over a package name
        found = resolve(name)
        if found is None:
            raise WeightsError(missing_message(name))
        path = found.path
    model, _ = model_from_file(path, config=entry.config if entry is not None else None, backbone=backbone,
                               variant=variant)
    return model


__all__ = ["check_expected", "load_model", "model_from_file"]
