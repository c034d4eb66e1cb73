"""A pretrained TransformNet on its own: the file ``os2d pretrain-transform`` writes and training loads as init
(``init.transform``).

Format (a dict, loadable with ``torch.load(..., weights_only=True)``)::

    {"kind": "os2d-transform-net", "version": 1,
     "backbone": "efficientnet_lite0",      # the features it was trained on
     "num_transform_params": 6, "invert_transform": True, "class_grid_size": 15,
     "state_dict": model.transform_net.state_dict(),
     "info": {...}}                          # free-form training summary (numbers and strings)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from os2d.files import atomic_torch_save
from os2d.model.os2d import Os2dModel
from os2d.weights import WeightsError, load_strict, read_weights_file

logger = logging.getLogger(__name__)

TRANSFORM_KIND = "os2d-transform-net"
TRANSFORM_VERSION = 1


def save_transform_net(path: str | Path, model: Os2dModel, info: dict[str, Any] | None = None) -> None:
    """Write ``model.transform_net`` with the metadata that says which models it fits (atomic write)."""
    cfg = model.config
    atomic_torch_save(path, {
        "kind": TRANSFORM_KIND, "version": TRANSFORM_VERSION, "backbone": cfg.backbone,
        "num_transform_params": cfg.num_transform_params, "invert_transform": cfg.invert_transform,
        "class_grid_size": cfg.class_grid_size,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.transform_net.state_dict().items()},
        "info": dict(info or {}),
    })


def read_transform_file(path: str | Path) -> dict[str, Any]:
    """Read and validate a TransformNet file; ``WeightsError`` names what is wrong."""
    obj = read_weights_file(path)
    if not isinstance(obj, dict) or obj.get("kind") != TRANSFORM_KIND:
        kind = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
        raise WeightsError(f"{path} is not an os2d TransformNet file (kind {kind!r}, expected {TRANSFORM_KIND!r})")
    if obj.get("version") != TRANSFORM_VERSION:
        raise WeightsError(f"{path}: unsupported TransformNet file version {obj.get('version')}")
    for key in ("backbone", "num_transform_params", "invert_transform", "class_grid_size", "state_dict"):
        if key not in obj:
            raise WeightsError(f"{path}: missing key {key!r}")
    return obj


def load_transform_net(path: str | Path, model: Os2dModel, *, allow_other_backbone: bool = False) -> dict[str, Any]:
    """Load a TransformNet file into ``model.transform_net`` (strict keys and shapes).

    The parameterisation (number of parameters, inversion, grid size) must match the model's config; a
    different backbone is refused unless ``allow_other_backbone`` (the net reads correlations, whose statistics
    depend on the features it was trained on). Returns the file's ``info`` dict.
    """
    obj = read_transform_file(path)
    cfg = model.config
    mine = (cfg.num_transform_params, cfg.invert_transform, cfg.class_grid_size)
    theirs = (obj["num_transform_params"], obj["invert_transform"], obj["class_grid_size"])
    if mine != theirs:
        raise WeightsError(f"{path}: TransformNet for (params, invert, grid) = {theirs}, the model has {mine}")
    if obj["backbone"] != cfg.backbone:
        if not allow_other_backbone:
            raise WeightsError(f"{path}: TransformNet trained on {obj['backbone']} features, the model uses "
                               f"{cfg.backbone} (pass allow_other_backbone=True to load anyway)")
        logger.warning("%s: TransformNet trained on %s features loaded into a %s model", path, obj["backbone"],
                       cfg.backbone)
    load_strict(model.transform_net, obj["state_dict"], str(path))
    return dict(obj.get("info") or {})
