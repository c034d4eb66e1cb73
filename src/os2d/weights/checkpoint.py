"""Our checkpoint format: ``{"format": "os2d-checkpoint", "version", "config", "model", ...extras}``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from os2d.config import ModelConfig
from os2d.files import atomic_torch_save
from os2d.model.os2d import Os2dModel
from os2d.weights.errors import WeightsError

CHECKPOINT_FORMAT = "os2d-checkpoint"
CHECKPOINT_VERSION = 1


def is_checkpoint(obj: Any) -> bool:
    """Whether a loaded file object is an os2d checkpoint (of any version)."""
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


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
    calibration = getattr(model, "calibration", None)  # os2d.calibration: kept with the weights it was fitted for
    if calibration is not None and "calibration" not in payload:
        payload["calibration"] = calibration.to_dict()
    atomic_torch_save(path, payload)


def checkpoint_model_state(obj: dict[str, Any], source: str) -> tuple[ModelConfig, dict[str, Tensor]]:
    """(architecture, model state dict) of a loaded os2d checkpoint; :class:`WeightsError` for another version."""
    if obj.get("version") != CHECKPOINT_VERSION:
        raise WeightsError(f"{source}: unsupported os2d checkpoint version {obj.get('version')}")
    config, state = obj.get("config"), obj.get("model")
    if not isinstance(config, dict) or not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise WeightsError(f"{source}: malformed os2d checkpoint: it needs a 'config' dict and a 'model' dict of "
                           "tensors")
    try:
        return ModelConfig.from_dict(config), state
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{source}: malformed os2d checkpoint config ({e})") from None


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "checkpoint_model_state",
    "is_checkpoint",
    "save_checkpoint",
]
