"""os2d: one-shot object detection (OS2D, Osokin et al., ECCV 2020).

>>> from os2d import Detector
>>> det = Detector.from_weights("default")
>>> det.add_class("cereal", "cereal_box.jpg")
>>> dets = det.detect("shelf.jpg")

The names below are imported on first use, so ``import os2d`` (and ``os2d --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from os2d.config import InferenceConfig, ModelConfig
    from os2d.detector import Detector
    from os2d.results import Detections

__version__ = "0.1.0"
__all__ = ["Detector", "Detections", "InferenceConfig", "ModelConfig", "__version__"]

_LAZY = {"Detector": "os2d.detector", "Detections": "os2d.results", "InferenceConfig": "os2d.config",
         "ModelConfig": "os2d.config"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'os2d' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
