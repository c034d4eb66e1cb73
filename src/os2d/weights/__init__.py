"""Weights: every named weight (:mod:`.registry`), one safe reader (:mod:`.files`), foreign formats
(:mod:`.convert`), our checkpoint format (:mod:`.checkpoint`), models from names or files (:mod:`.loading`),
downloads (:mod:`.download`) and model identity (:mod:`.fingerprint`).

Every file is read with ``map_location="cpu"`` and ``weights_only=True`` (a malicious pickle cannot run code),
and every foreign format is converted by an explicit key remapping that fails loudly on any mismatch.
Dependencies flow one way: errors <- files <- checkpoint <- convert <- loading, registry <- loading/download;
no module of this package imports the package itself, and ``os2d.model`` never imports it.
"""

from __future__ import annotations

from os2d.weights.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_checkpoint
from os2d.weights.convert import load_strict
from os2d.weights.errors import WeightsError
from os2d.weights.files import read_weights_file
from os2d.weights.fingerprint import model_fingerprint
from os2d.weights.loading import load_model, model_from_file
from os2d.weights.registry import DEFAULT_WEIGHTS, REGISTRY, packaged_weights_path

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "DEFAULT_WEIGHTS",
    "REGISTRY",
    "WeightsError",
    "load_model",
    "load_strict",
    "model_fingerprint",
    "model_from_file",
    "packaged_weights_path",
    "read_weights_file",
    "save_checkpoint",
]
