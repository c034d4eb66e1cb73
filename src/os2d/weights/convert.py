"""Foreign weight formats -> os2d state dicts: explicit key remappings and strict loading into modules.

Every conversion is a table of prefix renamings plus a list of prefixes that are dropped on purpose (ResNet
``layer4``/``fc``, retrieval pooling/whitening, weakalign's TPS stage). Any other key that does not map onto the
target module, any missing key and any shape mismatch raises :class:`~os2d.weights.errors.WeightsError` naming
the keys (:func:`load_strict`): nothing is loaded with ``strict=False``. Whole models from files are built in
:mod:`os2d.weights.loading`.

Formats (``FORMATS``):

==============  ==========================================================================================
``os2d``        our checkpoint ``{"format": "os2d-checkpoint", "config", "model", ...}``
``official``    official OS2D checkpoint ``{"net": ...}`` (``net_feature_maps.``, ``os2d_head_creator.`` ...)
``torchvision`` plain ResNet state dict with torchvision names (``conv1``, ``bn1``, ``layer1..4``, ``fc``),
                also wrapped as ``{"state_dict": ...}`` and/or with a DataParallel ``module.`` prefix; this is
                also the layout of the renamed ("-converted") cirtorch Caffe2 files
``caffe2``      cirtorch's Caffe2 ImageNet ResNets: ``nn.Sequential`` indices ``0.`` conv1, ``1.`` bn1,
                ``4.``..``7.`` layer1..layer4 (torchvision names are accepted too)
``cirtorch``    cirtorch retrieval networks ``{"state_dict": {"features.0." ... "features.7.", "pool.", "whiten."}}``
``weakalign``   Rocco et al. ``.pth.tar`` ``{"state_dict": {"FeatureExtraction.model.{0,1,4,5,6}.",
                "FeatureRegression.", "FeatureRegression2."}}``
==============  ==========================================================================================

Files saved before PyTorch 0.4.1 have no ``num_batches_tracked`` BatchNorm buffers; those (and only those) are
filled with 0, which changes nothing at inference.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from os2d.config import ModelConfig
from os2d.model.os2d import Os2dModel
from os2d.weights.checkpoint import is_checkpoint
from os2d.weights.errors import WeightsError
from os2d.weights.files import read_weights_file

logger = logging.getLogger(__name__)

FORMATS = ("os2d", "official", "torchvision", "caffe2", "cirtorch", "weakalign")
BACKBONE_FORMATS = ("torchvision", "caffe2", "cirtorch", "weakalign")  # files holding no OS2D model

# Official OS2D checkpoints (aosokin/os2d): the shared backbone is registered twice, the TransformNet is the
# aligner's parameter regressor.
OFFICIAL_BACKBONE_PREFIX = "net_feature_maps."
OFFICIAL_CLASS_BACKBONE_PREFIX = "net_label_features.net_class_features."
OFFICIAL_TRANSFORM_PREFIX = "os2d_head_creator.aligner.parameter_regressor."

# Number of ``layer3`` bottlenecks -> ResNet depth (torchvision layouts).
RESNET_DEPTH_BY_LAYER3_BLOCKS = {6: "resnet50", 23: "resnet101"}

# ResNet parts kept by the trunk (conv1 .. layer3) and the ones a trunk never builds.
TRUNK_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")
RESNET_DROPPED_PREFIXES = ("layer4.", "fc.")

# nn.Sequential indices used by cirtorch (and by weakalign's FeatureExtraction) for a torchvision ResNet:
# conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4 (relu/maxpool have no parameters).
SEQUENTIAL_RESNET = {"0.": "conv1.", "1.": "bn1.", "4.": "layer1.", "5.": "layer2.", "6.": "layer3.", "7.": "layer4."}

CIRTORCH_DROPPED_PREFIXES = ("pool.", "whiten.", "lwhiten.", "meta.")
WEAKALIGN_FEATURES = "FeatureExtraction.model."
WEAKALIGN_AFFINE = "FeatureRegression."
WEAKALIGN_TPS = "FeatureRegression2."
# weakalign FeatureRegression (conv padding 0 + Linear) -> our TransformNet (same padding + 5x5 conv): the
# tensors are the same, only ``linear.weight`` changes shape [P, 64*5*5] -> [P, 64, 5, 5] (flatten order C, H, W).
WEAKALIGN_TRANSFORM_KEYS = (
    "conv.0.weight", "conv.0.bias",
    "conv.1.weight", "conv.1.bias", "conv.1.running_mean", "conv.1.running_var",
    "conv.3.weight", "conv.3.bias",
    "conv.4.weight", "conv.4.bias", "conv.4.running_mean", "conv.4.running_var",
    "linear.weight", "linear.bias",
)


@dataclass
class ConversionReport:
    """What a conversion found and did (logged; printed by ``os2d weights import``)."""

    source: str
    format: str
    backbone: str | None = None  # architecture found in the file (e.g. "resnet50")
    variant: str | None = None  # "v1" / "v2" for full OS2D checkpoints
    loaded: list[str] = field(default_factory=list)  # parts loaded: "backbone", "transform_net"
    num_tensors: int = 0
    dropped: list[str] = field(default_factory=list)  # keys of the file not used (on purpose)
    filled: list[str] = field(default_factory=list)  # num_batches_tracked buffers added

    def summary(self) -> str:
        what = ", ".join(self.loaded) or "nothing"
        arch = " ".join(x for x in (self.backbone, self.variant) if x)
        return (f"{self.source}: {self.format} format{f' ({arch})' if arch else ''}; loaded {what} "
                f"({self.num_tensors} tensors), dropped {len(self.dropped)} keys"
                + (f", filled {len(self.filled)} num_batches_tracked" if self.filled else ""))


# --------------------------------------------------------------------------------------------------------------
# helpers


def _head(keys: Iterable[str], n: int = 5) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n})" if len(keys) > n else "")


def load_strict(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` that names every missing, unexpected and mis-shaped key in one error."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {_head(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_head(unexpected)}")
    if shapes:
        parts.append("shape mismatch: " + _head(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                                                 for k in shapes))
    if parts:
        raise WeightsError(f"{source} does not fit the model: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def _tensor_dict(obj: Any, source: str, what: str) -> dict[str, Tensor]:
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{source}: expected a non-empty state dict for {what}, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(f"{source}: {what} has non-tensor entries: {_head(map(str, bad))}")
    return dict(obj)


def strip_module_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Remove a DataParallel ``module.`` prefix when every key has it."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _looks_torchvision(state: Mapping[str, Any]) -> bool:
    return "conv1.weight" in state and any(k.startswith("layer1.") for k in state)


def _looks_sequential(state: Mapping[str, Any], prefix: str = "") -> bool:
    return f"{prefix}0.weight" in state and any(k.startswith(f"{prefix}4.0.") for k in state)


def rename_prefixes(state: Mapping[str, Tensor], mapping: Mapping[str, str], drop: Iterable[str] = (),
                    *, source: str, what: str) -> tuple[dict[str, Tensor], list[str]]:
    """Rename keys by their (unique) matching prefix; drop keys under ``drop``; anything else is an error.

    Returns:
        (renamed state, dropped keys).
    """
    drop = tuple(drop)
    out: dict[str, Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        if key.startswith(drop):
            dropped.append(key)
            continue
        matches = [p for p in mapping if key.startswith(p)]
        if len(matches) != 1:
            unknown.append(key)
            continue
        new = mapping[matches[0]] + key[len(matches[0]):]
        if new.startswith(drop):  # e.g. cirtorch "features.7." -> "layer4." (never built)
            dropped.append(key)
            continue
        out[new] = value
    if unknown:
        raise WeightsError(f"{source}: {len(unknown)} keys of the {what} do not map onto the model: {_head(unknown)}")
    return out, dropped


def fill_num_batches_tracked(state: dict[str, Tensor], module: nn.Module) -> list[str]:
    """Add the ``num_batches_tracked`` buffers that files saved before PyTorch 0.4.1 lack (in place).

    Only for BatchNorm layers whose other entries are present; returns the added keys.
    """
    filled = []
    for key, value in module.state_dict().items():
        if key.endswith(".num_batches_tracked") and key not in state:
            prefix = key[: -len("num_batches_tracked")]
            if prefix + "running_mean" in state:
                state[key] = torch.zeros_like(value)
                filled.append(key)
    return filled


def infer_resnet_depth(state: Mapping[str, Tensor], source: str) -> str:
    """ResNet depth from a trunk state dict (torchvision names): 6 ``layer3`` blocks -> 50, 23 -> 101."""
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"layer3\.(\d+)\.", k))}
    depth = RESNET_DEPTH_BY_LAYER3_BLOCKS.get(len(blocks))
    if depth is None:
        raise WeightsError(f"{source}: found {len(blocks)} layer3 blocks; expected 6 (ResNet-50) or 23 (ResNet-101)")
    return depth


# --------------------------------------------------------------------------------------------------------------
# format detection


def _state_dict_entry(obj: Any) -> Mapping[str, Any] | None:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return obj["state_dict"]
    return None


def _format_checks() -> dict[str, Any]:
    def weakalign(obj: Any) -> bool:
        sd = _state_dict_entry(obj)
        return sd is not None and any(k.startswith((WEAKALIGN_AFFINE, WEAKALIGN_FEATURES)) for k in sd)

    def cirtorch(obj: Any) -> bool:
        sd = _state_dict_entry(obj)
        return sd is not None and _looks_sequential(sd, "features.")

    def torchvision(obj: Any) -> bool:
        sd = _state_dict_entry(obj)
        sd = sd if sd is not None else obj
        if not isinstance(sd, Mapping):
            return False
        sd = {k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k: None for k in sd}
        return _looks_torchvision(sd)

    def caffe2(obj: Any) -> bool:
        return isinstance(obj, Mapping) and _looks_sequential(obj)

    return {
        "os2d": is_checkpoint,
        "official": is_official_checkpoint,
        "weakalign": weakalign,
        "cirtorch": cirtorch,
        "torchvision": torchvision,
        "caffe2": caffe2,
    }


FORMAT_HINTS = {
    "os2d": 'an os2d checkpoint ({"format": "os2d-checkpoint", "config", "model"})',
    "official": 'an official OS2D checkpoint ({"net": {"net_feature_maps.*", ...}})',
    "weakalign": 'a weakalign .pth.tar ({"state_dict": {"FeatureRegression.*", "FeatureExtraction.model.*"}})',
    "cirtorch": 'a cirtorch retrieval network ({"state_dict": {"features.0.*" ... "features.7.*"}})',
    "torchvision": "a torchvision ResNet state dict (conv1.*, bn1.*, layer1.* ... [fc.*])",
    "caffe2": "a cirtorch Caffe2 ResNet state dict (0.*, 1.*, 4.* ... 7.*)",
}


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = [str(k) for k in list(obj)[:6]]
        inner = _state_dict_entry(obj) or (obj.get("net") if isinstance(obj.get("net"), Mapping) else None)
        extra = f"; inner keys: {[str(k) for k in list(inner)[:4]]}" if inner else ""
        return f"top-level keys: {keys}{extra}"
    return f"a {type(obj).__name__}"


def detect_format(obj: Any, source: str = "file") -> str:
    """The format of a loaded file; :class:`WeightsError` naming every format tried when none fits."""
    for name, check in _format_checks().items():
        if check(obj):
            return name
    tried = "; ".join(f"{n}: {h}" for n, h in FORMAT_HINTS.items())
    raise WeightsError(f"{source} is not an os2d checkpoint nor another known weights format ({_describe(obj)}). "
                       f"Formats tried: {tried}")


def check_format(obj: Any, fmt: str, source: str) -> str:
    """Resolve ``auto`` or check that ``obj`` has the layout of ``fmt``."""
    if fmt == "auto":
        return detect_format(obj, source)
    if fmt not in FORMATS:
        raise WeightsError(f"unknown format {fmt!r}; choose from auto, {', '.join(FORMATS)}")
    check = _format_checks()[fmt]
    ok = check(obj) or (fmt == "caffe2" and _format_checks()["torchvision"](obj))  # renamed Caffe2 files
    if not ok:
        try:
            found = f" (it looks like {detect_format(obj, source)})"
        except WeightsError:
            found = ""
        raise WeightsError(f"{source} is not {FORMAT_HINTS[fmt]}{found}; {_describe(obj)}")
    return fmt


# --------------------------------------------------------------------------------------------------------------
# official OS2D checkpoints


def is_official_checkpoint(obj: Any) -> bool:
    """Whether a loaded file object is an official OS2D checkpoint ``{"net": {"net_feature_maps.*", ...}}``."""
    return isinstance(obj, Mapping) and isinstance(obj.get("net"), Mapping) and any(
        k.startswith(OFFICIAL_BACKBONE_PREFIX) for k in obj["net"])


def convert_official_checkpoint(net: Mapping[str, Tensor]) -> tuple[ModelConfig, dict[str, Tensor]]:
    """Official OS2D ``{"net": ...}`` state -> (config, os2d state dict).

    The variant is inferred from the file: ResNet depth from the number of ``layer3`` blocks (6 -> 50,
    23 -> 101) and V1/V2 from the TransformNet's output size (4 -> V1, 6 -> V2).
    """
    backbone: dict[str, Tensor] = {}
    transform: dict[str, Tensor] = {}
    unknown = []
    for k, v in net.items():
        if k.startswith(OFFICIAL_BACKBONE_PREFIX):
            backbone["backbone." + k[len(OFFICIAL_BACKBONE_PREFIX):]] = v
        elif k.startswith(OFFICIAL_TRANSFORM_PREFIX):
            transform["transform_net." + k[len(OFFICIAL_TRANSFORM_PREFIX):]] = v
        elif not k.startswith(OFFICIAL_CLASS_BACKBONE_PREFIX):  # the shared backbone registered a second time
            unknown.append(k)
    if unknown:
        raise WeightsError(f"unexpected keys in an OS2D checkpoint: {_head(unknown)}")
    depth = infer_resnet_depth({k[len("backbone."):]: v for k, v in backbone.items()}, "OS2D checkpoint")
    bias = transform.get("transform_net.linear.bias")
    if bias is None:
        raise WeightsError("OS2D checkpoint has no TransformNet (parameter_regressor.linear.bias)")
    p = int(bias.numel())
    if p == 6:
        config = ModelConfig.v2(backbone=depth)
    elif p == 4:
        config = ModelConfig.v1(backbone=depth)
    else:
        raise WeightsError(f"TransformNet with {p} outputs: not an OS2D V1 (4) or V2 (6) model")
    return config, {**backbone, **transform}


# --------------------------------------------------------------------------------------------------------------
# ResNet trunks


def resnet_trunk_state(obj: Any, fmt: str, source: str) -> tuple[dict[str, Tensor], list[str]]:
    """State dict of a ResNet trunk (torchvision names, ``conv1`` .. ``layer3``) from a file of format ``fmt``.

    Returns:
        (trunk state, keys of the file that were dropped: layer4/fc, pooling/whitening, other model parts).
    """
    ignored: list[str] = []
    if fmt == "torchvision" or (fmt == "caffe2" and not _looks_sequential(obj)):
        sd = _state_dict_entry(obj)
        state = strip_module_prefix(_tensor_dict(sd if sd is not None else obj, source, "ResNet"))
        mapping = {p: p for p in TRUNK_PREFIXES}
        drop: tuple[str, ...] = RESNET_DROPPED_PREFIXES
    elif fmt == "caffe2":
        state = _tensor_dict(obj, source, "Caffe2 ResNet")
        mapping, drop = SEQUENTIAL_RESNET, RESNET_DROPPED_PREFIXES
    elif fmt == "cirtorch":
        state = strip_module_prefix(_tensor_dict(obj["state_dict"], source, "cirtorch network"))
        mapping = {"features." + k: v for k, v in SEQUENTIAL_RESNET.items()}
        drop = RESNET_DROPPED_PREFIXES + CIRTORCH_DROPPED_PREFIXES
        meta = obj.get("meta") if isinstance(obj, Mapping) else None
        if isinstance(meta, Mapping):
            logger.debug("%s: cirtorch meta %s", source, {k: meta[k] for k in list(meta)[:8]})
    elif fmt == "weakalign":
        full = strip_module_prefix(_tensor_dict(obj["state_dict"], source, "weakalign model"))
        state = {k: v for k, v in full.items() if k.startswith(WEAKALIGN_FEATURES)}
        ignored = [k for k in full if not k.startswith(WEAKALIGN_FEATURES)]
        if not state:
            raise WeightsError(f"{source}: the weakalign file has no feature extractor (FeatureExtraction.model.*)")
        mapping = {WEAKALIGN_FEATURES + k: v for k, v in SEQUENTIAL_RESNET.items()}
        drop = RESNET_DROPPED_PREFIXES
    elif fmt == "official":
        net = obj["net"]
        state = {k[len(OFFICIAL_BACKBONE_PREFIX):]: v for k, v in net.items() if k.startswith(OFFICIAL_BACKBONE_PREFIX)}
        ignored = [k for k in net if not k.startswith(OFFICIAL_BACKBONE_PREFIX)]
        mapping, drop = {p: p for p in TRUNK_PREFIXES}, ()
    elif fmt == "os2d":
        model = obj["model"]
        state = {k[len("backbone."):]: v for k, v in model.items() if k.startswith("backbone.")}
        ignored = [k for k in model if not k.startswith("backbone.")]
        backbone = str(obj.get("config", {}).get("backbone", ""))
        if not backbone.startswith("resnet"):
            raise WeightsError(f"{source}: os2d checkpoint with a {backbone or 'unknown'} backbone, not a ResNet")
        mapping, drop = {p: p for p in TRUNK_PREFIXES}, ()
    else:
        raise WeightsError(f"{source}: format {fmt!r} holds no ResNet backbone")
    trunk, dropped = rename_prefixes(state, mapping, drop, source=source, what=f"{fmt} ResNet")
    if not trunk:
        raise WeightsError(f"{source}: no ResNet conv1..layer3 tensors found in the {fmt} file")
    dropped = ignored + dropped
    logger.debug("%s: dropped %d keys not used by the trunk: %s", source, len(dropped), _head(dropped, 20))
    return trunk, dropped


def load_resnet_trunk(backbone: nn.Module, trunk: dict[str, Tensor], source: str) -> list[str]:
    """Strictly load a trunk state (from :func:`resnet_trunk_state`) into a ResNet backbone; returns filled keys."""
    depth = getattr(backbone, "depth", None)
    if depth is None or not str(depth).startswith("resnet"):
        name = getattr(backbone, "variant", type(backbone).__name__)
        raise WeightsError(f"{source} holds ResNet weights but the model's backbone is {name}, not a ResNet")
    file_depth = infer_resnet_depth(trunk, source)
    if file_depth != depth:
        raise WeightsError(f"{source} holds a {file_depth} trunk but the model's backbone is {depth}")
    trunk = dict(trunk)
    filled = fill_num_batches_tracked(trunk, backbone)
    load_strict(backbone, trunk, source)
    return filled


# --------------------------------------------------------------------------------------------------------------
# weakalign TransformNet


def weakalign_transform_state(obj: Any, source: str) -> tuple[dict[str, Tensor], list[str]]:
    """TransformNet state (``conv.{0,1,3,4}.*``, ``linear.*`` as a [6, 64, 5, 5] conv) from weakalign's affine
    ``FeatureRegression``; returns (state, ignored keys: TPS stage ``FeatureRegression2``, feature extractor)."""
    full = strip_module_prefix(_tensor_dict(_state_dict_entry(obj), source, "weakalign model"))
    affine = {k[len(WEAKALIGN_AFFINE):]: v for k, v in full.items() if k.startswith(WEAKALIGN_AFFINE)}
    ignored = [k for k in full if not k.startswith(WEAKALIGN_AFFINE)]
    if not affine:
        raise WeightsError(f"{source}: no affine regressor (FeatureRegression.*) in the weakalign file")
    extra = sorted(set(affine) - set(WEAKALIGN_TRANSFORM_KEYS) - {"conv.1.num_batches_tracked",
                                                                 "conv.4.num_batches_tracked"})
    missing = [k for k in WEAKALIGN_TRANSFORM_KEYS if k not in affine]
    if extra or missing:
        raise WeightsError(f"{source}: FeatureRegression layout differs from conv(7)+BN, conv(5)+BN, linear: "
                           + (f"missing {_head(missing)}" if missing else "")
                           + ("; " if missing and extra else "")
                           + (f"unexpected {_head(extra)}" if extra else ""))
    weight = affine["linear.weight"]
    channels = affine["conv.4.weight"].shape[0]
    if weight.dim() != 2 or weight.shape[1] % channels:
        raise WeightsError(f"{source}: FeatureRegression.linear.weight has shape {tuple(weight.shape)}")
    side = int(round((weight.shape[1] // channels) ** 0.5))
    if side * side * channels != weight.shape[1]:
        raise WeightsError(f"{source}: FeatureRegression.linear.weight {tuple(weight.shape)} is not "
                           f"{channels} x k x k")
    state = dict(affine)
    # nn.Linear on x.view(N, -1) of an (N, C, k, k) map: input index = c*k*k + i*k + j -> conv weight [P, C, k, k].
    state["linear.weight"] = weight.reshape(weight.shape[0], channels, side, side).contiguous()
    return state, ignored


def load_weakalign_transform(model: Os2dModel, obj: Any, source: str) -> tuple[list[str], list[str]]:
    """Load weakalign's affine regressor into ``model.transform_net``; returns (filled, ignored) keys."""
    state, ignored = weakalign_transform_state(obj, source)
    p = int(state["linear.bias"].numel())
    own = model.transform_net.num_params
    if p != own:
        raise WeightsError(f"{source}: weakalign's affine regressor has {p} outputs but the model's TransformNet "
                           f"has {own} (weakalign weights need the full affine V2 model, P=6)")
    filled = fill_num_batches_tracked(state, model.transform_net)
    load_strict(model.transform_net, state, source)
    logger.debug("%s: ignored %d keys outside FeatureRegression: %s", source, len(ignored), _head(ignored, 20))
    return filled, ignored


# --------------------------------------------------------------------------------------------------------------
# public entry points


def init_backbone_from_file(model: Os2dModel, path: str | Path, format: str = "auto") -> ConversionReport:
    """Load a ResNet trunk into ``model.backbone`` from any supported file (torchvision, Caffe2/cirtorch,
    weakalign, official OS2D or os2d checkpoint). Strict: every trunk tensor must be found with its shape."""
    source = str(path)
    obj = read_weights_file(path)
    fmt = check_format(obj, format, source)
    trunk, dropped = resnet_trunk_state(obj, fmt, source)
    filled = load_resnet_trunk(model.backbone, trunk, source)
    report = ConversionReport(source, fmt, backbone=model.backbone.depth, loaded=["backbone"],
                              num_tensors=len(trunk) + len(filled), dropped=dropped, filled=filled)
    logger.info("%s", report.summary())
    return report


def init_transform_from_weakalign(model: Os2dModel, path: str | Path) -> ConversionReport:
    """Overwrite ``model.transform_net`` with weakalign's affine regressor (needs a V2 model, P=6).

    The TPS stage (``FeatureRegression2``) is ignored, as in the reference. The correlation channel order and
    the inversion of the regressed transform are handled by the model, so a V2 model behaves as the reference.
    """
    source = str(path)
    obj = read_weights_file(path)
    check_format(obj, "weakalign", source)
    filled, ignored = load_weakalign_transform(model, obj, source)
    report = ConversionReport(source, "weakalign", loaded=["transform_net"],
                              num_tensors=len(WEAKALIGN_TRANSFORM_KEYS) + len(filled), dropped=ignored, filled=filled)
    logger.info("%s", report.summary())
    return report


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (the reference logs 10,169,478 for R50 V2)."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "BACKBONE_FORMATS",
    "FORMATS",
    "OFFICIAL_BACKBONE_PREFIX",
    "OFFICIAL_CLASS_BACKBONE_PREFIX",
    "OFFICIAL_TRANSFORM_PREFIX",
    "ConversionReport",
    "check_format",
    "convert_official_checkpoint",
    "count_parameters",
    "detect_format",
    "fill_num_batches_tracked",
    "infer_resnet_depth",
    "init_backbone_from_file",
    "init_transform_from_weakalign",
    "is_official_checkpoint",
    "load_resnet_trunk",
    "load_strict",
    "load_weakalign_transform",
    "resnet_trunk_state",
    "weakalign_transform_state",
]
