"""The CoAE weights file: the head (float16) and its config, plus the class-agnostic detector whose proposals it
ranks (its head, head config and proposal settings), so one file is the whole method.

``{"kind": "os2d-coae", "version", "trunk", "trunk_fingerprint", "head", "head_config", "proposal_head",
"proposal_head_config", "num_proposals", "proposal_nms_iou"}``; loaded with ``map_location="cpu"`` and strict keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from os2d.agnostic.config import HeadConfig, section_from_dict, section_to_dict
from os2d.agnostic.head import ObjectnessHead, build_head
from os2d.coae.config import CoaeHeadConfig
from os2d.coae.head import CoaeHead, build_coae_head
from os2d.files import atomic_torch_save

COAE_KIND = "os2d-coae"
VERSION = 1


@dataclass
class CoaeWeights:
    """A loaded CoAE weights file (modules in float32, eval mode)."""

    head: CoaeHead
    head_config: CoaeHeadConfig
    proposal_head: ObjectnessHead
    proposal_head_config: HeadConfig
    num_proposals: int
    proposal_nms_iou: float
    trunk: str  # the os2d weights whose trunk both heads were trained on
    trunk_fingerprint: str | None


def save_coae(path: str | Path, weights: CoaeWeights) -> None:
    """Write the inference-only weights (float16 tensors)."""
    atomic_torch_save(path, {
        "kind": COAE_KIND, "version": VERSION, "trunk": weights.trunk, "trunk_fingerprint": weights.trunk_fingerprint,
        "head": {k: v.half() for k, v in weights.head.state_dict().items()},
        "head_config": section_to_dict(weights.head_config),
        "proposal_head": {k: v.half() for k, v in weights.proposal_head.state_dict().items()},
        "proposal_head_config": section_to_dict(weights.proposal_head_config),
        "num_proposals": weights.num_proposals, "proposal_nms_iou": weights.proposal_nms_iou,
    })


def load_coae(path: str | Path) -> CoaeWeights:
    """Read :func:`save_coae`'s file.

    Raises:
        ValueError: not a CoAE weights file, or keys that do not match the heads.
    """
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("kind") != COAE_KIND:
        raise ValueError(f"{path}: not an os2d CoAE weights file")
    head_config = section_from_dict(CoaeHeadConfig, data["head_config"])
    head = build_coae_head(head_config)
    head.load_state_dict({k: v.float() for k, v in data["head"].items()})  # strict
    proposal_config = section_from_dict(HeadConfig, data["proposal_head_config"])
    proposal_head = build_head(proposal_config)
    proposal_head.load_state_dict({k: v.float() for k, v in data["proposal_head"].items()})
    return CoaeWeights(head.eval(), head_config, proposal_head.eval(), proposal_config, int(data["num_proposals"]),
                       float(data["proposal_nms_iou"]), str(data["trunk"]), data.get("trunk_fingerprint"))


__all__ = ["COAE_KIND", "VERSION", "CoaeWeights", "load_coae", "save_coae"]
