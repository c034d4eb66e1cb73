"""Training checkpoints: everything needed to continue a run exactly, in the os2d checkpoint format.

A training checkpoint is an os2d model checkpoint (``{"format": "os2d-checkpoint", "version", "config",
"model"}``, see :mod:`os2d.weights`) with extra keys, so ``os2d.weights.load_model(path)`` and
``Detector.from_weights(path)`` read it as a model too:

==================  ====================================================================================
``train_config``    the resolved :class:`~os2d.train.config.TrainConfig` as a plain dict
``step``            optimizer updates done
``optimizer``       ``optimizer.state_dict()`` (momentum buffers ...)
``scheduler``       ``{"kind", "lr"}`` (the schedule is a function of ``step``)
``grad_scaler``     fp16 GradScaler state or None
``rng``             per rank: python / numpy (global) / torch / CUDA generator states
``sampler``         data position ``{"step", "epoch", "cursor", "images_per_step"}``
``best``            ``{"metric", "value", "step"}`` of the best evaluation so far
``mined``           hard patches from the last mining round (list of dicts), or []
==================  ====================================================================================

Files are written atomically (temporary file + rename), so a crash never leaves a truncated checkpoint.
Everything is stored as tensors and plain Python values, so files load with ``weights_only=True``.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from os2d.model.os2d import Os2dModel
from os2d.weights import CHECKPOINT_FORMAT, WeightsError, read_weights_file, save_checkpoint

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.pt$")
BEST_MODEL = "best.pt"
FINAL_MODEL = "final.pt"
TRAIN_KEYS = ("train_config", "step", "optimizer", "rng", "sampler")


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the step checkpoints of a run, oldest first."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return sorted(found)


def resolve_resume(path: str | Path) -> Path:
    """A checkpoint file as given, or the newest step checkpoint of a run directory."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        run_dir = path.parent if path.name == CHECKPOINT_DIR else path  # "run/" or "run/checkpoints/"
        found = list_checkpoints(run_dir)
        if not found:
            raise FileNotFoundError(f"no checkpoints (checkpoints/step_*.pt) in run directory {path}")
        return found[-1][1]
    raise FileNotFoundError(f"resume: no such checkpoint file or run directory: {path}")


def prune_checkpoints(output_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest step checkpoints (keep=0: delete none); returns the deleted paths."""
    if keep <= 0:
        return []
    old = [p for _, p in list_checkpoints(output_dir)[:-keep]]
    for p in old:
        p.unlink(missing_ok=True)
    return old


# ------------------------------------------------------------------------------------------------ RNG state


def capture_rng_state() -> dict[str, Any]:
    """Global generator states (python, numpy legacy, torch CPU and CUDA) as tensors / plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------ save / load


def save_training_checkpoint(path: str | Path, model: Os2dModel, **train_state: Any) -> None:
    """Atomically write a model checkpoint with the training state (keys in the module docstring)."""
    missing = [k for k in TRAIN_KEYS if k not in train_state]
    if missing:
        raise ValueError(f"training checkpoint is missing {missing}")
    save_checkpoint(path, model, **train_state)


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint (CPU tensors, ``weights_only``); clear error for a model-only file."""
    obj = read_weights_file(path)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path} is not an os2d checkpoint")
    missing = [k for k in TRAIN_KEYS if k not in obj]
    if missing:
        raise WeightsError(f"{path} is a model file without training state ({', '.join(missing)} missing); "
                           f"to start a new run from it use init.weights={path}")
    return obj


__all__ = [
    "BEST_MODEL",
    "CHECKPOINT_DIR",
    "FINAL_MODEL",
    "capture_rng_state",
    "checkpoint_path",
    "list_checkpoints",
    "load_training_checkpoint",
    "prune_checkpoints",
    "resolve_resume",
    "restore_rng_state",
    "save_training_checkpoint",
]
