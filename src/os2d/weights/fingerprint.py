"""A model's identity: a short hash of its config and tensors (galleries and exports remember which model made
them, so kernels of other weights are never mixed in)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable

import torch
from torch import Tensor

from os2d.model.os2d import Os2dModel

_MEMO = "_os2d_fingerprint"  # (state key, digest) kept on the model


def _state_key(config_json: str, state: dict[str, Tensor]) -> Hashable | None:
    """What changes whenever the weights do: each tensor's storage address and in-place version counter
    (bumped by ``copy_``/``load_state_dict``, optimizer steps and BatchNorm statistics), plus the config.

    None for inference-mode tensors, which have no version counter (the hash is then computed every time).
    """
    try:
        return config_json, tuple((k, v.data_ptr(), v._version, v.dtype, tuple(v.shape)) for k, v in state.items())
    except RuntimeError:
        return None


def model_fingerprint(model: Os2dModel) -> str:
    """First 16 hex digits of the sha256 of the config and all tensors.

    Memoised on the model and recomputed when any tensor changes (in place or replaced): checking costs ~1 ms
    on the default model, hashing ~15 ms.
    """
    config_json = json.dumps(model.config.to_dict(), sort_keys=True)
    state = model.state_dict()
    key = _state_key(config_json, state)
    memo = getattr(model, _MEMO, None)
    if key is not None and memo is not None and memo[0] == key:
        return memo[1]
    h = hashlib.sha256(config_json.encode())
    for k, v in state.items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    digest = h.hexdigest()[:16]
    object.__setattr__(model, _MEMO, (key, digest))  # a plain attribute, not a registered buffer
    return digest


__all__ = ["model_fingerprint"]
