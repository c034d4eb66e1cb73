"""THE one reader of weights files: ``torch.load(map_location="cpu", weights_only=True)`` with one allow-list.

``weights_only`` unpickling builds tensors and plain containers only; a tampered file that would run code is
refused before anything runs. Besides torch's defaults the allow-list admits the data constructors found in
published checkpoints of other projects (weakalign saves its ``argparse.Namespace`` arguments and numpy loss
arrays next to ``state_dict``): no callable that could run code.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from os2d.weights.errors import WeightsError

# Every file torch.save writes starts with one of these: a zip archive (PyTorch >= 1.6) or a pickle stream
# (protocol >= 2 starts with 0x80).
TORCH_MAGIC = (b"PK", b"\x80")

_NUMPY_DTYPES = ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "Int16DType",
                 "Int8DType", "UInt8DType", "BoolDType")


def safe_globals() -> list[Any]:
    """The allow-list beyond torch's defaults: ``argparse.Namespace`` and numpy arrays, dtypes and scalars
    (under their numpy >= 2 and numpy 1 module names)."""
    multiarray = (getattr(np, "_core", None) or np.core).multiarray
    items: list[Any] = [argparse.Namespace, np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar,
                        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
                        (multiarray.scalar, "numpy.core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)
    items += [getattr(dtypes, name) for name in _NUMPY_DTYPES if hasattr(dtypes, name)]
    return items


def _refusal(text: str) -> str | None:
    """What a ``weights_only`` refusal names (``posix.system``, ...), or None if ``text`` is not a refusal."""
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found is not None:
        return found.group(1)
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    return found.group(1).strip() if found is not None else None


def read_weights_file(path: str | Path) -> Any:
    """Read a weights file (any format os2d knows) safely on the CPU.

    Raises:
        WeightsError: one line: the file is missing, is not a PyTorch file, needs unsafe pickled objects
            (code), or is corrupt/truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    with path.open("rb") as f:
        magic = f.read(4)
    if not magic.startswith(TORCH_MAGIC):
        raise WeightsError(f"{path} is not a PyTorch weights file (it starts with {magic!r})")
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling fails with many types; each means "not loadable"
        # torch's own text is several lines advising weights_only=False: never an option here.
        refused = _refusal(str(e))
        if refused is not None:
            raise WeightsError(f"cannot read {path} as a weights file: it needs unsafe pickled objects "
                               f"({refused}); os2d unpickles only tensors and plain data, never code") from e
        first = re.split(r"\.\s|\n", str(e).strip(), maxsplit=1)[0] or type(e).__name__
        raise WeightsError(f"cannot read {path} as a weights file: corrupt or truncated ({first})") from e


__all__ = ["TORCH_MAGIC", "read_weights_file", "safe_globals"]
