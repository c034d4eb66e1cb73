"""Atomic file writes: a crash or interrupt mid-write never leaves a truncated file behind."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

# The temporary file's name is ".NAME.XXXXXXXX.tmp" with NAME cut to this many characters, so that a target
# name near the file-system limit (255 bytes) still leaves room for it.
_TMP_NAME_CHARS = 100


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new, exclusively created file beside the target. Mode 0o666 goes through the umask, as for any new
    file (``tempfile.mkstemp`` would make it 0o600, and the rename would keep that)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = folder / f".{name[:_TMP_NAME_CHARS]}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {folder}")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through ``write(file)`` into a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent, path.name)
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
