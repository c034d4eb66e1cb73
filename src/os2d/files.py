"""Atomic file writes: a crash or interrupt mid-write never leaves a truncated file behind."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through ``write(file)`` into a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_torch_save(path: str | Path, payload: Any) -> None:
    atomic_write(path, lambda f: torch.save(payload, f))


def atomic_json_dump(path: str | Path, payload: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(payload, indent=1).encode("utf-8")))
