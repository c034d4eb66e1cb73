"""The detector weights file of the detector + retrieval baseline: head (float16), head and retrieval configs,
the fitted whitening, the name of the trunk's weights.

``{"kind": "os2d-agnostic-detector", "version", "trunk", "trunk_fingerprint", "head", "head_config",
"retrieval_config", "whitening"}``; loaded with ``map_location="cpu"`` and strict keys. ``trunk_fingerprint`` is
:func:`os2d.weights.fingerprint.model_fingerprint` of the model the head was trained on (the head is only
meaningful on that trunk's features).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from os2d.agnostic.config import HeadConfig, RetrievalConfig, section_from_dict, section_to_dict
from os2d.agnostic.head import ObjectnessHead, build_head
from os2d.agnostic.retrieval import Whitening
from os2d.files import atomic_torch_save
from os2d.weights.registry import ASSETS_DIR

DETECTOR_KIND = "os2d-agnostic-detector"
DEFAULT_DETECTOR = ASSETS_DIR / "agnostic_detector_lite0.pt"  # trained on the default model's trunk
VERSION = 1


def save_detector(path: str | Path, head: ObjectnessHead, head_config: HeadConfig, retrieval: RetrievalConfig,
                  whitening: Whitening | None, *, trunk: str, trunk_fingerprint: str | None = None) -> None:
    """Write the inference-only detector weights (float16)."""
    atomic_torch_save(path, {
        "kind": DETECTOR_KIND, "version": VERSION, "trunk": trunk, "trunk_fingerprint": trunk_fingerprint,
        "head": {k: v.half() for k, v in head.state_dict().items()},
        "head_config": section_to_dict(head_config), "retrieval_config": section_to_dict(retrieval),
        "whitening": None if whitening is None else {k: v.half() for k, v in whitening.state_dict().items()},
    })


@dataclass
class DetectorWeights:
    """A loaded detector weights file."""

    head: ObjectnessHead  # float32, eval mode
    head_config: HeadConfig
    retrieval_config: RetrievalConfig
    whitening: Whitening | None
    trunk: str  # the os2d weights whose trunk the head was trained on
    trunk_fingerprint: str | None  # model_fingerprint of that model (None: not recorded)


def load_detector(path: str | Path) -> DetectorWeights:
    """Read :func:`save_detector`'s file.

    Raises:
        ValueError: not a detector weights file, or keys that do not match the head.
    """
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("kind") != DETECTOR_KIND:
        raise ValueError(f"{path}: not an os2d class-agnostic detector file")
    head_config = section_from_dict(HeadConfig, data["head_config"])
    head = build_head(head_config)
    head.load_state_dict({k: v.float() for k, v in data["head"].items()})  # strict
    white = None if data["whitening"] is None else Whitening.from_state_dict(data["whitening"])
    return DetectorWeights(head.eval(), head_config, section_from_dict(RetrievalConfig, data["retrieval_config"]),
                           white, str(data["trunk"]), data.get("trunk_fingerprint"))


__all__ = ["DEFAULT_DETECTOR", "DETECTOR_KIND", "VERSION", "DetectorWeights", "load_detector", "save_detector"]
